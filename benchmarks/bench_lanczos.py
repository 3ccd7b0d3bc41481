"""Cost of Lanczos against its own products (issue 17).

For MLPs 784-256-10 (N = 256) and 784-1024-1024-10 (N = 128), float32, CPU: the time of
``diffusion_spectrum(k=10, method="lanczos")`` (m = 30 products, full reorthogonalisation)
divided by 30 standalone jit'd D·v products, next to the previous implementation (matfree's
``tridiag_sym`` with full reorthogonalisation on the same matvec); the same for the Hessian
(``hessian_spectrum`` against 30 jit'd HVPs); compile time and three repeated eager calls
(no retracing: the second and third calls cost the run time only). The machine's load
average is printed with every table. Targets: Lanczos / products ≤ 1.5, and ≥ 2× faster
than scipy ``eigsh`` on curvlinops' operator (the fastest peer of bench_peers.py) with the
accuracy of both against the exact Gram spectrum.

Run: ``python benchmarks/bench_lanczos.py [--quick]``; writes ``benchmarks/results/lanczos.md``.
For the eigsh columns, run it in the peers' venv (benchmarks/requirements-peers.txt, which
installs grd too); without torch/curvlinops they read "n/a".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timeit, write_results  # noqa: E402
from bench_core import problem  # noqa: E402

from grd._diffusion import _diffusion_matvec, diffusion_spectrum  # noqa: E402
from grd._primitives import mean_weights, weighted_hvp  # noqa: E402
from grd._spectral import hessian_spectrum  # noqa: E402
from grd._tree import tree_ravel  # noqa: E402

K, M = 10, 30


def load() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def matfree_lanczos(loss_fn, params, batch):
    """The implementation before issue 17: matfree's tridiag_sym (full reorthogonalisation)."""
    import matfree.decomp
    import matfree.eig

    flat, unravel = tree_ravel(params)
    v0 = jax.random.normal(jax.random.PRNGKey(0), flat.shape, flat.dtype)

    def matvec(x):
        return tree_ravel(_diffusion_matvec(loss_fn, params, batch, unravel(x)))[0]

    eigh = matfree.eig.eigh_partial(matfree.decomp.tridiag_sym(M, custom_vjp=False))
    lam, _ = eigh(matvec, v0)
    return jnp.sort(lam)[::-1][:K]


def eigsh_peer(sizes, n, t_lz, exact):
    """scipy ``eigsh`` on curvlinops' EF − ḡḡᵀ (the fastest peer operator of bench_peers).

    Needs torch and curvlinops (benchmarks/requirements-peers.txt, their own venv); without
    them the columns read "n/a".
    """
    na = {"eigsh on curvlinops s": "n/a", "eigsh / grd": "n/a", "eigsh max rel err": "n/a"}
    try:
        import bench_peers as bp
        from scipy.sparse.linalg import LinearOperator, eigsh
    except ImportError:
        return na
    if bp.torch is None or bp.curv_ns is None:
        return na
    prob = bp.setup(sizes, n)
    model = bp.torch_model(prob["params"])
    EF = bp.curvlinops_ef(model, prob["Xt"], prob["yt"])
    gbar = bp.torch_mean_grad(model, prob["Xt"], prob["yt"])
    torch = bp.torch

    def mv(x):
        xt = torch.from_numpy(np.ascontiguousarray(x.reshape(-1), dtype=np.float32))
        return (EF @ xt - gbar * (gbar @ xt)).numpy()

    op = LinearOperator((prob["d"], prob["d"]), matvec=mv, dtype=np.float32)
    v0 = np.random.default_rng(0).normal(size=prob["d"]).astype(np.float32)
    times = []
    for _ in range(2):  # the first call warms torch up; the smaller time counts
        t0 = time.perf_counter()
        vals = eigsh(op, k=K, which="LA", v0=v0, tol=1e-4, return_eigenvectors=False)
        times.append(time.perf_counter() - t0)
    vals = np.sort(vals)[::-1]
    return {
        "eigsh on curvlinops s": min(times),
        "eigsh / grd": min(times) / t_lz,
        "eigsh max rel err": float(np.max(np.abs(vals - exact) / exact)),
    }


def run(sizes, n, old: bool):
    loss_fn, params, batch, v = problem(sizes, n)
    d = sum(x.size for x in jax.tree_util.tree_leaves(params))
    dv = jax.jit(lambda p, b, u: _diffusion_matvec(loss_fn, p, b, u))
    w = mean_weights(n, jnp.float32)
    hvp = jax.jit(lambda p, b, u: weighted_hvp(loss_fn, p, b, w, u))
    lz = jax.jit(lambda p, b: diffusion_spectrum(loss_fn, p, b, K, method="lanczos").eigenvalues)
    hz = jax.jit(lambda p, b: hessian_spectrum(loss_fn, p, b, K, num_matvecs=M).eigenvalues)
    t0 = time.perf_counter()
    jax.block_until_ready(lz(params, batch))
    compile_s = time.perf_counter() - t0
    # interleave: products, Lanczos, products again (the smaller product time is the unit)
    t_dv = timeit(dv, params, batch, v)
    t_lz = timeit(lz, params, batch, repeat=5, min_time=0.0)
    t_dv = min(t_dv, timeit(dv, params, batch, v))
    t_hvp = timeit(hvp, params, batch, v)
    t_hz = timeit(hz, params, batch, repeat=5, min_time=0.0)
    t_hvp = min(t_hvp, timeit(hvp, params, batch, v))
    eager = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(diffusion_spectrum(loss_fn, params, batch, K, method="lanczos"))
        eager.append(time.perf_counter() - t0)
    row = {
        "model": "-".join(map(str, sizes)),
        "N": n,
        "d": d,
        "D·v ms": 1e3 * t_dv,
        "Lanczos ms": 1e3 * t_lz,
        "Lanczos / 30 D·v": t_lz / (M * t_dv),
        "HVP ms": 1e3 * t_hvp,
        "Hessian Lanczos / 30 HVP": t_hz / (M * t_hvp),
        "compile s": compile_s,
        "eager calls s": " / ".join(f"{t:.3g}" for t in eager),
    }
    exact = diffusion_spectrum(loss_fn, params, batch, K, chunk_size=16).eigenvalues
    row["max rel err vs Gram"] = float(jnp.max(jnp.abs(lz(params, batch) - exact) / exact))
    row.update(eigsh_peer(sizes, n, t_lz, np.asarray(exact)))
    if old:
        mf = jax.jit(lambda p, b: matfree_lanczos(loss_fn, p, b))
        t_mf = timeit(mf, params, batch, repeat=3, min_time=0.0)
        row["matfree (before) / 30 D·v"] = t_mf / (M * t_dv)
        row["max |Δλ| vs matfree"] = float(jnp.max(jnp.abs(mf(params, batch) - lz(params, batch))))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 784-256-10 model")
    ap.add_argument("--no-old", action="store_true", help="skip the matfree comparison")
    args = ap.parse_args(argv)
    configs = [((784, 256, 10), 256)]
    if not args.quick:
        configs.append(((784, 1024, 1024, 10), 128))
    before = load()
    rows = [run(s, n, not args.no_old) for s, n in configs]
    after = load()
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r[h]:.3g}" if isinstance(r[h], float) else str(r[h]) for h in head]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = [
        f"{r['model']}: Lanczos / products = {r['Lanczos / 30 D·v']:.2f} "
        f"(target ≤ 1.5: {'PASS' if r['Lanczos / 30 D·v'] <= 1.5 else 'FAIL'})"
        for r in rows
    ] + [
        f"{r['model']}: scipy eigsh / grd Lanczos = {r['eigsh / grd']:.2f} "
        f"(target ≥ 2: {'PASS' if r['eigsh / grd'] >= 2 else 'FAIL'})"
        for r in rows
        if r["eigsh / grd"] != "n/a"
    ]
    body = (
        f"k = {K} eigenpairs, m = {M} Lanczos steps with full reorthogonalisation, float32, "
        "CPU; median of 5 (Lanczos) and 7 (products) timings, products timed before and after "
        "the Lanczos run (the smaller time is the unit). `eager calls`: three successive "
        "un-jitted calls of diffusion_spectrum (the first compiles). `max rel err vs Gram`: "
        "grd's top-10 against the exact Gram spectrum. `eigsh`: scipy `eigsh(k=10, "
        "which='LA', tol=1e-4)` on curvlinops' `EF − ḡḡᵀ` (torch, float32; the smaller of two "
        "calls), its accuracy against the same Gram spectrum; `eigsh / grd` > 1 means grd is "
        "faster. (n/a: torch/curvlinops not installed, see requirements-peers.txt.)\n\n"
        f"- before the runs: {before}\n- after the runs: {after}\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {v}" for v in verdict)
    )
    print(body)
    print(f"\nwritten to {write_results('lanczos', 'Lanczos against its products', body)}")


if __name__ == "__main__":
    main()
