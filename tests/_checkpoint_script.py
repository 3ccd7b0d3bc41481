"""Run by tests/test_checkpoint.py: a training loop or a flow, checkpointed, optionally killed.

Usage: python _checkpoint_script.py {train,flow} CHECKPOINT OUT.npy [KILL_AFTER]
Kills itself with SIGKILL right after checkpoint number KILL_AFTER (no clean-up runs).
"""

import os
import signal
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import tiny_mlp_problem  # noqa: E402

from grd.checkpoint import integrate_checkpointed, run_checkpointed  # noqa: E402

mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
kill_after = int(sys.argv[4]) if len(sys.argv) > 4 else None


def maybe_kill(_, step):
    if kill_after is not None and step >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)


loss_fn, params, batch = tiny_mlp_problem(n=32)
if mode == "train":
    tx = optax.adam(1e-2)

    @jax.jit
    def step_fn(state, i):
        p, opt, key = state
        key, sub = jax.random.split(key)
        idx = jax.random.choice(sub, 32, (8,), replace=False)
        mb = jax.tree_util.tree_map(lambda x: x[idx], batch)
        g = jax.grad(lambda q: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(q, mb)))(p)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, key

    state = (params, tx.init(params), jax.random.PRNGKey(42))
    final = run_checkpointed(step_fn, state, 60, path=ckpt, every=10, callback=maybe_kill)
    np.save(out, np.asarray(ravel_pytree(final[0])[0]))
else:
    y, _ = integrate_checkpointed(
        loss_fn,
        params,
        batch,
        flow="grd",
        t1=0.6,
        path=ckpt,
        segments=6,
        eps=0.2,
        callback=maybe_kill,
    )
    np.save(out, np.asarray(ravel_pytree(y)[0]))
