"""One of two processes of a multi-process grd run (launched by tests/multihost/conftest.py).

Usage: python _worker.py MODE PROCESS_ID PORT OUT_DIR [KILL_AT]

Every process joins the run with grd.sharding.initialize (gloo CPU collectives, 2 host devices
each), reads only its own rows of the data, assembles the global batch and runs the grd calls
with the batch split over the 4 devices of both processes. Results are gathered to every host
and written to OUT_DIR/result_<process>.npz; the test compares them with one process.

MODE "checks": every check in one launch (D·v, Γ(v,v), ½∂g, Lanczos, CG inverse, NGD and GRD
flows, a jitted data-parallel diffusion-NGD train step, the helpers, a save/load round trip of
sharded state). MODE "train": a checkpointed training run (orbax); with KILL_AT, process 1
kills itself with SIGKILL three steps after the save at step KILL_AT.
"""

import os
import signal
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

N, D_IN, HIDDEN = 16, 3, 5  # d = 3·5 + 5 + 5·2 = 30 parameters
TRAIN_STEPS, EVERY = 12, 4


def problem():
    """The data and model every process builds identically (a data loader in a real run)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from helpers import random_like, tiny_mlp_problem

    loss_fn, params, batch = tiny_mlp_problem(n=N, d_in=D_IN, hidden=HIDDEN)
    return loss_fn, params, batch, random_like(params, seed=7)


def operators(loss_fn):
    """The jitted matrix-free operators, identical for one process and for two."""
    import grd

    @jax.jit
    def ops(p, b, u):
        return {
            "Dv": grd.diffusion_matvec(loss_fn, p, b, u),
            "gamma": grd.christoffel_contract(loss_fn, p, b, u, 0.3),
            "half_dg": grd.metric_derivative_contract(loss_fn, p, b, u, 0.3),
            "ginv": grd.metric_inverse(loss_fn, p, b, u, 0.3, method="cg", rtol=1e-12, atol=1e-12),
            "losses": grd.per_example_losses(loss_fn, p, b),
        }

    return ops


def flow_kwargs():
    """NGD/GRD flows to t1 = 0.2 in 4 fixed Heun steps: the distributed vector field at every
    stage, without the compile time of an adaptive solver (a fixed step also keeps the two
    runs on the same step sequence)."""
    import diffrax

    return dict(
        t1=0.2,
        eps=0.3,
        solver=diffrax.Heun(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.05,
    )


def optax_steps(loss_fn, tx, p, s, b, num_steps=3):
    """A jitted data-parallel train step with the diffusion-NGD transform, ``num_steps`` times."""
    import optax

    @jax.jit
    def train_step(p, s, b):
        per_example = lambda q: jax.vmap(loss_fn, in_axes=(None, 0))(q, b)
        g = jax.grad(lambda q: per_example(q).mean())(p)
        upd, s = tx.update(g, s, p, per_example_loss_fn=per_example)
        return optax.apply_updates(p, upd), s

    for _ in range(num_steps):
        p, s = train_step(p, s, b)
    return p


def train_state_and_step(loss_fn, params, batch, put, tx):
    """A training state with replicated and sharded leaves, and its deterministic jitted step.

    State: parameters, the diffusion-NGD optimizer state, a PRNG key (replicated) and a running
    average of the per-example losses (split over processes like the batch). Each step draws
    random per-example weights from the key (a stochastic mini-batch gradient).
    """
    import jax.numpy as jnp
    import optax

    @jax.jit
    def step(state, i, batch):  # a global array cannot be closed over: pass it in
        p, s, key, ema = state
        key, sub = jax.random.split(key)
        weights = jax.random.uniform(sub, (N,), jnp.float64)
        per_example = lambda q: jax.vmap(loss_fn, in_axes=(None, 0))(q, batch)
        g = jax.grad(lambda q: jnp.mean(weights * per_example(q)))(p)
        upd, s = tx.update(g, s, p, per_example_loss_fn=per_example)
        ema = 0.9 * ema + 0.1 * per_example(p)
        return optax.apply_updates(p, upd), s, key, ema

    step_fn = lambda state, i: step(state, i, batch)
    state = put(params, tx.init(params), jax.random.key(42))
    return state, step_fn


def roundtrip(state, directory):
    """Save ``state`` as step 7 with metadata, load it back: bits, shardings, step, metadata."""
    import numpy as np

    import grd
    from grd import sharding

    grd.checkpoint.save_sharded_checkpoint(directory, state, step=7, metadata={"note": "x"})
    back, step, meta = grd.checkpoint.load_sharded_checkpoint(directory, state)
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    raw = lambda x: jax.random.key_data(x) if is_key(x) else x
    same = jax.tree_util.tree_map(
        lambda a, b: (
            a.sharding == b.sharding
            and np.asarray(sharding.gather(raw(a))).tobytes()
            == np.asarray(sharding.gather(raw(b))).tobytes()
        ),
        state,
        back,
    )
    return all(jax.tree_util.tree_leaves(same)) and step == 7 and meta == {"note": "x"}


def main():
    mode, pid, port, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else None

    import grd
    from grd import sharding

    t0 = time.perf_counter()
    sharding.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and jax.process_index() == pid
    assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2

    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    loss_fn, params, full_batch, v = problem()
    mesh = sharding.data_mesh()
    rows = sharding.process_rows(N, mesh)
    batch = sharding.global_batch(sharding.process_local_batch(full_batch, mesh), mesh)
    p, u = sharding.replicate((params, v), mesh)
    flat = lambda tree: np.asarray(ravel_pytree(sharding.gather(tree))[0])
    res = {"rows": np.array([rows.start, rows.stop])}
    tx = grd.diffusion_ngd(0.05, eps=0.3, relative=True)  # eps·λ_max/λ_max < 1

    def put(params, opt_state, key):
        params, opt_state, key = sharding.replicate((params, opt_state, key), mesh)
        ema = jax.device_put(jnp.zeros(N), sharding.batch_sharding(mesh))
        return params, opt_state, key, ema

    lap = [time.perf_counter()]

    def tick(what):
        lap.append(time.perf_counter())
        print(f"process {pid}: {what} {lap[-1] - lap[-2]:.1f} s", flush=True)

    tick("initialize + global batch")
    if mode == "checks":
        # the batch is really split over both processes: 4 examples per device
        res["batch_shards"] = np.array(
            [len(batch["x"].sharding.device_set), batch["x"].addressable_shards[0].data.shape[0]]
        )
        res["batch_x"] = sharding.gather(batch["x"])
        out = operators(loss_fn)(p, batch, u)
        res_losses = out["losses"]
        for name, x in out.items():
            res[name] = flat(x)
        tick("operators")
        res["lanczos"] = sharding.gather(
            grd.diffusion_spectrum(loss_fn, p, batch, 3, method="lanczos").eigenvalues
        )
        tick("lanczos")
        cg_tx = grd.diffusion_ngd(0.1, eps=0.3, method="cg")
        cg_state = sharding.replicate(cg_tx.init(p), mesh)
        res["optax"] = flat(optax_steps(loss_fn, cg_tx, p, cg_state, batch))
        tick("optax")
        for flow in ("ngd", "grd"):
            sol = grd.integrate(loss_fn, p, batch, flow=flow, **flow_kwargs())
            res[f"flow_{flow}"] = flat(jax.tree_util.tree_map(lambda x: x[-1], sol.ys))
            tick(f"flow {flow}")

        # a sharded state (replicated parameters, optimizer state and key; per-example losses
        # split over processes) through save and load: same bits, same shardings
        state = put(p, tx.init(p), jax.random.key(3))
        state = (*state[:3], jax.device_put(res_losses, sharding.batch_sharding(mesh)))
        res["state_sharded"] = np.array(not state[3].is_fully_addressable)
        res["roundtrip"] = np.array(roundtrip(state, os.path.join(out_dir, "explicit")))
        tick("save + load")

    if mode == "train":
        state, step_fn = train_state_and_step(loss_fn, p, batch, put, tx)

        def maybe_kill(state, step):
            if kill_at is not None and step == kill_at:
                # die mid-interval, after the save at KILL_AT has started: the launcher then
                # kills process 0 (as `srun --kill-on-bad-exit` does)
                for i in range(step, step + 3):
                    state = step_fn(state, jnp.asarray(i, jnp.int32))
                jax.block_until_ready(state)
                if pid == 1:
                    os.kill(os.getpid(), signal.SIGKILL)

        ckpt = os.path.join(out_dir, "ckpt")
        res["resumed_from"] = np.array(grd.checkpoint.latest_sharded_step(ckpt) or 0)
        final = grd.checkpoint.run_checkpointed_sharded(
            step_fn, state, TRAIN_STEPS, directory=ckpt, every=EVERY, callback=maybe_kill
        )
        tick("checkpointed training")
        res["train_params"] = flat(final[0])
        res["train_ema"] = sharding.gather(final[3])

    res["seconds"] = np.array(time.perf_counter() - t0)
    np.savez(os.path.join(out_dir, f"result_{pid}.npz"), **res)
    print(f"process {pid}: done in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
