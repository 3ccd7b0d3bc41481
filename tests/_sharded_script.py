"""Run by tests/test_sharding.py in a subprocess with 8 host-platform CPU devices.

Computes every matrix-free operation with the batch sharded over 1, 2, 4 and 8 devices and
prints a JSON report: max deviation from the 1-device results and the observed shardings.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import random_like, tiny_mlp_problem  # noqa: E402

import grd  # noqa: E402
from grd import sharding  # noqa: E402
from grd._primitives import mean_weights, weighted_hvp  # noqa: E402

loss_fn, params, batch = tiny_mlp_problem(n=16, d_in=3, hidden=5)
v = random_like(params, seed=7)


def ops(p, b, u):
    out = {
        "Dv": grd.diffusion_matvec(loss_fn, p, b, u),
        "Dv_chunked": grd.diffusion_matvec(loss_fn, p, b, u, chunk_size=4),
        "gamma": grd.christoffel_contract(loss_fn, p, b, u, 0.3),
        "half_dg": grd.metric_derivative_contract(loss_fn, p, b, u, 0.3),
        "hvp": weighted_hvp(loss_fn, p, b, mean_weights(16, jnp.float64), u),
        "ginv": grd.metric_inverse(loss_fn, p, b, u, 0.3, method="cg", rtol=1e-12, atol=1e-12),
        "losses": grd.per_example_losses(loss_fn, p, b),
    }
    return out


def run(num):
    mesh = sharding.data_mesh(num)
    b = sharding.shard_batch(batch, mesh)
    p = sharding.replicate(params, mesh)
    u = sharding.replicate(v, mesh)
    out = jax.jit(ops)(p, b, u)
    lam = grd.diffusion_spectrum(loss_fn, p, b, 3, method="lanczos").eigenvalues
    tx = grd._optim.diffusion_ngd(0.1, eps=0.3, method="cg") if hasattr(grd, "_optim") else None
    res = {k: np.asarray(ravel_pytree(x)[0]) for k, x in out.items()}
    res["lanczos"] = np.asarray(lam)
    if tx is not None:
        state = tx.init(p)
        per_example = lambda q: jax.vmap(loss_fn, in_axes=(None, 0))(q, b)
        g = jax.grad(lambda q: jnp.mean(per_example(q)))(p)
        upd, _ = jax.jit(
            lambda g, s, q: tx.update(
                g, s, q, per_example_loss_fn=lambda r: jax.vmap(loss_fn, in_axes=(None, 0))(r, b)
            )
        )(g, state, p)
        res["optax"] = np.asarray(ravel_pytree(upd)[0])
    sol = (
        grd._flows.integrate(loss_fn, p, b, flow="ngd", t1=0.2, eps=0.3)
        if hasattr(grd, "_flows")
        else None
    )
    if sol is not None:
        res["flow"] = np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda x: x[-1], sol.ys))[0])
    info = {
        "batch_spec": str(b["x"].sharding.spec),
        "batch_devices": len(b["x"].sharding.device_set),
        "losses_devices": len(out["losses"].sharding.device_set),
        "losses_spec": str(getattr(out["losses"].sharding, "spec", None)),
        "shard_shapes": sorted({tuple(s.data.shape) for s in b["x"].addressable_shards}),
    }
    return res, info


import grd._flows  # noqa: E402,F401
import grd._optim  # noqa: E402,F401

ref, _ = run(1)
report = {"devices": len(jax.devices())}
for num in (1, 2, 4, 8):
    res, info = run(num)
    info["max_abs_diff"] = {k: float(np.max(np.abs(res[k] - ref[k]))) for k in ref}
    info["max_abs_ref"] = {k: float(np.max(np.abs(ref[k]))) for k in ref}
    report[str(num)] = info
print("REPORT" + json.dumps(report))
