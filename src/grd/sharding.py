"""Run grd with the batch sharded over devices (JAX's own SPMD engine; no device-specific code).

Every grd function is a pure JAX computation whose work is a sum over examples, so placing
the batch with a :class:`jax.sharding.NamedSharding` that splits its leading (example) axis
over a mesh axis, and the parameters replicated, makes ``jax.jit`` partition the per-example
JVPs and VJPs over the devices and insert one all-reduce per covariance. Memory per device is
O(d + N/devices); with ``chunk_size`` the per-device working set is bounded by the chunk.

Multi-host (one process per host, or per GPU): call :func:`initialize` first on every process
(a thin wrapper of :func:`jax.distributed.initialize`), build the mesh over ``jax.devices()``
(all hosts), let each process read only its rows (:func:`process_rows`), assemble the global
batch with :func:`global_batch`, and bring a result back to every host with :func:`gather`.
The grd calls are unchanged; docs/multihost.md is the launch guide.

Example:
  >>> mesh = grd.sharding.data_mesh()                 # all devices on one "data" axis
  >>> batch = grd.sharding.shard_batch(batch, mesh)   # examples split over devices
  >>> params = grd.sharding.replicate(params, mesh)
  >>> Dv = jax.jit(lambda p, b, v: grd.diffusion_matvec(loss_fn, p, b, v))(params, batch, v)

Multi-host example (the same script on every process):
  >>> grd.sharding.initialize()                       # SLURM, TPU, ... auto-detected
  >>> mesh = grd.sharding.data_mesh()                 # every device of every process
  >>> rows = grd.sharding.process_rows(N, mesh)       # this process reads data[rows] only
  >>> batch = grd.sharding.global_batch(read_examples(rows), mesh)
  >>> params = grd.sharding.replicate(params, mesh)
  >>> Dv = grd.sharding.gather(jax.jit(...)(params, batch, v))   # NumPy, on every process
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _validation as val


def data_mesh(num_devices: int | None = None, axis_name: str = "data", devices=None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (default: all) named ``axis_name``."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"`num_devices` must be between 1 and {len(devices)} (the available devices); "
                f"got {num_devices}."
            )
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str | None = None) -> NamedSharding:
    """Sharding that splits the leading (example) axis over ``axis_name`` of ``mesh``."""
    axis_name = mesh.axis_names[0] if axis_name is None else axis_name
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_batch(batch, mesh: Mesh, axis_name: str | None = None):
    """Place ``batch`` with its example axis split over the mesh axis.

    N must be divisible by the number of devices on that axis (pad or trim the batch first).
    """
    n = val.batch_size(batch)
    sharding = batch_sharding(mesh, axis_name)
    size = mesh.shape[sharding.spec[0]]
    if n % size:
        raise ValueError(
            f"`batch` has N = {n} examples, not divisible by the {size} devices of mesh axis "
            f"{sharding.spec[0]!r}; trim or pad the batch to a multiple of {size}."
        )
    return jax.device_put(batch, sharding)


def replicate(tree, mesh: Mesh):
    """Place every leaf of ``tree`` (parameters, vectors, PRNG keys) on all devices of ``mesh``.

    On several processes every process must pass the same values (as with any replicated
    input to ``jax.jit``). Typed PRNG keys are placed through their raw key data, which
    :func:`jax.device_put` accepts for a mesh spanning processes (jax 0.10.2 rejects the key
    array itself).
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf):
        if jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            data = jax.device_put(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(put, tree)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs,
) -> None:
    """Join a multi-process JAX run: :func:`jax.distributed.initialize` plus CPU collectives.

    A thin wrapper, on purpose: with no arguments JAX detects the cluster itself (SLURM,
    Cloud TPU pod slices, Open MPI, mpi4py, Kubernetes); pass ``coordinator_address``,
    ``num_processes`` and ``process_id`` (e.g. ``"10.0.0.1:1234"``, 2, 0) anywhere else. The
    two things it adds: on CPU it selects gloo for cross-process collectives when no
    implementation is set (jax 0.10.2 already defaults to gloo; releases without a default fail
    at the first cross-process all-reduce on CPU), and it does nothing if the runtime is
    already initialised, so library code can call it unconditionally. Call it on every process
    before any other JAX call that touches devices. Plain :func:`jax.distributed.initialize`
    is equally fine on GPU and TPU.

    Args:
      coordinator_address: ``host:port`` of process 0 (``None``: auto-detect).
      num_processes, process_id: total number of processes and this one's index.
      **kwargs: passed to :func:`jax.distributed.initialize` (``local_device_ids``,
        ``initialization_timeout``, ...).
    """
    is_initialized = getattr(jax.distributed, "is_initialized", lambda: False)
    if is_initialized():
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )


def process_rows(num_examples: int, mesh: Mesh, axis_name: str | None = None) -> slice:
    """The rows ``[start, stop)`` of a ``num_examples``-example batch that this process holds.

    With the batch split by :func:`batch_sharding`, the devices of this process hold a
    contiguous block of examples (for a mesh over ``jax.devices()``, process ``i`` of ``P``
    holds rows ``i·N/P … (i+1)·N/P``). Each process reads only ``data[process_rows(N, mesh)]``
    and passes it to :func:`global_batch`; no process ever holds the whole batch.
    On one process this is ``slice(0, num_examples)``.
    """
    sharding = batch_sharding(mesh, axis_name)
    size = mesh.shape[sharding.spec[0]]
    if num_examples % size:
        raise ValueError(
            f"`num_examples` = {num_examples} is not divisible by the {size} devices of mesh "
            f"axis {sharding.spec[0]!r}; trim or pad the data to a multiple of {size}."
        )
    index_map = sharding.addressable_devices_indices_map((num_examples,))
    blocks = sorted({(i[0].start or 0, i[0].stop or num_examples) for i in index_map.values()})
    start, stop = blocks[0][0], blocks[-1][1]
    if sum(b - a for a, b in blocks) != stop - start:
        raise ValueError(
            "this process's devices do not hold a contiguous block of the example axis; build "
            "the mesh over `jax.devices()` in their default order (grd.sharding.data_mesh())."
        )
    return slice(start, stop)


def process_local_batch(batch, mesh: Mesh, axis_name: str | None = None):
    """This process's rows of a full ``batch`` (``batch[process_rows(N, mesh)]`` per leaf).

    For data every process can index cheaply (a memory map, an array on a shared disk);
    otherwise read ``process_rows`` directly.
    """
    rows = process_rows(val.batch_size(batch), mesh, axis_name)
    return jax.tree_util.tree_map(lambda x: x[rows], batch)


def global_batch(local_batch, mesh: Mesh, axis_name: str | None = None):
    """The global batch assembled from every process's rows (no data moves between processes).

    Each process passes the ``N/P`` examples it holds (:func:`process_local_batch`); the result
    is one ``jax.Array`` per leaf of global leading size ``N``, split over the mesh axis like
    :func:`shard_batch` (:func:`jax.make_array_from_process_local_data` with
    :func:`batch_sharding`). Every process must call it, with the same number of examples.
    """
    sharding = batch_sharding(mesh, axis_name)
    n_local = val.batch_size(local_batch)
    local_devices = sum(
        1 for d in np.asarray(mesh.devices).flat if d.process_index == jax.process_index()
    )
    if local_devices == 0 or n_local % local_devices:
        raise ValueError(
            f"`local_batch` has {n_local} examples, not divisible by this process's "
            f"{local_devices} devices of the mesh; give each process a multiple of "
            f"{max(local_devices, 1)} examples."
        )
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def gather(tree):
    """Every leaf of ``tree`` as a full NumPy array on every process.

    A leaf split over processes (per-example losses, a sharded batch) is all-gathered
    (:func:`jax.experimental.multihost_utils.process_allgather`, one collective: every process
    must call ``gather``); replicated or process-local leaves are copied to host as they are.
    """
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)
