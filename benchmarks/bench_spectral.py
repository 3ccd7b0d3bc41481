"""Spectral density and diagonal of D against curvlinops' equivalents (issue 17).

On the 784-256-10 MLP (N = 256, float32, CPU): grd ``diffusion_spectral_density`` (stochastic
Lanczos quadrature, P probes × m steps) against curvlinops ``lanczos_approximate_spectrum``
(Papyan's LanczosApproxSpec, ``num_repeats`` = P, ``ncv`` = m), and grd ``diffusion_diagonal``
(exact, and Hutchinson with S probes) against curvlinops ``hutchinson_diag`` (S products).
curvlinops runs on its ``EFLinearOperator``, the *uncentred* (1/N) Σ g_a g_aᵀ = D + ḡḡᵀ (it has
no centred operator; the rank-one ḡḡᵀ changes neither the cost of a product nor the bulk of
the density); the diagonal's accuracy is measured against grd's exact diagonal of D (+ ḡ² for
curvlinops). The D–Hessian alignment has no peer equivalent. The load average is printed.

Run in the peers' venv (benchmarks/requirements-peers.txt): ``python benchmarks/bench_spectral.py``;
writes ``benchmarks/results/spectral.md``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers as bp  # noqa: E402
from _common import write_results  # noqa: E402

import grd  # noqa: E402
from grd._tree import tree_ravel  # noqa: E402

P, M, S = 8, 30, 32


def load() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def best_of(fn, repeat=3):
    """Smallest wall time of ``fn()`` over ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    before = load()
    prob = bp.setup((784, 256, 10), 256)
    loss_fn, params, batch = prob["loss_fn"], prob["params"], prob["batch"]
    key = jax.random.PRNGKey(0)
    slq = lambda: jax.block_until_ready(  # noqa: E731
        grd.diffusion_spectral_density(
            loss_fn, params, batch, num_probes=P, num_matvecs=M, key=key
        ).density
    )
    diag_exact = lambda: jax.block_until_ready(  # noqa: E731
        grd.diffusion_diagonal(loss_fn, params, batch)
    )
    diag_h = lambda: jax.block_until_ready(  # noqa: E731
        grd.diffusion_diagonal(loss_fn, params, batch, method="hutchinson", num_samples=S, key=key)
    )
    exact = np.asarray(tree_ravel(diag_exact())[0])
    hut = np.asarray(tree_ravel(diag_h())[0])
    gbar = np.asarray(
        tree_ravel(
            jax.grad(lambda p: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, batch)))(params)
        )[0]
    )
    rows = [
        ["SLQ density", f"P = {P} probes × m = {M}", best_of(slq), None],
        ["diagonal, exact", "per-example gradients, one pass", best_of(diag_exact), 0.0],
        ["diagonal, Hutchinson", f"S = {S} products", best_of(diag_h),
         float(np.linalg.norm(hut - exact) / np.linalg.norm(exact))],
    ]  # fmt: skip
    peer = {}
    if bp.torch is not None and bp.curv_ns is not None:
        import curvlinops

        torch = bp.torch
        model = bp.torch_model(params)
        EF = bp.curvlinops_ef(model, prob["Xt"], prob["yt"])
        torch.manual_seed(0)
        peer["SLQ density"] = best_of(
            lambda: curvlinops.lanczos_approximate_spectrum(EF, ncv=M, num_repeats=P)
        )
        est = curvlinops.hutchinson_diag(EF, S).numpy()
        peer["diagonal, Hutchinson"] = best_of(lambda: curvlinops.hutchinson_diag(EF, S))
        # curvlinops' exact target: diag(D + ḡḡᵀ) = diag D + ḡ², in torch's parameter order
        ref_ef = bp.flat_torch_order(tree_ravel_like(params, exact + gbar**2))
        peer["diagonal, Hutchinson err"] = float(
            np.linalg.norm(est - ref_ef) / np.linalg.norm(ref_ef)
        )
    lines = [
        "| quantity | grd setting | grd s | grd rel. error | curvlinops s | curvlinops rel. error "
        "| curvlinops / grd |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, setting, t, err in rows:
        tp = peer.get(name)
        ep = peer.get(name + " err")
        lines.append(
            f"| {name} | {setting} | {t:.3g} | {'—' if err is None else f'{err:.2g}'} | "
            f"{'n/a' if tp is None else f'{tp:.3g}'} | {'—' if ep is None else f'{ep:.2g}'} | "
            f"{'n/a' if tp is None else f'{tp / t:.2g}'} |"
        )
    body = (
        "784-256-10 MLP (d = 203 530), N = 256, float32, CPU; the smallest of 3 timed calls "
        "after a warm-up (compile) call. grd's Hutchinson error is against grd's exact diagonal "
        "of D; curvlinops' against the exact diagonal of its uncentred operator (D + ḡ²). "
        "curvlinops' density is Papyan's LanczosApproxSpec on D + ḡḡᵀ with the same probes "
        "and steps (and its own boundary estimate: extra products).\n\n"
        f"- before: {before}\n- after: {load()}\n\n" + "\n".join(lines)
    )
    print(body)
    print(f"\nwritten to {write_results('spectral', 'Spectral density and diagonal of D', body)}")


def tree_ravel_like(params, flat):
    """A flat vector in ravel_pytree order as a pytree like ``params``."""
    return tree_ravel(params)[1](jnp.asarray(flat))


if __name__ == "__main__":
    main()
