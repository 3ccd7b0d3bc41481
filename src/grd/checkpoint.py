"""Atomic checkpoints for long runs: training loops and flow integrations that resume bit for bit.

A checkpoint is an ``.npz`` file of the pytree's leaves plus a JSON record (step, metadata),
written to a temporary file in the same directory, flushed with ``fsync`` and moved into place
with :func:`os.replace` (atomic on POSIX): a run killed at any moment leaves either the previous
checkpoint or the new one, never a torn file. Loading needs a template pytree (as orbax does),
so no pickle is involved and a checkpoint file cannot execute code.

Resuming is exact: the state (parameters, optimizer state, PRNG keys, diffrax solver and
step-size-controller states) is restored bit for bit and the same compiled steps run again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ._orbax import (  # noqa: F401  (sharded, multi-process state: orbax-checkpoint)
    latest_sharded_step as latest_sharded_step,
    load_sharded_checkpoint as load_sharded_checkpoint,
    run_checkpointed_sharded as run_checkpointed_sharded,
    save_sharded_checkpoint as save_sharded_checkpoint,
)

_META_KEY = "__grd_meta__"


def save_checkpoint(path, tree, *, step: int, metadata: dict | None = None) -> Path:
    """Atomically write ``tree`` (any pytree of arrays) and ``step`` to ``path`` (``.npz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {}
    for i, leaf in enumerate(leaves):
        if jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{i:05d}"] = np.asarray(leaf)
    meta = {"step": int(step), "num_leaves": len(leaves), "metadata": metadata or {}}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path, like):
    """Read a checkpoint written by :func:`save_checkpoint` into the structure of ``like``.

    Returns:
      ``(tree, step, metadata)``. Raises ``ValueError`` if the file does not match ``like``
      (number of leaves, shapes or dtypes).
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data[_META_KEY]).decode())
        leaves, treedef = jax.tree_util.tree_flatten(like)
        if meta["num_leaves"] != len(leaves):
            raise ValueError(
                f"checkpoint {path} has {meta['num_leaves']} leaves; `like` has {len(leaves)}."
            )
        out = []
        for i, ref in enumerate(leaves):
            arr = data[f"leaf_{i:05d}"]
            if jnp.issubdtype(jnp.result_type(ref), jax.dtypes.prng_key):
                out.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(ref)))
                continue
            want = jnp.result_type(ref)
            if arr.shape != np.shape(ref) or arr.dtype != want:
                raise ValueError(
                    f"checkpoint {path} leaf {i} is {arr.dtype}{arr.shape}; `like` expects "
                    f"{want}{np.shape(ref)}."
                )
            out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out), meta["step"], meta["metadata"]


def run_checkpointed(
    step_fn: Callable,
    state,
    num_steps: int,
    *,
    path,
    every: int = 100,
    callback=None,
    on_save=None,
    metadata: dict | None = None,
):
    """Run ``state = step_fn(state, step)`` for ``step`` in ``[0, num_steps)``, checkpointing.

    Every ``every`` steps (and at the end) the state is saved atomically to ``path``; if
    ``path`` exists when called, the run resumes from it. Because the state (including PRNG
    keys, which belong in it) is restored exactly and ``step_fn`` is deterministic, a killed
    and resumed run ends bit for bit where an uninterrupted one does.

    Args:
      step_fn: ``(state, step) -> state``; jit it (``step`` arrives as an int32 array).
      state: initial state pytree (used as the template when resuming).
      num_steps: total number of steps.
      path: checkpoint file.
      every: steps between checkpoints (the work lost to a kill is at most ``every`` steps).
      callback: optional ``callback(state, step)`` after each checkpoint (logging).
      on_save: optional ``on_save(state, step)`` just *before* each checkpoint is written:
        flush side stores (e.g. a :class:`grd.analysis.TrajectoryRecorder`) here, so that
        they are never behind the checkpoint.
      metadata: JSON-able record stored with each checkpoint; when resuming, a checkpoint
        whose metadata differs is refused with ``ValueError`` (it belongs to another run).

    Returns:
      The final state.
    """
    if every < 1:
        raise ValueError(f"`every` must be ≥ 1; got {every}.")
    start = 0
    if Path(path).exists():
        state, start, saved = load_checkpoint(path, state)
        if metadata is not None and saved != json.loads(json.dumps(metadata)):
            raise ValueError(
                f"checkpoint {path} belongs to another run (its metadata differs); "
                "delete it or use another path."
            )
    step = start
    while step < num_steps:
        stop = min(step + every, num_steps)
        for i in range(step, stop):
            state = step_fn(state, jnp.asarray(i, jnp.int32))
        step = stop
        if on_save is not None:
            on_save(state, step)
        save_checkpoint(path, state, step=step, metadata=metadata)
        if callback is not None:
            callback(state, step)
    return state


def integrate_checkpointed(
    loss_fn,
    params0,
    batch,
    *,
    flow: str,
    t1,
    path,
    segments: int = 10,
    t0=0.0,
    v0=None,
    callback=None,
    sharded: bool | None = None,
    **integrate_kwargs,
):
    """:func:`grd.integrate` in ``segments`` pieces, checkpointing the diffrax state after each.

    The state saved after a segment is the solution ``y`` together with diffrax's solver state,
    step-size-controller state and ``made_jump`` flag, so that the next segment continues the
    adaptive integration exactly where it stopped. Killed and resumed, it reproduces an
    uninterrupted segmented run bit for bit. (The SGD SDE is not supported: its Brownian tree
    is tied to the whole interval.)

    Args:
      loss_fn, params0, batch, flow, t1, t0, v0: as in :func:`grd.integrate`.
      path: checkpoint file (resumed from if it exists); with ``sharded``, an orbax
        checkpoint directory shared by all processes (step ``i`` = after segment ``i``).
      segments: number of equal pieces of ``[t0, t1]``; one checkpoint after each.
      callback: optional ``callback(y, segment)`` after each checkpoint.
      sharded: write orbax-checkpoint steps (:func:`save_sharded_checkpoint`; every process
        writes its shards, a step is committed when all have) instead of one ``.npz`` file.
        ``None`` (default): sharded when ``jax.process_count() > 1``, where the single-file
        format cannot be used. Every process runs the same call; the state is restored
        replicated over the mesh of the global arrays in ``params0``/``batch``.
      **integrate_kwargs: passed to :func:`grd.integrate` (``eps``, ``inverse``, tolerances…).

    Returns:
      ``(y, ts)`` where ``y`` is the final state (``w``, or ``(w, v)`` for second-order flows)
      and ``ts`` the segment end times.
    """
    import diffrax

    from ._flows import SECOND_ORDER, integrate

    if flow == "sgd_sde":
        raise ValueError("`flow='sgd_sde'` cannot be checkpointed by segments; integrate it whole.")
    if segments < 1:
        raise ValueError(f"`segments` must be ≥ 1; got {segments}.")
    edges = np.linspace(float(t0), float(t1), segments + 1)
    saveat = diffrax.SaveAt(t1=True, solver_state=True, controller_state=True, made_jump=True)

    def segment(y, i, states):
        w, v = y if flow in SECOND_ORDER else (y, None)
        kw = dict(integrate_kwargs)
        if states is not None:
            kw.update(solver_state=states[0], controller_state=states[1], made_jump=states[2])
        sol = integrate(
            loss_fn,
            w,
            batch,
            flow=flow,
            t0=edges[i],
            t1=edges[i + 1],
            v0=v if flow in SECOND_ORDER else None,
            saveat=saveat,
            **kw,
        )
        y = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
        return y, (sol.solver_state, sol.controller_state, sol.made_jump)

    y, states, start = (params0, v0) if flow in SECOND_ORDER else params0, None, 0
    sharded = jax.process_count() > 1 if sharded is None else bool(sharded)
    if sharded:
        placement = _replicated_placement((params0, batch))
        if latest_sharded_step(path) is not None:
            shapes = jax.eval_shape(lambda: segment(y, 0, None))
            like = jax.tree_util.tree_map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placement), shapes
            )
            (y, states), start, _ = load_sharded_checkpoint(path, like)
    elif Path(path).exists():
        # The saved structure is that of (y, diffrax states) after one segment: trace it.
        shapes = jax.eval_shape(lambda: segment(y, 0, None))
        like = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (y, states), start, _ = load_checkpoint(path, like)
    for i in range(start, segments):
        y, states = segment(y, i, states)
        if sharded:
            save_sharded_checkpoint(path, _as_global((y, states), placement), step=i + 1)
        else:
            save_checkpoint(path, (y, states), step=i + 1)
        if callback is not None:
            callback(y, i + 1)
    return y, edges[1:]


def _replicated_placement(tree):
    """Replicated over the mesh of the first global (NamedSharding) array of ``tree``; on one
    process without one, the default device."""
    from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array) and isinstance(leaf.sharding, NamedSharding):
            return NamedSharding(leaf.sharding.mesh, PartitionSpec())
    if jax.process_count() > 1:
        raise ValueError(
            "on several processes, `params0` or `batch` must hold global arrays on a mesh "
            "(grd.sharding.replicate / grd.sharding.global_batch) for a sharded checkpoint."
        )
    return SingleDeviceSharding(jax.local_devices()[0])


def _as_global(tree, placement):
    """Leaves that are not arrays on the mesh yet (host scalars, single-device arrays from an
    eager diffrax step) placed with ``placement``; every process holds the same values."""

    def one(x):
        if isinstance(x, jax.Array) and (
            jax.process_count() == 1 or len(x.sharding.device_set) > 1
        ):
            return x
        return jax.device_put(np.asarray(x), placement)

    return jax.tree_util.tree_map(one, tree)
