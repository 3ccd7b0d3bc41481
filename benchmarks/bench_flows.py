"""Benchmark of the flow vector fields and of a GRD integration on the digits MLP.

Prints, and writes to benchmarks/results/flows.md (with machine, versions and date):

1. the cost of one evaluation of each vector field in units of one jit'd batch gradient
   of the same model, every function under ``jax.jit`` with its arrays as arguments, and the
   call (dispatch) overhead on its own lines (``eqx.filter_jit`` adds ≈ 0.1 ms per call,
   which this benchmark used to report as field cost); on the digits MLP (float64) and on
   a 784-256-10 MLP (float32, N = 256) with the regression guards of issue 17 printed as
   PASS/FAIL lines (GRD right-hand side ≤ 3.0×, first-order Γ ≤ 2.0× a gradient);
2. wall time and number of steps of a GRD integration (Tsit5 + PID) in float32 and float64.

Run: ``python benchmarks/bench_flows.py [--n 300] [--hidden 32] [--t1 2.0] [--no-integration]``.
The load average of the machine is printed with every table.
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
from grd._flows import SGDDiffusion, flow_field, integrate  # noqa: E402
from grd._metric import _metric_inverse  # noqa: E402
from grd._primitives import mean_weights, weighted_grad  # noqa: E402
from grd.data import load_digits, make_classification  # noqa: E402
from grd.models.mlp import init_mlp, mlp_classifier  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "flows.md"


def timeit(fn, *args, repeat=20):
    """Best over 5 rounds of the mean of ``repeat`` blocked calls (after one warm-up call)."""
    out = fn(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeat):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / repeat)
    return best


def load() -> str:
    one, five, fifteen = os.getloadavg()
    busy = " — the machine is busy (load > 2 on 2 cores): ratios are noisy" if one > 2 else ""
    return f"load average (1, 5, 15 min): {one:.2f}, {five:.2f}, {fifteen:.2f}{busy}"


def problem(n, hidden, dtype):
    data = load_digits(n, seed=0)
    batch = {"x": jnp.asarray(data["x"], dtype), "y": jnp.asarray(data["y"])}
    model, loss_fn = mlp_classifier(hidden=(hidden,))
    params = init_mlp(model, jax.random.PRNGKey(0), 64, dtype)
    return loss_fn, params, batch


def mnist_like(dtype=jnp.float32, n=256):
    """784-256-10 tanh MLP on N = 256 synthetic examples (the issue-17 guard model)."""
    model, loss_fn = mlp_classifier((256,), num_classes=10, activation="tanh")
    params = init_mlp(model, jax.random.PRNGKey(0), 784, dtype)
    data = make_classification(n, dim=784, num_classes=10, seed=0)
    batch = {"x": jnp.asarray(data["x"], dtype), "y": jnp.asarray(data["y"])}
    return loss_fn, params, batch


def jitted(module):
    """``jax.jit`` of ``y ↦ module(0, y, None)`` with the module's arrays as arguments (the
    batch is not baked into the program as a constant) and its functions closed over."""
    dyn, static = eqx.partition(module, eqx.is_array)
    fn = jax.jit(lambda dyn, y: eqx.combine(dyn, static)(0.0, y, None))
    return lambda y: fn(dyn, y)


FIELDS = [
    ("gd", "cg", "exact"),
    ("ngd", "weak_field", "exact"),
    ("ngd", "cg", "exact"),
    ("ngd", "woodbury", "exact"),
    ("grd", "weak_field", "exact"),
    ("grd", "weak_field", "first_order"),
    ("grd", "cg", "exact"),
    ("grd", "woodbury", "exact"),
    ("grd", "cg", "first_order"),
    ("ngd2", "cg", "exact"),
]


def field_costs(loss_fn, params, batch, eps, fields=FIELDS, sde=True):
    """Per-evaluation time of each field under ``jax.jit`` and its ratio to one jit'd batch
    gradient; the dispatch overhead of a trivial jit'd call on the same arguments is timed
    on its own (and subtracted in the last ratio column)."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    weights = mean_weights(batch["y"].shape[0], dtype)
    grad = jax.jit(lambda p, b: weighted_grad(loss_fn, p, b, weights))
    v = jax.tree_util.tree_map(lambda x: 0.01 * jnp.ones_like(x), params)
    t_grad = timeit(grad, params, batch)
    noop = jax.jit(lambda p, b: jax.tree_util.tree_map(lambda x: x[:1], p))
    t_call = timeit(noop, params, batch)
    filt = eqx.filter_jit(lambda f, y: jax.tree_util.tree_map(lambda x: x[:1], y))
    gd = flow_field(loss_fn, batch, flow="gd", dtype=dtype)
    t_filter = timeit(filt, gd, params)
    rows = [
        ("call overhead: jax.jit, trivial body, same arguments", t_call, t_call / t_grad, ""),
        ("call overhead: eqx.filter_jit, trivial body, field as argument", t_filter,
         t_filter / t_grad, "what bench_flows timed before issue 17"),
        ("batch gradient ∇f", t_grad, 1.0, ""),
    ]  # fmt: skip
    for flow, inverse, christoffel in fields:
        field = flow_field(
            loss_fn, batch, flow=flow, eps=jnp.asarray(eps, dtype), inverse=inverse,
            christoffel=christoffel, dtype=dtype,
        )  # fmt: skip
        y = (params, v) if flow in ("grd", "ngd2") else params
        t = timeit(jitted(field), y)
        note = ""
        if inverse == "cg" and flow != "gd":
            rhs = y if flow not in ("grd", "ngd2") else v
            _, info = jax.jit(
                lambda p, r, f=field: _metric_inverse(
                    loss_fn, p, batch, r, f.eps, "cg", **dict(f.inverse_options)
                )
            )(params, rhs)
            note = f"CG iterations: {int(info.num_steps)}"
        name = f"{flow} ({inverse}" + (f", Γ {christoffel})" if flow == "grd" else ")")
        rows.append((name, t, t / t_grad, note))
    if sde:
        diff = SGDDiffusion(loss_fn, batch, temperature=jnp.asarray(0.01, dtype))
        u = jax.random.normal(jax.random.PRNGKey(0), (batch["y"].shape[0],), dtype)
        dyn, static = eqx.partition(diff, eqx.is_array)
        f = jax.jit(lambda dyn, w, u: eqx.combine(dyn, static)(0.0, w, None).mv(u))
        t = timeit(f, dyn, params, u)
        rows.append(("sgd_sde diffusion Cᵀu", t, t / t_grad, ""))
    return [(n_, t, r, (t - t_call) / (t_grad - t_call), note) for n_, t, r, note in rows]


def table(rows):
    lines = ["| vector field | time per evaluation | ÷ batch gradient | ÷ gradient, call "
             "overhead subtracted | note |", "|---|---|---|---|---|"]  # fmt: skip
    for name, t, ratio, net, note in rows:
        net_s = "" if name.startswith("call overhead") else f"{net:.2f}"
        lines.append(f"| {name} | {t * 1e3:.3f} ms | {ratio:.2f} | {net_s} | {note} |")
    return lines


def guards(rows, label):
    """Regression guards of issue 17: GRD right-hand side ≤ 3.0×, first order ≤ 2.0×."""
    by = {r[0]: r[2] for r in rows}
    out = []
    for name, limit in [
        ("grd (weak_field, Γ exact)", 3.0),
        ("grd (weak_field, Γ first_order)", 2.0),
    ]:
        ratio = by[name]
        verdict = "PASS" if ratio <= limit else "FAIL"
        out.append(f"- guard {label}: {name} = {ratio:.2f}× a gradient (≤ {limit}): {verdict}")
    return out


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
    ap.add_argument("--no-integration", action="store_true", help="skip the GRD integrations")
    args = ap.parse_args()

    loss_fn, params, batch = problem(args.n, args.hidden, jnp.float64)
    d = sum(x.size for x in jax.tree_util.tree_leaves(params))
    lam = float(grd.lambda_max(loss_fn, params, batch))
    eps = args.c / lam
    load0 = load()
    rows = field_costs(loss_fn, params, batch, eps)
    load1 = load()
    # the guard model of issue 17: 784-256-10, N = 256, float32
    lf, p32, b32 = mnist_like()
    lam32 = float(grd.lambda_max(lf, p32, b32))
    guard_fields = [("gd", "cg", "exact"), ("ngd", "weak_field", "exact"),
                    ("grd", "weak_field", "exact"), ("grd", "weak_field", "first_order"),
                    ("ngd2", "weak_field", "exact")]  # fmt: skip
    rows32 = field_costs(lf, p32, b32, args.c / lam32, guard_fields, sde=False)
    load2 = load()
    integ = []
    if not args.no_integration:
        for dtype in (jnp.float32, jnp.float64):
            lf_, p, b = problem(args.n, args.hidden, dtype)
            integ.append(grd_integration(lf_, p, b, eps, args.t1, dtype))

    lines = [
        f"digits MLP 64-{args.hidden}-10 (d = {d}), N = {args.n}, ε = {args.c}/λ_max(D(w₀)) "
        f"= {eps:.4g} (λ_max = {lam:.4g}), float64 vector fields, every field and the "
        "gradient timed under `jax.jit` (arrays as arguments)",
        "",
        f"{load0} (before); {load1} (after)",
        "",
        *table(rows),
        "",
        f"784-256-10 tanh MLP (d = {sum(x.size for x in jax.tree_util.tree_leaves(p32))}), "
        f"N = 256 synthetic examples, float32, ε = {args.c}/λ_max = {args.c / lam32:.4g}",
        "",
        f"{load2} (after)",
        "",
        *table(rows32),
        "",
        *guards(rows, "digits float64"),
        *guards(rows32, "784-256-10 float32"),
    ]
    if integ:
        lines += [
            "",
            f"GRD integration (CG, exact Γ, Tsit5 + PID defaults), t ∈ [0, {args.t1}]:",
            "",
            "| dtype | steps | rejected | first call (compile + run) | second call | ok |",
            "|---|---|---|---|---|---|",
        ]
    for r in integ:
        lines.append(
            f"| {r['dtype']} | {r['steps']} | {r['rejected']} | {r['first']:.2f} s | "
            f"{r['run']:.2f} s | {r['ok']} |"
        )
    if integ:
        lines += ["", load()]
    table_s = "\n".join(lines)
    print(table_s)

    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}, jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}, equinox {eqx.__version__}, lineax {lineax.__version__}"
    )
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    block = f"\n## bench_flows.py — {stamp}\n\n{machine}\n\n{table_s}\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Flows: benchmarks and the GRD–NGD experiment\n")
    with RESULTS.open("a") as fh:
        fh.write(block)
    print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
