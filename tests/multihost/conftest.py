"""Launch a function of two JAX processes on localhost, as a cluster would (issue 18).

:func:`run_two_processes` starts ``_worker.py`` twice (process ids 0 and 1) with a free
coordinator port and 2 host-platform CPU devices per process, gloo collectives, and a bound on
the wall time after which both are killed. As ``srun --kill-on-bad-exit`` does, when one
process dies the other is killed too (a survivor would wait forever in its next all-reduce),
and a run where one process printed a traceback but both stay alive (an ``eqx.error_if``
inside a jitted SPMD program) is ended 3–5 s later instead of at the timeout. Both
processes' stdout and stderr are shown in every failure message.
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
sys.path.insert(0, str(WORKER.parent))  # _worker: the checks, also run here as the reference


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-n:]


TRACEBACK = "Traceback (most recent call last)"


def run_two_processes(
    mode, out_dir, *extra, timeout=300.0, expect_failure=False, env=None, grace=5.0,
    meanwhile=None,
):  # fmt: skip
    """Run ``_worker.py MODE <id> <port> OUT_DIR EXTRA...`` as processes 0 and 1.

    Returns the two return codes and ``report(why)``, a failure message holding both
    processes' output. Polls both every 0.1 s and ends the launch early, killing what is
    still running, when

    - one process exits with a non-zero code (the other would block in its next
      collective until the timeout), or
    - one process has printed a Python traceback and is still running ``grace`` seconds
      later: an exception inside a jitted SPMD program (an ``eqx.error_if`` callback raising
      on the device that runs it) is only logged, and every process then waits in a
      collective forever, alive, so no exit code and no JAX heartbeat ever reports it.

    Fails the test (with both outputs) on a timeout, or when the launch ended early or a
    process failed and ``expect_failure`` is false. ``env``: extra environment variables.
    ``meanwhile()``: run here while the two processes run (the one-process reference: on 2
    cores the three overlap where the two processes wait for each other).
    """
    import _worker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "problem.npz").exists():
        _worker.save_problem(out_dir)  # the data every process reads its rows from
    port = free_port()
    env = {**os.environ, **(env or {})}
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
    traced_at, ended_early, polls = None, None, 0
    try:
        if meanwhile is not None:
            meanwhile()
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                ended_early = "a process exited with an error"
                break
            if traced_at is None and polls % 5 == 0:  # every 0.5 s: read the stderr logs
                if any(TRACEBACK in e.read_text(errors="replace") for _, e in logs):
                    traced_at = time.monotonic()
            if traced_at is not None and time.monotonic() > traced_at + grace:
                ended_early = f"a process printed a traceback and was still running {grace} s later"
                break
            if time.monotonic() > deadline:
                kill_all()
                pytest.fail(report(f"the two processes did not finish within {timeout:.0f} s"))
            time.sleep(0.1)
            polls += 1
    finally:
        kill_all()
    codes = [p.returncode for p in procs]
    if not expect_failure and (codes != [0, 0] or ended_early):
        pytest.fail(report(f"{ended_early or 'a process failed'}: return codes {codes}"))
    return codes, report


@pytest.fixture(scope="session")
def two_processes():
    """The launcher :func:`run_two_processes` (a fixture so tests ask for it by name)."""
    return run_two_processes


def load_results(out_dir) -> list[dict]:
    """The JSON results of both processes as dicts of float64 arrays."""
    import json

    import numpy as np

    out = []
    for pid in range(2):
        raw = json.loads((Path(out_dir) / f"result_{pid}.json").read_text())
        out.append({k: np.asarray(v, dtype=np.float64) for k, v in raw.items()})
    return out


def launch_checks(names, out_dir, meanwhile=None):
    """One launch of both processes running the checks ``names`` (one JAX start-up and one
    set of compilations for all of them): the per-process results, the return codes, the
    failure report and the wall time. A list ending with "fail" is expected to stall after
    writing the results of the others, and to be ended by the launcher."""
    expect_failure = names[-1] == "fail"
    t0 = time.perf_counter()
    codes, report = run_two_processes(
        "checks", out_dir, ",".join(names), expect_failure=expect_failure, grace=3.0,
        timeout=600.0, meanwhile=meanwhile,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if expect_failure and not all((Path(out_dir) / f"result_{p}.json").exists() for p in (0, 1)):
        pytest.fail(report(f"the checks before 'fail' did not finish: return codes {codes}"))
    return {
        "results": load_results(out_dir),
        "dir": Path(out_dir),
        "codes": codes,
        "report": report,
        "wall": wall,
    }


@pytest.fixture(scope="session")
def checks_run(tmp_path_factory):
    """The default checks (_worker.DEFAULT_CHECKS), launched once for the session, and their
    one-process reference (``_worker.reference``), computed while the two processes run."""
    import _worker

    ref = {}
    run = launch_checks(
        _worker.DEFAULT_CHECKS,
        tmp_path_factory.mktemp("multihost_checks"),
        meanwhile=lambda: ref.update(_worker.reference(_worker.DEFAULT_CHECKS)),
    )
    return {**run, "reference": ref}
