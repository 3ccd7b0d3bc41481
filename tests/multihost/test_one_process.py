"""The multi-host helpers and the orbax checkpoints on one process (cheap; no launch).

On one process every helper must reduce to its single-process meaning; the two-process
behaviour is tested in test_multihost.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grd import sharding


def test_multihost_helpers_reduce_to_one_process():
    """On one process: all rows are local, global_batch is shard_batch, gather is np.asarray."""
    mesh = sharding.data_mesh(1)
    assert sharding.process_rows(6, mesh) == slice(0, 6)
    batch = {"x": jnp.arange(12.0).reshape(6, 2), "y": jnp.arange(6)}
    local = sharding.process_local_batch(batch, mesh)
    g = sharding.global_batch(local, mesh)
    assert g["x"].sharding == sharding.batch_sharding(mesh) and g["x"].shape == (6, 2)
    out = sharding.gather(g)
    assert (
        isinstance(out["x"], np.ndarray) and out["x"].tobytes() == np.asarray(batch["x"]).tobytes()
    )
    key = sharding.replicate(jax.random.key(1), mesh)  # typed keys go through their key data
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(1))
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(1)))


def test_sharded_checkpoint_on_one_process(tmp_path):
    """The orbax path on one device: bits, step, metadata, latest step, and its errors.
    (Two processes: tests/multihost.)"""
    from grd.checkpoint import (
        latest_sharded_step,
        load_sharded_checkpoint,
        run_checkpointed_sharded,
        save_sharded_checkpoint,
    )

    mesh = sharding.data_mesh(1)
    tree = sharding.replicate({"w": jnp.arange(6.0).reshape(2, 3), "k": jax.random.key(3)}, mesh)
    assert latest_sharded_step(tmp_path / "c") is None
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        load_sharded_checkpoint(tmp_path / "c", tree)
    save_sharded_checkpoint(tmp_path / "c", tree, step=3, metadata={"note": "x"})
    back, step, meta = load_sharded_checkpoint(tmp_path / "c", tree)
    assert step == 3 and meta == {"note": "x"} and latest_sharded_step(tmp_path / "c") == 3
    assert back["w"].tobytes() == tree["w"].tobytes()
    assert jax.random.key_data(back["k"]).tobytes() == jax.random.key_data(tree["k"]).tobytes()
    with pytest.raises(TypeError, match="not a jax.Array"):
        save_sharded_checkpoint(tmp_path / "d", {"w": np.ones(2)}, step=0)
    with pytest.raises(ValueError, match="`every` must be"):
        run_checkpointed_sharded(lambda s, i: s, tree, 2, directory=tmp_path / "e", every=0)


@pytest.mark.slow  # ≈ 17 s of CPU: three segmented integrations (compiled per segment) + orbax
def test_integrate_checkpointed_sharded_on_one_process(tmp_path):
    """integrate_checkpointed(sharded=True): orbax steps, one per segment; a run stopped
    after segment 1 of 2 resumes and ends bit for bit where an uninterrupted run does.
    (Two processes, killed with SIGKILL: tests/multihost, slow.)"""
    import diffrax
    from helpers import tiny_mlp_problem

    from grd.checkpoint import integrate_checkpointed, latest_sharded_step

    loss_fn, params, batch = tiny_mlp_problem(n=6)
    kw = dict(flow="gd", t1=0.2, segments=2, sharded=True, solver=diffrax.Euler(), dt0=0.05)
    kw["stepsize_controller"] = diffrax.ConstantStepSize()
    full, ts = integrate_checkpointed(loss_fn, params, batch, path=tmp_path / "full", **kw)
    assert latest_sharded_step(tmp_path / "full") == 2 and ts.tolist() == [0.1, 0.2]

    class Stop(Exception):
        pass

    def stop(y, segment):
        raise Stop

    with pytest.raises(Stop):
        integrate_checkpointed(loss_fn, params, batch, path=tmp_path / "cut", callback=stop, **kw)
    assert latest_sharded_step(tmp_path / "cut") == 1
    resumed, _ = integrate_checkpointed(loss_fn, params, batch, path=tmp_path / "cut", **kw)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
