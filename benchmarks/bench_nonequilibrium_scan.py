"""Non-equilibrium SGD: the areal velocity against η and b, with jackknife errors.

Redoes the η / b scan of ``bench_nonequilibrium.py`` (whose slopes carried weighted-least-squares
errors that ignore the covariance between planes sharing an axis) with
:func:`grd.analysis.compare_rates`: per setting, the slope of measured on predicted areal
velocities (through the origin) and their correlation over the 28 planes of the top-8 Hessian
eigenvectors, with delete-one-batch jackknife errors over 50 batch means, and Hotelling's T²
(F ≈ 1 when measured = predicted). Model: L2-regularised softmax regression on the digits
(λ = 10⁻³, d = 650), at its Newton-polished minimum; plain SGD, minibatches drawn with
replacement; η·h_max ∈ {1/8, 1/4, 1/2, 1} at b = 32 and b ∈ {8, 32, 128} at η·h_max = 1/2.

Scaling. The measured amplitude of a setting is A = Σ_p m_p p_p / |p| (the measured rates
projected on the unit predicted vector; A/|p| is the slope), the predicted one |p|. Local
exponents d log A / d log η and d log A / d log b between neighbouring settings carry errors
from the jackknife errors of the slopes (independent runs). In the small-η limit the linear
theory gives rate ∝ η²/b (exponents 2 and −1).

Run: ``python benchmarks/bench_nonequilibrium_scan.py`` (writes
``benchmarks/results/nonequilibrium_scan.md`` and ``nonequilibrium_scan_jk.png``);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import grd  # noqa: E402
from grd import analysis as ga  # noqa: E402
from grd.data import load_digits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, write_results  # noqa: E402
from bench_nonequilibrium import make_sgd, minimise, softmax_model  # noqa: E402

K = 8
N_BATCHES = 50


def provenance():
    import importlib.metadata as md
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    pk = ", ".join(f"{p} {md.version(p)}" for p in ("numpy", "scipy", "scikit-learn", "mlxtend"))
    return f"Commit {commit}; {pk}."


def fit(y, pred, burn):
    """compare_rates on one run; orientation fixed so that the prediction is ≥ 0."""
    y = y[burn:]
    br = np.asarray(ga.areal_velocity_batches(y, n_batches=N_BATCHES, check_batches=False))
    i, j = ga.plane_pairs(K)
    br, p = br[:, i, j], np.asarray(pred)[i, j]
    sign = np.where(p < 0, -1.0, 1.0)
    br, p = br * sign, p * sign
    cr = ga.compare_rates(br, p)
    tau = float(np.max(np.asarray(ga.integrated_autocorrelation_time(y))))
    return {
        "cr": cr,
        "pred": p,
        "norm": float(np.linalg.norm(p)),
        "tau": tau,
        "batch_len": (y.shape[0] // N_BATCHES),
    }


def local_exponents(xs, rows):
    """d log A / d log x between neighbours; A = slope·|p|, errors from the slopes' jk se."""
    out = []
    for (x0, r0), (x1, r1) in zip(
        zip(xs[:-1], rows[:-1], strict=True), zip(xs[1:], rows[1:], strict=True), strict=True
    ):
        a0 = float(r0["cr"].slope) * r0["norm"]
        a1 = float(r1["cr"].slope) * r1["norm"]
        s0 = float(r0["cr"].slope_se) / float(r0["cr"].slope)
        s1 = float(r1["cr"].slope_se) / float(r1["cr"].slope)
        dl = np.log(x1 / x0)
        out.append(
            (
                x0,
                x1,
                np.log(a1 / a0) / dl,
                np.hypot(s0, s1) / abs(dl),
                np.log(r1["norm"] / r0["norm"]) / dl,
            )
        )
    return out


def plot(scan, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7))
    for col, (key, xlabel) in enumerate(
        (("eta", "η · h_max (b = 32)"), ("b", "b (η·h_max = 1/2)"))
    ):
        xs = np.array([x for x, _ in scan[key]])
        rows = [r for _, r in scan[key]]
        amp = np.array([float(r["cr"].slope) * r["norm"] for r in rows])
        amp_se = np.array([float(r["cr"].slope_se) * r["norm"] for r in rows])
        norm = np.array([r["norm"] for r in rows])
        ax = axes[0, col]
        ax.errorbar(xs, amp, yerr=2 * amp_se, fmt="o", capsize=3, label="measured A ± 2 jk se")
        ax.plot(xs, norm, "k-", lw=1, label="predicted |p| (discrete, D(w*))")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("current amplitude over 28 planes\n(areal velocity per step)")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        sl = np.array([float(r["cr"].slope) for r in rows])
        se = np.array([float(r["cr"].slope_se) for r in rows])
        ax.errorbar(xs, sl, yerr=2 * se, fmt="o", capsize=3, label="slope ± 2 jk se")
        ax.axhline(1.0, color="k", lw=1, ls="--", label="measured = predicted")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("slope, measured on predicted")
        ax.legend(fontsize=7)
    fig.suptitle("Digits softmax regression, plain SGD: rate against η and b", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    steps = args.steps or (50_000 if args.quick else 300_000)
    burn = min(20_000, steps // 10)
    out = Path(tempfile.mkdtemp()) if args.quick else RESULTS_DIR
    t0 = time.perf_counter()
    load0 = os.getloadavg()

    raw = load_digits(dtype=np.float64)
    data = {"x": jnp.asarray(raw["x"]), "y": jnp.asarray(raw["y"])}
    loss, batch_loss, w0 = softmax_model(1e-3)
    wstar, hess, gnorm, _ = minimise(loss, w0, data)
    diff = grd.diffusion_matrix(loss, wstar, data)
    h_max = float(np.linalg.eigvalsh(hess)[-1])
    basis = ga.eigen_basis(hess, K)

    scan = {"eta": [], "b": []}
    runs = {}
    settings = [(f, 32) for f in (0.125, 0.25, 0.5, 1.0)] + [(0.5, 8), (0.5, 128)]
    for s, (frac, b) in enumerate(settings):
        eta = frac / h_max
        y, _ = make_sgd(batch_loss, data, basis, wstar, b, steps)(eta, 0.0, 100 + s)
        runs[(frac, b)] = fit(y, ga.predicted_areal_velocity(hess, diff, eta, b, basis=basis), burn)
        print(f"η·h_max = {frac}, b = {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    for frac in (0.125, 0.25, 0.5, 1.0):
        scan["eta"].append((frac, runs[(frac, 32)]))
    for b in (8, 32, 128):
        scan["b"].append((b, runs[(0.5, b)]))
    plot(scan, out / "nonequilibrium_scan_jk.png")
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()

    lines = [
        provenance(),
        "",
        f"Wall time {wall:.0f} s; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
        "(2 cores shared with other jobs). Float64.",
        "",
        f"Model: digits softmax regression, λ = 10⁻³, d = 650, N = 1797; |∇f(w*)| = {gnorm:.1e}; "
        f"h_max = {h_max:.4f}. Plain SGD from w*, minibatches drawn with replacement "
        f"(prediction with `n=None`), {steps:,} steps per setting, first {burn:,} discarded, "
        f"{N_BATCHES} batch means; planes: the 28 pairs of the top-8 Hessian eigenvectors. "
        "Fits: `grd.analysis.compare_rates` (slope through the origin and correlation with "
        "delete-one-batch jackknife errors; Hotelling T² with the 28 × 28 cross-plane "
        "covariance, F ≈ 1 when measured = predicted). Orientation of each plane fixed so that "
        "its prediction is ≥ 0. A = slope·|p| is the measured current amplitude, |p| the "
        "predicted one (Euclidean norm over the 28 planes). τ_int: the largest integrated "
        "autocorrelation time of the 8 coordinates, against the batch length.",
        "",
        "| η·h_max | b | slope ± jk se | corr ± jk se | F (p) | rms z | A (measured) ± se | "
        "|p| (predicted) | τ_int / batch length |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (frac, b), r in runs.items():
        cr = r["cr"]
        lines.append(
            f"| {frac:g} | {b} | {float(cr.slope):.2f} ± {float(cr.slope_se):.2f} | "
            f"{float(cr.corr):.2f} ± {float(cr.corr_se):.2f} | {float(cr.f_stat):.1f} "
            f"({float(cr.p_value):.1g}) | {float(np.sqrt(np.mean(np.asarray(cr.z) ** 2))):.1f} | "
            f"{float(cr.slope) * r['norm']:.3e} ± {float(cr.slope_se) * r['norm']:.1e} | "
            f"{r['norm']:.3e} | {r['tau']:.0f} / {r['batch_len']} |"
        )
    lines += [
        "",
        "Local exponents of the amplitude (measured ± se from the two slopes' jackknife "
        "errors; predicted from |p|; small-η linear theory: 2 in η, −1 in b):",
        "",
        "| variable | from | to | measured exponent ± se | predicted exponent |",
        "|---|---|---|---|---|",
    ]
    for key, name in (("eta", "η"), ("b", "b")):
        xs = [x for x, _ in scan[key]]
        rows = [r for _, r in scan[key]]
        for x0, x1, e, se, pe in local_exponents(xs, rows):
            lines.append(f"| {name} | {x0:g} | {x1:g} | {e:.2f} ± {se:.2f} | {pe:.2f} |")
    lines += [
        "",
        "Figure: `nonequilibrium_scan_jk.png` (top: amplitude A ± 2 se against the predicted "
        "|p|; bottom: slope ± 2 jk se against 1).",
    ]
    body = "\n".join(lines)
    if args.quick:
        print(body)
        print(f"(quick: figure in {out})")
    else:
        print(
            write_results("nonequilibrium_scan", "Non-equilibrium SGD: rate against η and b", body)
        )
        print(body)


if __name__ == "__main__":
    main()
