"""Checkpoints of sharded, multi-process state with orbax-checkpoint (in grd.checkpoint).

:func:`grd.checkpoint.save_checkpoint` writes ``np.asarray(leaf)`` of every leaf to one file:
that needs every leaf on the writing process, which fails for an array split over processes
(a sharded batch statistic, model-parallel parameters), and on many hosts every process would
write the same file. orbax-checkpoint, the JAX ecosystem's standard, writes each process's
addressable shards in parallel (one OCDBT store per process), commits a step only when every
process has finished (a temporary directory renamed by process 0, then ``commit_success``), and
restores each shard straight onto the devices that hold it. A run killed at any moment resumes
from the last committed step.

The format is a directory of numbered steps (``directory/<step>/``), distinct from the
single-file ``.npz`` format of :func:`grd.checkpoint.save_checkpoint`, which is unchanged.
orbax is imported on first use (its import takes seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp


def _manager(directory, *, max_to_keep: int | None, async_save: bool):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,  # the torn step a kill may leave behind
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _check_global(tree):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not isinstance(leaf, jax.Array):
            raise TypeError(
                f"leaf {jax.tree_util.keystr(path)} of `tree` is a {type(leaf).__name__}, not a "
                "jax.Array; place the state on the mesh first (grd.sharding.replicate)."
            )
        if jax.process_count() > 1 and len(leaf.sharding.device_set) == 1:
            raise ValueError(
                f"leaf {jax.tree_util.keystr(path)} of `tree` lives on one device of one "
                "process; on several processes every leaf must be a global array: place it "
                "with grd.sharding.replicate(tree, mesh) (or a NamedSharding over the mesh)."
            )


def _abstract(like):
    def one(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))

    return jax.tree_util.tree_map(one, like)


def _save(manager, tree, step, metadata):
    import orbax.checkpoint as ocp

    _check_global(tree)
    manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), metadata=ocp.args.JsonSave(metadata or {})
        ),
    )


def _restore(manager, like, step):
    import orbax.checkpoint as ocp

    out = manager.restore(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like)), metadata=ocp.args.JsonRestore()
        ),
    )
    return out["state"], int(step), dict(out["metadata"] or {})


def save_sharded_checkpoint(
    directory, tree, *, step: int, metadata: dict | None = None, max_to_keep: int | None = 2
) -> Path:
    """Write ``tree`` (a pytree of global ``jax.Array``s, sharded or replicated) as step ``step``.

    Every process must call it with its part of the same global arrays; each writes only the
    shards it holds (with replicas written once). Returns when the step is committed, so a
    run killed afterwards resumes from it. Older steps beyond ``max_to_keep`` are deleted.

    Args:
      directory: the checkpoint directory (created; shared by all processes, e.g. on NFS or
        a ``gs://`` bucket).
      tree: the state: parameters, optimizer state, PRNG keys, per-example statistics.
      step: the step number (a subdirectory name).
      metadata: a JSON-serialisable dict stored beside the state.
      max_to_keep: how many steps to keep (``None``: all).

    Returns:
      The path of the committed step.
    """
    manager = _manager(directory, max_to_keep=max_to_keep, async_save=False)
    try:
        _save(manager, tree, step, metadata)
        manager.wait_until_finished()
    finally:
        manager.close()
    return Path(directory).absolute() / str(int(step))


def latest_sharded_step(directory) -> int | None:
    """The last committed step in ``directory`` (``None`` if there is none)."""
    if not Path(directory).exists():
        return None
    manager = _manager(directory, max_to_keep=None, async_save=False)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def load_sharded_checkpoint(directory, like, *, step: int | None = None):
    """Read a step written by :func:`save_sharded_checkpoint` into the structure of ``like``.

    Each leaf is restored with the shape, dtype and sharding of the corresponding leaf of
    ``like`` (a pytree of ``jax.Array`` or :class:`jax.ShapeDtypeStruct` with a sharding), so
    every process reads only its own shards. Every process must call it.

    Returns:
      ``(tree, step, metadata)``; ``step`` defaults to the latest committed step. Raises
      ``FileNotFoundError`` if there is none.
    """
    step = latest_sharded_step(directory) if step is None else step
    if step is None:
        raise FileNotFoundError(f"no committed checkpoint in {directory}.")
    manager = _manager(directory, max_to_keep=None, async_save=False)
    try:
        return _restore(manager, like, step)
    finally:
        manager.close()


def run_checkpointed_sharded(
    step_fn: Callable,
    state,
    num_steps: int,
    *,
    directory,
    every: int = 100,
    callback=None,
    max_to_keep: int | None = 2,
    async_save: bool = True,
):
    """:func:`grd.checkpoint.run_checkpointed` for sharded, multi-process state (orbax).

    Runs ``state = step_fn(state, step)`` for ``step`` in ``[0, num_steps)``, saving the state
    as step ``s`` of ``directory`` every ``every`` steps and at the end; if ``directory`` holds
    a committed step when called, the run resumes from the latest one. The state is restored
    bit for bit with its original shardings, so with a deterministic ``step_fn`` (PRNG keys in
    the state) a run killed with SIGKILL and restarted on the same mesh ends bit for bit where
    an uninterrupted one does. Every process runs the same loop.

    Args:
      step_fn: ``(state, step) -> state``; jit it (``step`` arrives as an int32 array).
      state: the initial state, a pytree of global ``jax.Array``s (template when resuming).
      num_steps: total number of steps.
      directory: the checkpoint directory, shared by all processes.
      every: steps between checkpoints (the work lost to a kill is at most ``every`` steps).
      callback: optional ``callback(state, step)`` after each save is started.
      max_to_keep: committed steps kept on disk.
      async_save: write in a background thread while training continues (orbax's default);
        the next save, and the end of the run, wait for it to commit.

    Returns:
      The final state.
    """
    if every < 1:
        raise ValueError(f"`every` must be ≥ 1; got {every}.")
    manager = _manager(directory, max_to_keep=max_to_keep, async_save=async_save)
    try:
        start = manager.latest_step() or 0
        if start:
            state, start, _ = _restore(manager, state, start)
        step = start
        while step < num_steps:
            stop = min(step + every, num_steps)
            for i in range(step, stop):
                state = step_fn(state, jnp.asarray(i, jnp.int32))
            step = stop
            _save(manager, state, step, None)
            if callback is not None:
                callback(state, step)
        manager.wait_until_finished()
    finally:
        manager.close()
    return state
