"""Benchmark of the flow vector fields and of a GRD integration on the digits MLP.

Prints, and writes to benchmarks/results/flows.md (with machine, versions and date):

1. the cost of one evaluation of each vector field in units of one jit'd batch gradient
   of the same model (targets: GRD with the weak-field inverse ≤ 6×; with CG 6 + 2·iterations);
2. wall time and number of steps of a GRD integration (Tsit5 + PID) in float32 and float64.

Run: ``python benchmarks/bench_flows.py [--n 300] [--hidden 32] [--t1 2.0]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax  # noqa: E402

import grd  # noqa: E402
from grd._flows import flow_field, integrate  # noqa: E402
from grd._metric import _metric_inverse  # noqa: E402
from grd._primitives import mean_weights, weighted_grad  # noqa: E402
from grd.data import load_digits  # noqa: E402
from grd.models.mlp import init_mlp, mlp_classifier  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "flows.md"


def timeit(fn, *args, repeat=20):
    out = fn(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / repeat)
    return best


def problem(n, hidden, dtype):
    data = load_digits(n, seed=0)
    batch = {"x": jnp.asarray(data["x"], dtype), "y": jnp.asarray(data["y"])}
    model, loss_fn = mlp_classifier(hidden=(hidden,))
    params = init_mlp(model, jax.random.PRNGKey(0), 64, dtype)
    return loss_fn, params, batch


def field_costs(loss_fn, params, batch, eps):
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    weights = mean_weights(batch["y"].shape[0], dtype)
    grad = jax.jit(lambda p, b: weighted_grad(loss_fn, p, b, weights))
    t_grad = timeit(grad, params, batch)
    v = jax.tree_util.tree_map(lambda x: 0.01 * jnp.ones_like(x), params)
    rows = [("batch gradient ∇f", t_grad, 1.0, "")]
    call = eqx.filter_jit(lambda f, y: f(0.0, y, None))
    configs = [
        ("gd", "cg", "exact"),
        ("ngd", "weak_field", "exact"),
        ("ngd", "cg", "exact"),
        ("ngd", "woodbury", "exact"),
        ("grd", "weak_field", "exact"),
        ("grd", "cg", "exact"),
        ("grd", "woodbury", "exact"),
        ("grd", "cg", "first_order"),
        ("ngd2", "cg", "exact"),
        ("sgd_sde diffusion Cᵀu", None, None),
    ]
    for flow, inverse, christoffel in configs:
        if inverse is None:
            from grd._flows import SGDDiffusion

            diff = SGDDiffusion(loss_fn, batch, temperature=jnp.asarray(0.01, dtype))
            u = jax.random.normal(jax.random.PRNGKey(0), (batch["y"].shape[0],), dtype)
            f = eqx.filter_jit(lambda d, w, u: d(0.0, w, None).mv(u))
            t = timeit(f, diff, params, u)
            rows.append((flow, t, t / t_grad, ""))
            continue
        field = flow_field(
            loss_fn, batch, flow=flow, eps=jnp.asarray(eps, dtype), inverse=inverse,
            christoffel=christoffel, dtype=dtype,
        )  # fmt: skip
        y = (params, v) if flow in ("grd", "ngd2") else params
        t = timeit(call, field, y)
        note = ""
        if inverse == "cg" and flow != "gd":
            # CG iterations of the inverse inside this field (on its right-hand side).
            rhs = y if flow not in ("grd", "ngd2") else v
            _, info = eqx.filter_jit(
                lambda f, p, r: _metric_inverse(
                    loss_fn, p, batch, r, f.eps, "cg", **dict(f.inverse_options)
                )
            )(field, params, rhs)
            note = f"CG iterations: {int(info.num_steps)}"
        name = f"{flow} ({inverse}" + (f", Γ {christoffel})" if flow == "grd" else ")")
        rows.append((name, t, t / t_grad, note))
    return rows


def grd_integration(loss_fn, params, batch, eps, t1, dtype):
    kw = dict(flow="grd", t1=t1, eps=jnp.asarray(eps, dtype), inverse="cg")
    t = time.perf_counter()
    sol = integrate(loss_fn, params, batch, **kw)
    jax.block_until_ready(sol.ys)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    sol = integrate(loss_fn, params, batch, **kw)
    jax.block_until_ready(sol.ys)
    t_run = time.perf_counter() - t
    return dict(
        dtype=jnp.dtype(dtype).name,
        steps=int(sol.stats["num_steps"]),
        rejected=int(sol.stats["num_rejected_steps"]),
        first=t_first,
        run=t_run,
        ok=bool(sol.result == diffrax.RESULTS.successful),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--t1", type=float, default=2.0)
    ap.add_argument("--c", type=float, default=0.5, help="ε = c / λ_max(D(w₀))")
    args = ap.parse_args()

    loss_fn, params, batch = problem(args.n, args.hidden, jnp.float64)
    d = sum(x.size for x in jax.tree_util.tree_leaves(params))
    lam = float(grd.lambda_max(loss_fn, params, batch))
    eps = args.c / lam
    rows = field_costs(loss_fn, params, batch, eps)
    integ = []
    for dtype in (jnp.float32, jnp.float64):
        lf, p, b = problem(args.n, args.hidden, dtype)
        integ.append(grd_integration(lf, p, b, eps, args.t1, dtype))

    head = (
        f"digits MLP 64-{args.hidden}-10 (d = {d}), N = {args.n}, ε = {args.c}/λ_max(D(w₀)) "
        f"= {eps:.4g} (λ_max = {lam:.4g}), float64 vector fields"
    )
    lines = [head, "", "| vector field | time per evaluation | ÷ batch gradient | note |",
             "|---|---|---|---|"]  # fmt: skip
    for name, t, ratio, note in rows:
        lines.append(f"| {name} | {t * 1e3:.3f} ms | {ratio:.2f} | {note} |")
    lines += ["", f"GRD integration (CG, exact Γ, Tsit5 + PID defaults), t ∈ [0, {args.t1}]:",
              "", "| dtype | steps | rejected | first call (compile + run) | second call | ok |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in integ:
        lines.append(
            f"| {r['dtype']} | {r['steps']} | {r['rejected']} | {r['first']:.2f} s | "
            f"{r['run']:.2f} s | {r['ok']} |"
        )
    table = "\n".join(lines)
    print(table)

    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}, jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}, equinox {eqx.__version__}, lineax {lineax.__version__}"
    )
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    block = f"\n## bench_flows.py — {stamp}\n\n{machine}\n\n{table}\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Flows: benchmarks and the GRD–NGD experiment\n")
    with RESULTS.open("a") as fh:
        fh.write(block)
    print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
