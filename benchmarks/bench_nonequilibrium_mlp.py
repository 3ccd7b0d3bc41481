"""Non-equilibrium SGD on an MLP at a verified minimum with weight decay (issue 13, experiment 3).

A tanh MLP 64-16-10 on the digits with weight decay λ (default 10⁻²: strong enough that the
slowest direction relaxes within the run, which the λ = 10⁻³ run of
``bench_nonequilibrium.py`` did not), polished to a minimum by L-BFGS + Newton (gradient norm
and the sign of the Hessian spectrum printed). From w*, plain SGD (η = f/h_max) and heavy-ball
momentum 0.9 (optax convention, η(1 − μ), the same effective step), minibatches drawn with
replacement, record per step the projections of w − w* on three bases — the top-8 eigenvectors
of H, the top-8 of D (``grd.analysis.eigen_basis``) and the bottom-8 of H (the slowest
directions) — and |w − w*|².

Printed before any verdict: the stationarity diagnostic (|w − w*|² in ten consecutive blocks
and its drift between halves against the batch-means fluctuation; ``grd.analysis.stationarity``
on the slow and the stiff coordinates; τ_int of the slowest coordinate against the batch
length; mean |w − w*|² against the linear tr Σ). Then measured against predicted areal velocities
(``predicted_areal_velocity`` from the dense H and D at w*) over the 28 planes of each basis with
``compare_rates`` (slope and correlation with jackknife errors, Hotelling T² / F), z-scores from
zero, and the reversible Fourier surrogate and the time-shuffled series as nulls.

Run: ``python benchmarks/bench_nonequilibrium_mlp.py`` (writes
``benchmarks/results/nonequilibrium_mlp.md`` and ``nonequilibrium_mlp_*.png``); ``--quick`` for a
smoke run.
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
from bench_nonequilibrium import make_sgd, minimise, mlp_model  # noqa: E402
from bench_nonequilibrium_scan import provenance  # noqa: E402

K = 8
N_BATCHES = 50
N_SURR = 20


def compare(y, pred):
    """compare_rates over the 28 planes; orientation fixed so that the prediction is ≥ 0."""
    br = np.asarray(ga.areal_velocity_batches(y, n_batches=N_BATCHES, check_batches=False))
    i, j = ga.plane_pairs(K)
    br, p = br[:, i, j], np.asarray(pred)[i, j]
    sign = np.where(p < 0, -1.0, 1.0)
    br, p = br * sign, p * sign
    cr = ga.compare_rates(br, p)
    m, se = np.asarray(cr.measured), np.asarray(cr.stderr)
    return {"cr": cr, "pred": p, "meas": m, "se": se, "z0": m / se}


def null_z(y, key):
    """z = rate/se over 28 planes for N_SURR reversible surrogates and one shuffled series."""
    i, j = ga.plane_pairs(K)
    zs = []
    for s in range(N_SURR):
        ys = ga.reversible_surrogate(y, jax.random.fold_in(key, s))
        r, e = ga.areal_velocity(ys, n_batches=N_BATCHES, check_batches=False)
        zs.append(np.asarray(r)[i, j] / np.asarray(e)[i, j])
    perm = jax.random.permutation(jax.random.fold_in(key, 999), y.shape[0])
    r, e = ga.areal_velocity(y[perm], n_batches=N_BATCHES, check_batches=False)
    return np.concatenate(zs), np.asarray(r)[i, j] / np.asarray(e)[i, j]


def plot_r2(series, trace, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for (name, r2), c in zip(series.items(), ("C0", "C1"), strict=True):
        r2 = np.asarray(r2)
        w = max(1, r2.size // 400)
        blocks = r2[: r2.size // w * w].reshape(-1, w).mean(1)
        ax.plot(
            np.arange(blocks.size) * w, blocks, color=c, lw=0.8, label=f"{name} ({w}-step means)"
        )
        ax.axhline(trace[name], color=c, ls="--", lw=1, label=f"{name}: linear tr Σ")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step (after burn-in)")
    ax.set_ylabel("|w − w*|²")
    ax.set_title("MLP 64-16-10: distance from the minimum over the run", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.0 * len(results), 3.9))
    for ax, (name, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        p, m, s = r["pred"], r["meas"], r["se"]
        ax.errorbar(p, m, yerr=2 * s, fmt="o", ms=3, capsize=2, label="measured ± 2 se")
        lim = [min(p.min(), m.min()), max(p.max(), m.max())]
        ax.plot(lim, lim, "k--", lw=1, label="measured = predicted")
        cr = r["cr"]
        ax.set_title(
            f"{name}\nslope {float(cr.slope):.2f} ± {float(cr.slope_se):.2f}, corr "
            f"{float(cr.corr):.2f} ± {float(cr.corr_se):.2f}",
            fontsize=8,
        )
        ax.set_xlabel("predicted areal velocity per step")
        ax.set_ylabel("measured areal velocity per step")
        ax.ticklabel_format(style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--wd", type=float, default=1e-2, help="weight decay λ")
    ap.add_argument("--frac", type=float, default=0.5, help="η·h_max of the plain-SGD run")
    args = ap.parse_args(argv)
    steps = args.steps or (50_000 if args.quick else 800_000)
    burn = min(20_000, steps // 10)
    out = Path(tempfile.mkdtemp()) if args.quick else RESULTS_DIR
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    key = jax.random.key(7)

    raw = load_digits(dtype=np.float64)
    data = {"x": jnp.asarray(raw["x"]), "y": jnp.asarray(raw["y"])}
    loss, batch_loss, w0 = mlp_model(args.wd)
    wstar, hess, gnorm, fstar = minimise(loss, w0, data)
    lam = np.linalg.eigvalsh(np.asarray(hess))
    diff = grd.diffusion_matrix(loss, wstar, data)
    bases = {
        "top-8 H": ga.eigen_basis(hess, K),
        "top-8 D": ga.eigen_basis(diff, K),
        "bottom-8 H (slowest)": ga.eigen_basis(-hess, K),
    }
    big = jnp.concatenate(list(bases.values()), axis=1)
    d = int(wstar.size)
    h_max = float(lam[-1])
    t_setup = time.perf_counter() - t0
    sgd = make_sgd(batch_loss, data, big, wstar, 32, steps)
    mu = 0.9
    runs = {"μ = 0": (args.frac / h_max, 0.0), "μ = 0.9": ((1 - mu) * args.frac / h_max, mu)}

    lines_st, results, r2s, traces, nulls = [], {}, {}, {}, {}
    for s, (name, (eta, m_)) in enumerate(runs.items()):
        y_all, r2 = sgd(eta, m_, 11 + s)
        y_all, r2 = np.asarray(y_all[burn:]), np.asarray(r2[burn:])
        r2s[name] = r2
        sig, _ = ga.sgd_stationary_covariance(hess, diff, eta, 32, momentum=m_)
        traces[name] = float(jnp.trace(sig))
        ys = {bn: y_all[:, k * K : (k + 1) * K] for k, bn in enumerate(bases)}
        # --- stationarity, printed first
        blocks = r2[: r2.size // 10 * 10].reshape(10, -1).mean(1)
        st_r2 = ga.stationarity(r2[:, None], n_batches=16)
        st_slow = ga.stationarity(ys["bottom-8 H (slowest)"], n_batches=8)
        st_top = ga.stationarity(ys["top-8 H"], n_batches=16)
        st_d = ga.stationarity(ys["top-8 D"], n_batches=16)
        tau_slow = np.asarray(ga.integrated_autocorrelation_time(ys["bottom-8 H (slowest)"]))
        tau_top = np.asarray(ga.integrated_autocorrelation_time(ys["top-8 H"]))
        tau_d = np.asarray(ga.integrated_autocorrelation_time(ys["top-8 D"]))
        blen = y_all.shape[0] // N_BATCHES
        stationary = bool(
            st_r2.stationary & st_slow.stationary & st_top.stationary & st_d.stationary
        )
        lines_st += [
            f"### {name}: η = {eta:.4g} (η_eff·h_max = {eta / (1 - m_) * h_max:.2f})",
            "",
            "- |w − w*|² in ten consecutive blocks: "
            + ", ".join(f"{v:.3g}" for v in blocks)
            + f"; halves drift z = {float(st_r2.z[0]):+.2f} "
            f"(threshold {float(st_r2.threshold):.2f}),"
            f" variance ratio {float(st_r2.variance_ratio[0]):.2f}; mean {r2.mean():.3g} against "
            f"the linear tr Σ = {traces[name]:.3g} (ratio {r2.mean() / traces[name]:.2f}).",
            f"- slowest 8 coordinates (bottom of H, λ = {lam[0]:.2e} … {lam[K - 1]:.2e}): drift "
            f"(8 batches per half) "
            f"max |z| = {float(st_slow.max_abs_z):.2f} / {float(st_slow.threshold):.2f}, variance "
            f"ratio {np.min(np.asarray(st_slow.variance_ratio)):.2f} … "
            f"{np.max(np.asarray(st_slow.variance_ratio)):.2f}; τ_int "
            f"{np.min(tau_slow):.0f} … {np.max(tau_slow):.0f} steps; 1/(η_eff λ_min) = "
            f"{(1 - m_) / (eta * lam[0]):.0f} steps; run after burn-in {y_all.shape[0]:,} steps "
            f"= {y_all.shape[0] * eta * lam[0] / (1 - m_):.0f} slowest relaxation times.",
            f"- top-8 H coordinates: drift max |z| = {float(st_top.max_abs_z):.2f}; τ_int ≤ "
            f"{np.max(tau_top):.1f}; top-8 D coordinates: drift max |z| = "
            f"{float(st_d.max_abs_z):.2f}; τ_int ≤ {np.max(tau_d):.1f}; batch length {blen:,}.",
            f"- verdict: {'stationary' if stationary else 'NOT shown stationary'} (all four "
            "diagnostics below their Bonferroni thresholds).",
            "",
        ]
        for bn in ("top-8 H", "top-8 D"):
            pred = ga.predicted_areal_velocity(hess, diff, eta, 32, momentum=m_, basis=bases[bn])
            results[f"{name}, {bn}"] = compare(ys[bn], pred)
            results[f"{name}, {bn}"]["stationary"] = stationary
            results[f"{name}, {bn}"]["tau"] = float(np.max(tau_top if bn == "top-8 H" else tau_d))
        nulls[name] = null_z(ys["top-8 H"], jax.random.fold_in(key, s))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)

    plot_r2(r2s, traces, out / "nonequilibrium_mlp_r2.png")
    plot_scatter(results, out / "nonequilibrium_mlp_scatter.png")
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    n_pos = int(np.sum(lam > 0))
    lines = [
        provenance(),
        "",
        f"Wall time {wall:.0f} s (setup {t_setup:.0f} s); load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end (2 cores shared with other jobs). Float64.",
        "",
        f"Model: tanh MLP 64-16-10 on the digits (N = 1797), weight decay λ = {args.wd:g}, "
        f"d = {d}. Minimum by L-BFGS + Newton: |∇f(w*)| = {gnorm:.1e}, f(w*) = {fstar:.4f}; "
        f"Hessian eigenvalues {lam[0]:.3e} … {h_max:.4f}, {n_pos}/{d} positive "
        f"({'a strict minimum' if n_pos == d else 'NOT a strict minimum'}). SGD from w*, b = 32, "
        f"minibatches drawn with replacement (prediction with `n=None`), {steps:,} steps per "
        f"run, first {burn:,} discarded, {N_BATCHES} batch means. Plain SGD at η·h_max = "
        f"{args.frac:g}; heavy ball μ = 0.9 (optax convention) at η = (1 − μ)·{args.frac:g}/h_max "
        "(the same effective step).",
        "",
        "## Stationarity (printed before any verdict)",
        "",
        *lines_st,
        "## Measured against predicted (28 planes per basis)",
        "",
        "Prediction: `predicted_areal_velocity(H, D, η, 32, momentum=μ, basis=B)` with the dense "
        "H and D at w*. Fits by `compare_rates` (jackknife over batch means; Hotelling T² with "
        "the cross-plane covariance; F ≈ 1 when measured = predicted). z(0) = measured/se "
        "(distance from zero current); z = (measured − predicted)/se.",
        "",
        "| run, basis | slope ± jk se | corr ± jk se | F (p) | rms z | max abs z | max abs z(0) "
        "| planes with abs z(0) > 3.3 | max τ_int | stationary |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cr = r["cr"]
        z = np.asarray(cr.z)
        lines.append(
            f"| {name} | {float(cr.slope):.2f} ± {float(cr.slope_se):.2f} | "
            f"{float(cr.corr):.2f} ± {float(cr.corr_se):.2f} | {float(cr.f_stat):.1f} "
            f"({float(cr.p_value):.1g}) | {np.sqrt(np.mean(z**2)):.1f} | {np.max(np.abs(z)):.1f} | "
            f"{np.max(np.abs(r['z0'])):.1f} | {int(np.sum(np.abs(r['z0']) > 3.3))}/28 | "
            f"{r['tau']:.1f} | {'yes' if r['stationary'] else 'no'} |"
        )
    lines += [
        "",
        "Strongest predicted planes (top-8 H basis), ×10⁻⁵ per step:",
        "",
        "| run | plane rank | predicted | measured ± se | z(0) |",
        "|---|---|---|---|---|",
    ]
    for name in runs:
        r = results[f"{name}, top-8 H"]
        for q in np.argsort(-r["pred"])[:4]:
            lines.append(
                f"| {name} | {q} | {r['pred'][q] * 1e5:.2f} | {r['meas'][q] * 1e5:.2f} ± "
                f"{r['se'][q] * 1e5:.2f} | {r['z0'][q]:.1f} |"
            )
    lines += [
        "",
        f"## Nulls through the same estimator (top-8 H basis; {N_SURR} reversible Fourier "
        "surrogates × 28 planes, and the series shuffled in time)",
        "",
        "| run | surrogate: sd z | max abs z | fraction abs z > 3 | shuffled: sd z | max abs z |",
        "|---|---|---|---|---|---|",
    ]
    for name, (zs, zsh) in nulls.items():
        lines.append(
            f"| {name} | {np.std(zs):.2f} | {np.max(np.abs(zs)):.1f} | "
            f"{np.mean(np.abs(zs) > 3):.1%} | {np.std(zsh):.2f} | {np.max(np.abs(zsh)):.1f} |"
        )
    lines += [
        "",
        "Figures: `nonequilibrium_mlp_r2.png` (|w − w*|² over the run against the linear "
        "tr Σ), `nonequilibrium_mlp_scatter.png` (measured vs predicted ± 2 se, per run and "
        "basis). Verdict: hand-written in `nonequilibrium_review.md`.",
    ]
    body = "\n".join(lines)
    if args.quick:
        print(body)
        print(f"(quick: figures in {out})")
    else:
        print(
            write_results("nonequilibrium_mlp", "Non-equilibrium SGD: MLP with weight decay", body)
        )
        print(body)


if __name__ == "__main__":
    main()
