"""Tests for grd.analysis.recorder: round trip, resume, kill -9 mid-run, torn debris."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest

from grd.analysis import TrajectoryRecorder, load_trajectory

# A deterministic "SGD" run: the state at step k+1 depends only on the state at step k and k,
# so a run resumed from the last recorded snapshot reproduces the uninterrupted run bit for bit.
RUN = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from grd.analysis import TrajectoryRecorder, load_trajectory

    def step_fn(w, k):
        noise = np.random.default_rng([7, k]).standard_normal(w["a"].size + w["b"].size)
        flat = np.concatenate([w["a"].ravel(), w["b"]])
        flat = flat - 0.05 * flat + 0.1 * noise
        return {"a": flat[:6].reshape(2, 3), "b": flat[6:]}

    def run(directory, total, every, chunk, sleep):
        rec = TrajectoryRecorder(directory, every=every, chunk=chunk, record_grads=True)
        w = {"a": np.ones((2, 3)), "b": np.arange(4.0)}  # float64, kept by the store
        start = 0
        if rec.last_step is not None:  # resume: restore the state recorded at last_step
            last = load_trajectory(directory)[-1]
            w = step_fn({"a": last[:6].reshape(2, 3).copy(), "b": last[6:].copy()}, rec.last_step)
            start = rec.last_step + 1
        for k in range(start, total):
            rec.record(k, w, grads={"a": -w["a"], "b": -w["b"]})
            w = step_fn(w, k)
            if sleep:
                time.sleep(sleep)
        rec.close()

    if __name__ == "__main__":
        run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    """
)


def _run(script, directory, total=600, every=3, chunk=7, sleep=0.0, wait=True):
    args = [sys.executable, str(script), str(directory), str(total), str(every), str(chunk)]
    proc = subprocess.Popen([*args, str(sleep)], stderr=subprocess.PIPE)
    if wait:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    return proc


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "run.py"
    path.write_text(RUN)
    return path


def _run_in_process(script, directory, total=600, every=3, chunk=7):
    spec = importlib.util.spec_from_file_location("grd_recorder_run", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run(str(directory), total, every, chunk, 0.0)


def test_kill_and_resume_is_bit_identical(script, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run_in_process(script, ref)
    proc = _run(script, killed, sleep=0.004, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until a few chunks are committed, then SIGKILL
        try:
            n_chunks = len(json.loads((killed / "manifest.json").read_text())["chunks"])
        except (FileNotFoundError, json.JSONDecodeError):  # pragma: no cover - os.replace
            n_chunks = 0
        if n_chunks >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = load_trajectory(killed)
    assert 3 * 7 <= len(partial) < 200  # interrupted well before the end (200 snapshots)
    assert np.all(np.diff(partial.steps) == 3)
    _run_in_process(script, killed)  # resume to the end
    a, b = load_trajectory(ref), load_trajectory(killed)
    assert len(a) == len(b) == 200
    assert a.dtype == b.dtype == np.float64  # no silent cast to float32
    np.testing.assert_array_equal(b.steps, np.arange(0, 600, 3))  # each step exactly once
    assert a.as_array().tobytes() == b.as_array().tobytes()
    ga, gb = load_trajectory(ref, "grads"), load_trajectory(killed, "grads")
    assert ga.as_array().tobytes() == gb.as_array().tobytes()


def test_round_trip_lazy_reader(tmp_path):
    rng = np.random.default_rng(0)
    snaps = [{"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)} for _ in range(23)]
    with TrajectoryRecorder(tmp_path, every=2, chunk=5) as rec:
        for k, s in enumerate(snaps):
            assert rec.record(k, s) == (k % 2 == 0)
        assert rec.last_step == 18  # 2 full chunks on disk, 2 snapshots buffered
        assert len(rec) == 12
    traj = load_trajectory(tmp_path)
    assert len(traj) == 12 and traj.d == 8
    np.testing.assert_array_equal(traj.steps, np.arange(0, 23, 2))
    # ravel_pytree order: dict keys sorted, so b then w
    expect = np.stack([np.concatenate([s["b"], s["w"].ravel()]) for s in snaps[::2]])
    np.testing.assert_array_equal(traj.as_array(), expect)
    np.testing.assert_array_equal(traj[5], expect[5])
    np.testing.assert_array_equal(traj[-1], expect[-1])
    np.testing.assert_array_equal(traj[3:9:2], expect[3:9:2])
    assert isinstance(traj._chunk(0), np.memmap)
    np.testing.assert_array_equal(np.stack(list(traj)), expect)
    with pytest.raises(IndexError):
        traj[12]


def test_resume_appends_and_checks(tmp_path):
    with TrajectoryRecorder(tmp_path, every=1, chunk=3) as rec:
        for k in range(5):
            rec.record(k, jnp.full(4, float(k), jnp.float32))
    rec = TrajectoryRecorder(tmp_path, every=1, chunk=3)
    assert rec.last_step == 4
    with pytest.raises(ValueError, match="step"):
        rec.record(4, jnp.zeros(4, jnp.float32))
    with pytest.raises(ValueError, match="params.*d = 4"):
        rec.record(5, jnp.zeros(5, jnp.float32))
    rec.record(5, jnp.full(4, 5.0, jnp.float32))
    with pytest.raises(RuntimeError, match="another TrajectoryRecorder"):
        TrajectoryRecorder(tmp_path, every=1, chunk=3)
    rec.close()
    traj = load_trajectory(tmp_path)
    assert traj.dtype == np.float32
    np.testing.assert_array_equal(traj.as_array()[:, 0], np.arange(6.0))
    with pytest.raises(ValueError, match="every"):
        TrajectoryRecorder(tmp_path, every=2, chunk=3)
    with pytest.raises(ValueError, match="field"):
        load_trajectory(tmp_path, "grads")


def test_debris_of_a_killed_writer_is_ignored(tmp_path):
    with TrajectoryRecorder(tmp_path, every=1, chunk=2) as rec:
        for k in range(4):
            rec.record(k, np.array([k, k], float))
    # A writer killed after renaming chunk 2 but before the manifest, and one mid-write.
    np.save(tmp_path / "params-000002.npy", np.full((2, 2), -1.0))
    np.save(tmp_path / "steps-000002.npy", np.array([4, 5]))
    (tmp_path / ".params-000003.npy.tmp-999").write_bytes(b"torn")
    traj = load_trajectory(tmp_path)
    assert len(traj) == 4 and traj.steps[-1] == 3
    with TrajectoryRecorder(tmp_path, every=1, chunk=2) as rec:
        assert rec.last_step == 3
        rec.record(4, np.array([4.0, 4.0]))
    assert not (tmp_path / ".params-000003.npy.tmp-999").exists()
    traj = load_trajectory(tmp_path)
    np.testing.assert_array_equal(traj.steps, np.arange(5))
    np.testing.assert_array_equal(traj.as_array()[:, 0], np.arange(5.0))


def test_bad_recorder_arguments(tmp_path):
    with pytest.raises(ValueError, match="every"):
        TrajectoryRecorder(tmp_path / "a", every=0)
    with pytest.raises(ValueError, match="chunk"):
        TrajectoryRecorder(tmp_path / "b", chunk=0)
    with pytest.raises(ValueError, match="manifest"):
        load_trajectory(tmp_path)
    with TrajectoryRecorder(tmp_path / "c", record_grads=True) as rec:
        with pytest.raises(ValueError, match="grads"):
            rec.record(0, np.ones(2))
