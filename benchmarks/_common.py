"""Shared helpers of the benchmark scripts: timing, machine description, results files."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timeit(fn, *args, repeat: int = 7, min_time: float = 0.05):
    """Median wall time of ``fn(*args)`` (blocked), after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            jax.block_until_ready(fn(*args))
            n += 1
            if time.perf_counter() - t0 >= min_time:
                break
        times.append((time.perf_counter() - t0) / n)
    times.sort()
    return times[len(times) // 2]


def peak_temp_bytes(jitted, *args) -> int:
    """XLA's compiled temporary-buffer size (bytes) of ``jitted(*args)``: the peak working memory
    beyond arguments and outputs, from ``Compiled.memory_analysis()``."""
    mem = jitted.lower(*args).compile().memory_analysis()
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    versions = ", ".join(
        f"{p} {md.version(p)}"
        for p in ("jax", "jaxlib", "optax", "diffrax", "flax", "lineax", "matfree")
    )
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
        f"devices {jax.devices()}; Python {platform.python_version()}; {versions}"
    )


def write_results(name: str, title: str, body: str) -> Path:
    """Write ``benchmarks/results/<name>.md`` with the machine, date and command."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    path.write_text(
        f"# {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{cmd}`\n\n{body}\n"
    )
    return path
