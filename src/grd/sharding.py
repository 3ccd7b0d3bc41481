"""Run grd with the batch sharded over devices (JAX's own SPMD engine; no device-specific code).

Every grd function is a pure JAX computation whose work is a sum over examples, so placing
the batch with a :class:`jax.sharding.NamedSharding` that splits its leading (example) axis
over a mesh axis, and the parameters replicated, makes ``jax.jit`` partition the per-example
JVPs and VJPs over the devices and insert one all-reduce per covariance. Memory per device is
O(d + N/devices); with ``chunk_size`` the per-device working set is bounded by the chunk.

Multi-host: call :func:`jax.distributed.initialize` first on every process, build the mesh
over ``jax.devices()`` (all hosts), and assemble the global batch with
:func:`jax.make_array_from_process_local_data` using :func:`batch_sharding`; the grd calls
are unchanged.

Example:
  >>> mesh = grd.sharding.data_mesh()                 # all devices on one "data" axis
  >>> batch = grd.sharding.shard_batch(batch, mesh)   # examples split over devices
  >>> params = grd.sharding.replicate(params, mesh)
  >>> Dv = jax.jit(lambda p, b, v: grd.diffusion_matvec(loss_fn, p, b, v))(params, batch, v)
"""

from __future__ import annotations

import jax
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
    """Place every leaf of ``tree`` (parameters, vectors) on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
