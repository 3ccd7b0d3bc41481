"""Launch a function of two JAX processes on localhost, as a cluster would (issue 18).

:func:`run_two_processes` starts ``_worker.py`` twice (process ids 0 and 1) with a free
coordinator port and 2 host-platform CPU devices per process, gloo collectives, and a bound on
the wall time after which both are killed. As ``srun --kill-on-bad-exit`` does, when one
process dies the other is killed too (a survivor would wait forever in its next all-reduce).
Both processes' stdout and stderr are shown in every failure message.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

import grd

jax.config.update("jax_enable_x64", True)

WORKER = Path(__file__).with_name("_worker.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-n:]


def run_two_processes(mode, out_dir, *extra, timeout=300.0, expect_killed=False):
    """Run ``_worker.py MODE <id> <port> OUT_DIR EXTRA...`` as processes 0 and 1.

    Returns the two return codes. Fails the test (with both outputs) on a timeout, or when a
    process fails and ``expect_killed`` is false.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    src = str(Path(grd.__file__).resolve().parents[1])  # the grd under test
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    procs, logs = [], []
    for pid in range(2):
        log = (out_dir / f"out_{mode}_{pid}.txt", out_dir / f"err_{mode}_{pid}.txt")
        logs.append(log)
        with open(log[0], "w") as fo, open(log[1], "w") as fe:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), mode, str(pid), str(port), str(out_dir), *extra],
                    stdout=fo,
                    stderr=fe,
                    env=env,
                    start_new_session=True,  # its own process group: killed as a whole
                )
            )

    def kill_all():
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()

    def report(why):
        parts = [why]
        for pid, (o, e) in enumerate(logs):
            parts.append(
                f"--- process {pid} (return code {procs[pid].returncode}) stdout:\n{_tail(o)}"
            )
            parts.append(f"--- process {pid} stderr:\n{_tail(e)}")
        return "\n".join(parts)

    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                kill_all()  # one died: the other would block in its next collective
                break
            if time.monotonic() > deadline:
                kill_all()
                pytest.fail(report(f"the two processes did not finish within {timeout:.0f} s"))
            time.sleep(0.1)
    finally:
        kill_all()
    codes = [p.returncode for p in procs]
    if not expect_killed and codes != [0, 0]:
        pytest.fail(report(f"a process failed: return codes {codes}"))
    return codes, report


@pytest.fixture(scope="session")
def two_processes():
    """The launcher :func:`run_two_processes` (a fixture so tests ask for it by name)."""
    return run_two_processes


@pytest.fixture(scope="session")
def checks_run(tmp_path_factory, two_processes):
    """One launch of both processes running every check; the per-process results."""
    import numpy as np

    out = tmp_path_factory.mktemp("multihost_checks")
    t0 = time.perf_counter()
    two_processes("checks", out)
    wall = time.perf_counter() - t0
    results = [dict(np.load(out / f"result_{pid}.npz")) for pid in range(2)]
    return {"results": results, "dir": out, "wall": wall}
