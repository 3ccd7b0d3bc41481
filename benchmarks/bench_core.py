"""Cost of the matrix-free core against one jit'd batch gradient (issue 2).

For MLPs 64-32-10 (N=256), 784-256-10 (N=256) and 784-1024-1024-10 (N=128), float32, CPU:
time of D·v, Γ_first(v,v), ½∂g(v,v) divided by the time of one gradient of the mean loss on
the same batch, measured in one run; the compiled working memory of D·v over that of the
gradient; and the crossover in d between the dense D (then D @ v) and the matrix-free product.

Run: ``python benchmarks/bench_core.py [--quick]``; writes ``benchmarks/results/core.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_temp_bytes, timeit, write_results  # noqa: E402

from grd._christoffel import _christoffel_first, _metric_derivative  # noqa: E402
from grd._diffusion import _diffusion_matvec, diffusion_matrix  # noqa: E402
from grd.data import make_classification  # noqa: E402
from grd.models.mlp import init_mlp, mlp_classifier  # noqa: E402


def problem(sizes, n, seed=0):
    *hidden, out = sizes[1:]
    model, loss_fn = mlp_classifier(hidden, num_classes=out, activation="tanh")
    params = init_mlp(model, jax.random.PRNGKey(seed), sizes[0])
    batch = make_classification(n, dim=sizes[0], num_classes=out, seed=seed)
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    v = jax.tree_util.tree_map(
        lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape, p.dtype), params
    )
    return loss_fn, params, batch, v


def ratios(sizes, n):
    loss_fn, params, batch, v = problem(sizes, n)
    mean_loss = lambda p, b: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, b))
    grad = jax.jit(jax.grad(mean_loss))
    dv = jax.jit(lambda p, b, u: _diffusion_matvec(loss_fn, p, b, u))
    gam = jax.jit(lambda p, b, u: _christoffel_first(loss_fn, p, b, u, 0.1))
    half = jax.jit(lambda p, b, u: _metric_derivative(loss_fn, p, b, u, 0.1))
    t_grad = timeit(grad, params, batch)
    row = {
        "model": "-".join(map(str, sizes)),
        "N": n,
        "d": sum(x.size for x in jax.tree_util.tree_leaves(params)),
        "grad ms": 1e3 * t_grad,
        "D·v": timeit(dv, params, batch, v) / t_grad,
        "Γ_first(v,v)": timeit(gam, params, batch, v) / t_grad,
        "½∂g(v,v)": timeit(half, params, batch, v) / t_grad,
        "mem D·v / grad": peak_temp_bytes(dv, params, batch, v)
        / peak_temp_bytes(grad, params, batch),
    }
    return row


def crossover(n=64, widths=(2, 4, 8, 16, 32, 64, 128)):
    """Dense D (N per-example gradients, CᵀC, then D @ v) vs matrix-free, both jit'd, as d grows."""
    rows = []
    for w in widths:
        loss_fn, params, batch, v = problem((16, w, 10), n)
        dense = jax.jit(
            lambda p, b, u, f=loss_fn: (
                diffusion_matrix(f, p, b) @ jax.flatten_util.ravel_pytree(u)[0]
            )
        )
        mf = jax.jit(lambda p, b, u, f=loss_fn: _diffusion_matvec(f, p, b, u))
        d = sum(x.size for x in jax.tree_util.tree_leaves(params))
        rows.append(
            (d, timeit(dense, params, batch, v, repeat=3), timeit(mf, params, batch, v, repeat=3))
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="skip the largest model and shorten the crossover"
    )
    args = ap.parse_args(argv)
    configs = [((64, 32, 10), 256), ((784, 256, 10), 256)]
    if not args.quick:
        configs.append(((784, 1024, 1024, 10), 128))
    rows = [ratios(s, n) for s, n in configs]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(f"{r[h]:.3g}" if isinstance(r[h], float) else str(r[h]) for h in head)
            + " |"
        )
    table = "\n".join(lines)
    cross = crossover(widths=(2, 8, 32) if args.quick else (2, 4, 8, 16, 32, 64, 128))
    ctab = [
        "| d | dense D then D·v (ms) | matrix-free D·v (ms) | dense / matrix-free |",
        "|---|---|---|---|",
    ]
    for d, td, tm in cross:
        ctab.append(f"| {d} | {1e3 * td:.3g} | {1e3 * tm:.3g} | {td / tm:.3g} |")
    body = (
        "Time of each product divided by one jit'd gradient of the mean loss on the same model and "
        "batch (float32, CPU, median of 7 timings); `mem` = XLA compiled temp+output bytes of D·v "
        "over those of the gradient. Targets: D·v ≤ 2.0, Γ ≤ 2.5, ½∂g ≤ 2.5, memory ≤ 3.\n\n"
        + table
        + "\n\nDense-vs-matrix-free crossover (MLP 16-w-10, N = 64):\n\n"
        + "\n".join(ctab)
    )
    print(body)
    print(f"\nwritten to {write_results('core', 'Core products against one batch gradient', body)}")


if __name__ == "__main__":
    main()
