"""Atomic checkpoints; killed runs resume bit for bit (issue 9)."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grd.checkpoint import load_checkpoint, save_checkpoint

SCRIPT = Path(__file__).with_name("_checkpoint_script.py")


def test_roundtrip_with_keys_and_mismatch(tmp_path):
    tree = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "k": jax.random.key(3),
        "raw": jax.random.PRNGKey(1),
        "n": (jnp.int32(4), None),
    }
    path = save_checkpoint(tmp_path / "c.npz", tree, step=7, metadata={"note": "x"})
    back, step, meta = load_checkpoint(path, tree)
    assert step == 7 and meta == {"note": "x"}
    np.testing.assert_array_equal(back["w"], tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(back["k"]), jax.random.key_data(tree["k"]))
    np.testing.assert_array_equal(back["raw"], tree["raw"])
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind
    with pytest.raises(ValueError, match="`like` expects float64\\(3, 2\\)"):
        load_checkpoint(
            path, {"w": jnp.zeros((3, 2)), "k": tree["k"], "raw": tree["raw"], "n": tree["n"]}
        )


def _run(mode, ckpt, out, kill_after=None):
    args = [sys.executable, str(SCRIPT), mode, str(ckpt), str(out)]
    if kill_after is not None:
        args.append(str(kill_after))
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("mode,kill_after", [("train", 3), ("flow", 2)])
def test_killed_run_resumes_bit_for_bit(tmp_path, mode, kill_after):
    full = _run(mode, tmp_path / "full.npz", tmp_path / "full.npy")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _run(mode, tmp_path / "part.npz", tmp_path / "part.npy", kill_after)
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    assert (tmp_path / "part.npz").exists() and not (tmp_path / "part.npy").exists()
    resumed = _run(mode, tmp_path / "part.npz", tmp_path / "part.npy")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "full.npy"), np.load(tmp_path / "part.npy")
    assert a.tobytes() == b.tobytes()  # bit for bit


def test_on_save_runs_before_each_checkpoint_and_metadata_guards_resume(tmp_path):
    from grd.checkpoint import run_checkpointed

    path = tmp_path / "c.npz"
    seen = []

    def on_save(x, step):  # the checkpoint of `step` is not yet written when this runs
        seen.append((step, float(x), load_checkpoint(path, x)[1] if path.exists() else None))

    out = run_checkpointed(
        lambda x, i: x + 1.0,
        jnp.zeros(()),
        5,
        path=path,
        every=2,
        on_save=on_save,
        metadata={"run": "a"},
    )
    assert float(out) == 5.0
    assert seen == [(2, 2.0, None), (4, 4.0, 2), (5, 5.0, 4)]
    assert load_checkpoint(path, out)[2] == {"run": "a"}
    with pytest.raises(ValueError, match="belongs to another run"):
        run_checkpointed(lambda x, i: x, jnp.zeros(()), 5, path=path, metadata={"run": "b"})
