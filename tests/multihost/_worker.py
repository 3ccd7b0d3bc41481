"""One of two processes of a multi-process grd run (launched by tests/multihost/conftest.py).

Usage: python _worker.py MODE PROCESS_ID PORT OUT_DIR [ARG]

Every process joins the run with grd.sharding.initialize (gloo CPU collectives, 2 host devices
each), reads only its own rows of the data, assembles the global batch and runs the grd calls
with the batch split over the 4 devices of both processes. Results are gathered to every host;
the last line of stdout is one JSON object (name → list of floats), also written to
OUT_DIR/result_<process>.json.

MODE "checks": ARG is a comma-separated list of names of :data:`CHECKS`, run in one launch
(one JAX start-up and one set of compilations for all of them). MODE "train": a checkpointed
training run (orbax); with ARG = KILL_AT, process 1 kills itself with SIGKILL three steps
after the save at step KILL_AT. MODE "flow": a flow integrated in segments by
grd.checkpoint.integrate_checkpointed (orbax on two processes); with ARG = KILL_AT, process 1
kills itself right after the checkpoint of segment KILL_AT.

Any exception ends the process at once with ``os._exit(1)`` after printing its traceback: a
normal exit would wait in jax.distributed's shutdown barrier for the other process (which is
itself blocked in its next collective), and the launcher could only see a timeout.

:func:`reference` computes the same checks in one process on one device (the oracle).
"""

import json
import os
import signal
import sys
import time
import traceback
from types import SimpleNamespace

import jax

jax.config.update("jax_enable_x64", True)

N, D_IN, HIDDEN = 16, 3, 5  # d = 3·5 + 5 + 5·2 = 30 parameters
TRAIN_STEPS, EVERY = 12, 4
FLOW_SEGMENTS = 3
EPS = 0.3
STREAM_SPLIT = 4  # process 0 streams rows 0…3, process 1 rows 4…15: unequal shares
STREAM_BATCH = 4  # in batches of 4 (one batch shape: each kernel compiles once)


def loss_fn(p, ex):
    """The tanh MLP of tests/helpers.tiny_mlp_problem with its squared-error per-example loss."""
    import jax.numpy as jnp

    h = jnp.tanh(ex["x"] @ p["layer1"]["w"] + p["layer1"]["b"])
    return 0.5 * jnp.sum((h @ p["layer2"]["w"] - ex["y"]) ** 2)


def problem():
    """The parameters, data and vector of the checks (drawn with jax.random in the pytest
    process; the workers read them from problem.npz instead, like a data loader, and skip the
    ≈ 4 s of CPU that compiling the random draws costs in a fresh process)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from helpers import random_like, tiny_mlp_problem

    _, params, batch = tiny_mlp_problem(n=N, d_in=D_IN, hidden=HIDDEN)
    return loss_fn, params, batch, random_like(params, seed=7)


_LEAVES = ("layer1/w", "layer1/b", "layer2/w")


def save_problem(out_dir):
    import numpy as np

    _, params, batch, v = problem()
    leaves = {}
    for name in _LEAVES:
        a, b = name.split("/")
        leaves[f"p:{name}"], leaves[f"v:{name}"] = np.asarray(params[a][b]), np.asarray(v[a][b])
    np.savez(os.path.join(out_dir, "problem.npz"), x=batch["x"], y=batch["y"], **leaves)


def load_problem(out_dir):
    """:func:`problem` as written by :func:`save_problem` (the same float64 values)."""
    import jax.numpy as jnp
    import numpy as np

    z = np.load(os.path.join(out_dir, "problem.npz"))
    leaf = lambda kind, name: jnp.asarray(z[f"{kind}:{name}"])
    tree = lambda kind: {
        "layer1": {"w": leaf(kind, "layer1/w"), "b": leaf(kind, "layer1/b")},
        "layer2": {"w": leaf(kind, "layer2/w")},
    }
    batch = {"x": jnp.asarray(z["x"]), "y": jnp.asarray(z["y"])}
    return loss_fn, tree("p"), batch, tree("v")


def flat(tree):
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from grd import sharding

    return np.asarray(ravel_pytree(sharding.gather(tree))[0])


# --------------------------------------------------------------------------------------------
# The checks: each takes the context (``c.p``, ``c.batch``, ``c.u``: replicated parameters,
# the batch split over all devices and a vector; one process: plain arrays) and returns named
# arrays. The same code runs on two processes and, in :func:`reference`, on one.


def check_operators(c):
    """D·v, Γ(v,v), ½∂g(v,v), the CG inverse of g and the per-example losses (one jit)."""
    import grd

    loss_fn = c.loss_fn

    @jax.jit
    def ops(p, b, u):
        return {
            "Dv": grd.diffusion_matvec(loss_fn, p, b, u),
            "gamma": grd.christoffel_contract(loss_fn, p, b, u, EPS),
            "half_dg": grd.metric_derivative_contract(loss_fn, p, b, u, EPS),
            "ginv": grd.metric_inverse(loss_fn, p, b, u, EPS, method="cg", rtol=1e-12, atol=1e-12),
            "losses": grd.per_example_losses(loss_fn, p, b),
        }

    return {k: flat(x) for k, x in ops(c.p, c.batch, c.u).items()}


def check_lanczos(c):
    """Lanczos top-3 of D with 6 products (one basis block: the smallest compiled loop)."""
    import grd

    spec = grd.diffusion_spectrum(c.loss_fn, c.p, c.batch, 3, method="lanczos", num_matvecs=6)
    return {"lanczos": flat(spec.eigenvalues)}


def optax_steps(loss_fn, tx, p, s, b, num_steps):
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


def check_optax(c):
    """Two steps of diffusion-NGD (CG inverse) in a jitted data-parallel train step."""
    import grd

    tx = grd.diffusion_ngd(0.1, eps=EPS, method="cg")
    return {"optax": flat(optax_steps(c.loss_fn, tx, c.p, c.replicate(tx.init(c.p)), c.batch, 2))}


def check_fields(c):
    """The GRD vector field at (w, v): what a GRD flow integrates (H v, Γ(v, v) and the CG
    inverse of g), without diffrax. (NGD's field, −g⁻¹∇f, is the CG inverse of "operators"
    applied to the gradient; both flows are integrated to t1 in the slow check "flows".)"""
    import equinox as eqx

    import grd

    call = eqx.filter_jit(lambda field, y: field(0.0, y, None))  # the field holds the batch
    field = grd.flow_field(c.loss_fn, c.batch, flow="grd", eps=EPS)
    return {"field_grd": flat(call(field, (c.p, c.u)))}


def flow_kwargs():
    """NGD/GRD flows to t1 = 0.2 in 4 fixed Heun steps: the distributed vector field at every
    stage, without the compile time of an adaptive solver (a fixed step also keeps the two
    runs on the same step sequence)."""
    import diffrax

    return dict(
        t1=0.2,
        eps=EPS,
        solver=diffrax.Heun(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.05,
    )


def check_flows(c):
    """NGD and GRD flows integrated to t1 by grd.integrate (diffrax)."""
    import grd

    out = {}
    for flow in ("ngd", "grd"):
        sol = grd.integrate(c.loss_fn, c.p, c.batch, flow=flow, **flow_kwargs())
        out[f"flow_{flow}"] = flat(jax.tree_util.tree_map(lambda x: x[-1], sol.ys))
    return out


def stream_rows(pid, nproc):
    """The rows this process streams: unequal shares (4 and 12 of 16), all of them on one."""
    if nproc == 1:
        return 0, N
    return (0, STREAM_SPLIT) if pid == 0 else (STREAM_SPLIT, N)


def check_streamed(c):
    """grd.streamed with each process streaming only its own rows, in batches of 4."""
    import numpy as np

    import grd

    start, stop = stream_rows(jax.process_index(), jax.process_count())
    passes = []

    def make_iter():
        passes.append(1)
        for a in range(start, stop, STREAM_BATCH):
            b = min(a + STREAM_BATCH, stop)
            yield jax.tree_util.tree_map(lambda x, a=a, b=b: np.asarray(x)[a:b], c.full_batch)

    data = grd.streamed(make_iter, progress=False)
    p, u = c.params, c.v  # plain arrays, equal on every process
    m = 6  # Krylov depth: one host loop, compared with one process at the same depth
    out = {
        # replicated global arrays are accepted too (their local copy is used)
        "s_Dv": flat(grd.diffusion_matvec(c.loss_fn, c.p, data, c.u)),
        "s_trace": flat(grd.diffusion_trace(c.loss_fn, p, data)),
        "s_lanczos": flat(
            grd.diffusion_spectrum(
                c.loss_fn, p, data, 3, method="lanczos", num_matvecs=m
            ).eigenvalues
        ),
        "s_lambda_max": flat(grd.lambda_max(c.loss_fn, p, data, num_matvecs=m)),
        "s_ginv": flat(grd.metric_inverse(c.loss_fn, p, data, u, EPS, rtol=1e-12, atol=0.0)),
    }
    out["s_passes"] = [float(len(passes))]  # equal on every process (same loop decisions)
    return out


def check_helpers(c):
    """process_rows, global_batch (really split over both processes) and gather."""
    import numpy as np

    from grd import sharding

    rows = sharding.process_rows(N, c.mesh)
    x = c.batch["x"]
    return {
        "rows": [rows.start, rows.stop],
        "batch_shards": [len(x.sharding.device_set), x.addressable_shards[0].data.shape[0]],
        "batch_x": np.asarray(sharding.gather(x)),
    }


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


def check_roundtrip(c):
    """A sharded state (replicated parameters, optimizer state and key; per-example losses
    split over processes) through orbax save and load: same bits, same shardings."""
    import grd

    tx = grd.diffusion_ngd(0.05, eps=EPS, relative=True)
    losses = jax.jit(lambda p, b: grd.per_example_losses(c.loss_fn, p, b))(c.p, c.batch)
    state = (*c.replicate((c.p, tx.init(c.p), jax.random.key(3))), losses)
    return {
        "state_sharded": [float(not losses.is_fully_addressable)],
        "roundtrip": [float(roundtrip(state, os.path.join(c.out_dir, "explicit")))],
    }


def check_fail(c):
    """A NaN in process 0's rows: grd's finite check (eqx.error_if) fails inside the jit."""
    import jax.numpy as jnp
    import numpy as np

    import grd
    from grd import sharding

    x = np.array(sharding.process_local_batch(c.full_batch, c.mesh)["x"])
    if jax.process_index() == 0:
        x[0, 0] = np.nan
    b = sharding.global_batch({"x": jnp.asarray(x), "y": c.local_batch["y"]}, c.mesh)
    dv = jax.jit(lambda p, b, u: grd.diffusion_matvec(c.loss_fn, p, b, u))(c.p, b, c.u)
    return {"never": flat(dv)}


CHECKS = {
    "helpers": check_helpers,
    "operators": check_operators,
    "lanczos": check_lanczos,
    "optax": check_optax,
    "fields": check_fields,
    "streamed": check_streamed,
    "flows": check_flows,
    "roundtrip": check_roundtrip,
    "fail": check_fail,
}
# The default launch ends with "fail": process 0's finite check fails inside a jitted program
# and both processes stall; the launcher must end the run a few seconds later (item tested by
# test_a_failing_process_fails_fast). The results of the checks before it are written first.
# The jitted Lanczos (≈ 5 s of CPU to compile, per process and for the reference) is slow;
# the default checks Lanczos top-3 on two processes through grd.streamed's host loop.
DEFAULT_CHECKS = ("helpers", "operators", "optax", "fields", "streamed", "fail")
SLOW_CHECKS = ("lanczos", "flows", "roundtrip")


def reference(names):
    """The checks ``names`` in this one process on one device, over all the data (the checks
    that need two processes, "helpers" and "fail", are skipped)."""
    import numpy as np

    loss_fn, params, batch, v = problem()
    c = SimpleNamespace(
        loss_fn=loss_fn, params=params, v=v, p=params, u=v, batch=batch, full_batch=batch,
        replicate=lambda tree: tree, mesh=None,
    )  # fmt: skip
    out = {}
    for name in names:
        if name not in ("helpers", "fail"):
            out.update(CHECKS[name](c))
    return {k: np.asarray(x, dtype=np.float64) for k, x in out.items()}


# --------------------------------------------------------------------------------------------
# The checkpointed runs (modes "train" and "flow").


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


def run_train(c, kill_at):
    import jax.numpy as jnp

    import grd
    from grd import sharding

    tx = grd.diffusion_ngd(0.05, eps=EPS, relative=True)  # eps·λ_max/λ_max < 1

    def put(params, opt_state, key):
        params, opt_state, key = c.replicate((params, opt_state, key))
        ema = jax.device_put(jnp.zeros(N), sharding.batch_sharding(c.mesh))
        return params, opt_state, key, ema

    state, step_fn = train_state_and_step(c.loss_fn, c.p, c.batch, put, tx)

    def maybe_kill(state, step):
        if kill_at is not None and step == kill_at:
            # die mid-interval, after the save at KILL_AT has started: the launcher then
            # kills process 0 (as `srun --kill-on-bad-exit` does)
            for i in range(step, step + 3):
                state = step_fn(state, jnp.asarray(i, jnp.int32))
            jax.block_until_ready(state)
            if jax.process_index() == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    ckpt = os.path.join(c.out_dir, "ckpt")
    resumed = grd.checkpoint.latest_sharded_step(ckpt) or 0
    final = grd.checkpoint.run_checkpointed_sharded(
        step_fn, state, TRAIN_STEPS, directory=ckpt, every=EVERY, callback=maybe_kill
    )
    return {"resumed_from": [resumed], "train_params": flat(final[0]), "train_ema": flat(final[3])}


def run_flow(c, kill_at):
    """A GRD flow in FLOW_SEGMENTS segments (adaptive steps), checkpointed after each."""
    import grd

    ckpt = os.path.join(c.out_dir, "flow_ckpt")
    resumed = grd.checkpoint.latest_sharded_step(ckpt) or 0

    def maybe_kill(y, segment):
        if kill_at is not None and segment == kill_at and jax.process_index() == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    y, _ = grd.checkpoint.integrate_checkpointed(
        c.loss_fn, c.p, c.batch, flow="grd", t1=0.3, eps=EPS, path=ckpt,
        segments=FLOW_SEGMENTS, callback=maybe_kill, v0=c.u, rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    return {"resumed_from": [resumed], "flow_w": flat(y[0]), "flow_v": flat(y[1])}


def main():
    mode, pid, port, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    arg = sys.argv[5] if len(sys.argv) > 5 else None

    from grd import sharding

    t0 = time.perf_counter()
    sharding.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and jax.process_index() == pid
    assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2

    loss_fn, params, full_batch, v = load_problem(out_dir)
    mesh = sharding.data_mesh()
    local = sharding.process_local_batch(full_batch, mesh)  # this process's rows only
    batch = sharding.global_batch(local, mesh)
    p, u = sharding.replicate((params, v), mesh)
    c = SimpleNamespace(
        loss_fn=loss_fn, params=params, v=v, p=p, u=u, batch=batch, full_batch=full_batch,
        local_batch=local, mesh=mesh, out_dir=out_dir,
        replicate=lambda tree: sharding.replicate(tree, mesh),
    )  # fmt: skip
    lap, cpu = [time.perf_counter()], [time.process_time()]

    def tick(what):
        lap.append(time.perf_counter())
        cpu.append(time.process_time())
        print(
            f"process {pid}: {what} {lap[-1] - lap[-2]:.1f} s ({cpu[-1] - cpu[-2]:.1f} s CPU)",
            flush=True,
        )

    tick("initialize + global batch")
    import numpy as np

    res = {}

    def write():
        """Write the results so far (before a check that may stall, e.g. "fail")."""
        res["seconds"] = [time.perf_counter() - t0]
        res["cpu_seconds"] = [time.process_time()]  # since the start (imports included)
        text = json.dumps({k: np.asarray(x, dtype=np.float64).tolist() for k, x in res.items()})
        with open(os.path.join(out_dir, f"result_{pid}.json"), "w") as f:
            f.write(text)
        return text

    if mode == "checks":
        for name in arg.split(","):
            if name == "fail":
                write()
            res.update(CHECKS[name](c))
            tick(name)
    elif mode == "train":
        res.update(run_train(c, int(arg) if arg else None))
        tick("checkpointed training")
    elif mode == "flow":
        res.update(run_flow(c, int(arg) if arg else None))
        tick("checkpointed flow")
    else:
        raise ValueError(f"unknown mode {mode!r}")
    print(write(), flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # skip jax.distributed's shutdown barrier: the launcher sees the failure
