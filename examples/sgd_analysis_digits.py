"""SGD through its noise on real data: a reproduction of the shape of three papers' findings.

A tiny fully-connected network (64-H-10, tanh; the "tiny-fc" analogue of theory §6) is trained
on the scikit-learn digits with plain constant-step SGD (optax.sgd, epoch-wise reshuffled
minibatches of size b). The trajectory is recorded with :class:`grd.analysis.TrajectoryRecorder`
and analysed with :mod:`grd.analysis`:

1. the spectrum of D at 20/40/100 % of training: rank under λ_max·d·eps_float32 and under an
   absolute threshold, rank/d, mean ± std of λ, a log-log histogram (Chaudhari & Soatto 2018);
2. the vMF concentration κ of n minibatch gradients (n fixed) along training against the
   uniform baseline κ₀ ≈ p/√n (Lee, Cho & Kang);
3. after training, a long constant-step run recorded at every step: the FFT of the per-weight
   increments and their lag-1 autocorrelation against a time-shuffled surrogate
   (Chaudhari & Soatto, limit cycles);
4. the diffusion-map intrinsic dimension of the trajectory (Fjellström & Nyström);
5. the gradient noise scale B_simple = tr D/|ḡ|² along training and B_noise = tr(HD)/(ḡᵀHḡ)
   at the three spectrum checkpoints (McCandlish et al. 2018), with β⁻¹ = η/(2b).

Run: ``python examples/sgd_analysis_digits.py`` (writes ``benchmarks/results/analysis.md`` and
``benchmarks/results/analysis_*.png``), or ``--quick`` (small sizes, a few seconds of compute;
writes into a temporary directory unless ``--out`` is given). The tutorial version, with each
statistic beside its null model, is ``notebooks/sgd_analysis.ipynb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from grd import analysis as ga  # noqa: E402
from grd.data import load_digits  # noqa: E402
from grd.models.mlp import accuracy, init_mlp, mlp_classifier  # noqa: E402

FRACTIONS = (0.2, 0.4, 1.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one reproduction run."""

    n: int | None = None  # training examples (None: all 1 797)
    hidden: int = 32
    batch_size: int = 32
    learning_rate: float = 0.2
    epochs: int = 60
    record_every: int = 8
    long_steps: int = 2048  # constant-step run after training, recorded at every step
    kappa_points: int = 10  # checkpoints for κ and B_simple
    kappa_draws: int = 64  # n minibatch gradients per κ (fixed across checkpoints)
    probes: int = 32  # Hutchinson probes for tr(HD)
    atol: float = 1e-6  # absolute rank threshold
    seed: int = 0


QUICK = Config(n=300, hidden=12, epochs=20, record_every=3, long_steps=256, kappa_points=4,
               kappa_draws=32, probes=8)  # fmt: skip


def _train(cfg: Config, loss_fn, params, data, directory, steps, every, key):
    """Constant-step SGD with epoch-wise reshuffling, recorded every ``every`` steps."""
    n = data["y"].shape[0]
    opt = optax.sgd(cfg.learning_rate)
    state = opt.init(params)

    def mean_loss(p, mb):
        return jnp.mean(jax.vmap(loss_fn, (None, 0))(p, mb))

    @jax.jit
    def step(p, s, idx):
        mb = jax.tree_util.tree_map(lambda x: x[idx], data)
        g = jax.grad(mean_loss)(p, mb)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    per_epoch = n // cfg.batch_size
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
    with ga.TrajectoryRecorder(directory, every=every, chunk=256) as rec:
        rec.record(0, params)
        for k in range(1, steps + 1):
            if (k - 1) % per_epoch == 0:
                perm = rng.permutation(n)
            j = (k - 1) % per_epoch
            idx = jnp.asarray(perm[j * cfg.batch_size : (j + 1) * cfg.batch_size])
            params, state = step(params, state, idx)
            rec.record(k, params)
    return params


def run(cfg: Config = Config(), workdir=None, progress: bool = True) -> dict:
    """Train, record and analyse; returns a dict of numbers and arrays (see :func:`report`)."""
    t0 = time.perf_counter()
    log = print if progress else (lambda *a, **k: None)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="grd-analysis-"))
    raw = load_digits(cfg.n, seed=cfg.seed, dtype=np.float32)
    data = {"x": jnp.asarray(raw["x"]), "y": jnp.asarray(raw["y"])}
    data64 = {"x": data["x"].astype(jnp.float64), "y": data["y"]}
    n = int(data["y"].shape[0])
    model, loss_fn = mlp_classifier(hidden=(cfg.hidden,))
    params = init_mlp(model, jax.random.PRNGKey(cfg.seed), 64, jnp.float32)
    flat0, unravel32 = ravel_pytree(params)
    d = int(flat0.size)
    _, unravel64 = ravel_pytree(jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params))
    steps = cfg.epochs * (n // cfg.batch_size)
    log(f"digits N={n}, d={d}, {steps} SGD steps (η={cfg.learning_rate}, b={cfg.batch_size})")
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 1), 6)
    final = _train(cfg, loss_fn, params, data, workdir / "train", steps, cfg.record_every,
                   keys[0])  # fmt: skip
    traj = ga.load_trajectory(workdir / "train")
    T = len(traj)
    out = dict(config=dataclasses.asdict(cfg), n=n, d=d, steps=steps,
               train_accuracy=float(accuracy(model, final, data)))  # fmt: skip

    def mean_loss64(p):
        return float(jnp.mean(jax.vmap(loss_fn, (None, 0))(p, data64)))

    # 1. spectrum of D at 20/40/100 % (float64 evaluation of the recorded float32 weights)
    idx = [round(f * (T - 1)) for f in FRACTIONS]
    spec = ga.spectrum_along_training(loss_fn, traj, data64, unravel=unravel64, indices=idx,
                                      atol=cfg.atol)  # fmt: skip
    out["spectrum"] = spec
    out["spectrum_losses"] = [mean_loss64(unravel64(jnp.asarray(traj[i], jnp.float64)))
                              for i in idx]  # fmt: skip
    log(f"spectrum done ({time.perf_counter() - t0:.0f} s)")

    # 2./5. κ and B_simple along training (same checkpoints, n draws fixed)
    kidx = np.unique(np.round(np.linspace(0, T - 1, cfg.kappa_points)).astype(int))
    kappa, b_simple, trace_d, gnorm2, gns, loss = [], [], [], [], [], []
    for i in kidx:
        p64 = unravel64(jnp.asarray(traj[int(i)], jnp.float64))
        g = ga.minibatch_gradients(loss_fn, p64, data64, keys[1], n=cfg.kappa_draws,
                                   batch_size=cfg.batch_size)  # fmt: skip
        kappa.append(float(ga.vmf_concentration(g, method="mle")))
        gns.append(float(ga.gradient_norm_stochasticity(g)))
        bs = ga.noise_scale_simple(loss_fn, p64, data64)
        b_simple.append(float(bs.value))
        trace_d.append(float(bs.trace))
        gnorm2.append(float(bs.grad_norm_sq))
        loss.append(mean_loss64(p64))
    out.update(
        kappa_steps=np.asarray(traj.steps)[kidx], kappa=np.asarray(kappa),
        kappa_baseline=float(ga.uniform_concentration_baseline(d, cfg.kappa_draws)),
        kappa_baseline_mle=float(ga.uniform_concentration_baseline(d, cfg.kappa_draws, "mle")),
        norm_stochasticity=np.asarray(gns), b_simple=np.asarray(b_simple),
        trace_d=np.asarray(trace_d), grad_norm_sq=np.asarray(gnorm2), loss=np.asarray(loss),
        temperature=float(ga.sgd_temperature(cfg.learning_rate, cfg.batch_size)),
    )  # fmt: skip
    b_noise = []
    for i in idx:
        p64 = unravel64(jnp.asarray(traj[i], jnp.float64))
        b_noise.append(ga.noise_scale_curvature(loss_fn, p64, data64, key=keys[2],
                                                num_samples=cfg.probes))  # fmt: skip
    out["b_noise"] = b_noise
    log(f"κ and noise scales done ({time.perf_counter() - t0:.0f} s)")

    # 3. long constant-step run from the trained weights, every step recorded
    _train(cfg, loss_fn, final, data, workdir / "long", cfg.long_steps, 1, keys[3])
    long = np.asarray(ga.load_trajectory(workdir / "long").as_array(), np.float64)
    moving = np.ptp(long, axis=0) > 0
    long = long[:, moving]
    surrogate = np.asarray(ga.shuffled_surrogate(long, keys[4]))
    real_spec = ga.increment_spectrum(long)
    surr_spec = ga.increment_spectrum(surrogate)
    lag = min(50, long.shape[0] // 4)
    acf_real = ga.autocorrelation(np.diff(long, axis=0), lag)
    acf_surr = ga.autocorrelation(np.diff(surrogate, axis=0), lag)
    out.update(
        fft_freq=np.asarray(real_spec.frequencies), fft_real=np.asarray(real_spec.mean),
        fft_real_std=np.asarray(real_spec.std), fft_surr=np.asarray(surr_spec.mean),
        acf_real=np.asarray(acf_real.acf).mean(axis=1),
        acf_surr=np.asarray(acf_surr.acf).mean(axis=1),
        acf_band=float(acf_real.band),
        acf1_out_real=float(np.mean(np.abs(np.asarray(acf_real.acf)[1]) > float(acf_real.band))),
        acf1_out_surr=float(np.mean(np.abs(np.asarray(acf_surr.acf)[1]) > float(acf_surr.band))),
        epoch_frequency=cfg.batch_size / n, long_weights=int(moving.sum()),
    )  # fmt: skip
    log(f"increment spectra done ({time.perf_counter() - t0:.0f} s)")

    # 4. diffusion-map dimension of the training trajectory and of the long run
    train_pts = np.asarray(traj.as_array(), np.float64)
    dim_train = ga.intrinsic_dimension(train_pts)
    dm_train = ga.diffusion_map(train_pts, k=min(10, T - 1))
    sub = long[:: max(1, long.shape[0] // 512)]
    dim_long = ga.intrinsic_dimension(sub)
    dm_long = ga.diffusion_map(sub, k=min(10, sub.shape[0] - 1))
    out.update(dim_train=dim_train, dim_long=dim_long, dm_train=dm_train, dm_long=dm_long,
               train_points=T, long_points=int(sub.shape[0]))  # fmt: skip
    out["seconds"] = time.perf_counter() - t0
    log(f"diffusion maps done ({out['seconds']:.0f} s)")
    return out


def _fft_summary(out):
    f, real, surr = out["fft_freq"], out["fft_real"], out["fft_surr"]
    ratio = real / surr
    low = f <= np.quantile(f, 0.1)
    high = f >= np.quantile(f, 0.9)
    return dict(
        flatness_real=float(real.max() / np.median(real)),
        flatness_surr=float(surr.max() / np.median(surr)),
        peak_freq=float(f[np.argmax(real)]),
        low_ratio=float(ratio[low].mean()),
        high_ratio=float(ratio[high].mean()),
        slope_real=float(np.polyfit(np.log(f), np.log(real), 1)[0]),
        slope_surr=float(np.polyfit(np.log(f), np.log(surr), 1)[0]),
    )


def report(out) -> str:
    """The markdown body of the results file: tables of every measured number."""
    cfg, spec = out["config"], out["spectrum"]
    labels = [f"{int(100 * f)} % (step {s})" for f, s in zip(FRACTIONS, spec.steps, strict=True)]
    fft = _fft_summary(out)
    lines = [
        f"Digits N = {out['n']}, tiny-fc 64-{cfg['hidden']}-10 (tanh), d = {out['d']}; plain SGD, "
        f"η = {cfg['learning_rate']}, b = {cfg['batch_size']}, {out['steps']} steps "
        f"({cfg['epochs']} epochs, epoch-wise reshuffling), snapshots every "
        f"{cfg['record_every']} steps (TrajectoryRecorder); final training accuracy "
        f"{100 * out['train_accuracy']:.1f} %. β⁻¹ = η/(2b) = {out['temperature']:.4g}. "
        f"D is evaluated on the whole training set in float64. Wall time {out['seconds']:.0f} s.",
        "",
        "## 1. Spectrum of D (Chaudhari & Soatto)",
        "",
        ga.spectrum_table(spec, labels=labels),
        "",
        "Mean loss at these checkpoints: "
        + ", ".join(f"{x:.4f}" for x in out["spectrum_losses"]) + ".",
        "",
        "B_noise = tr(HD)/(ḡᵀHḡ) at the same checkpoints (Hutchinson, "
        f"{cfg['probes']} Rademacher probes, ± one standard error):",
        "",
        "| checkpoint | tr(HD) | ḡᵀHḡ | B_noise |",
        "|---|---|---|---|",
    ]
    for lab, bn in zip(labels, out["b_noise"], strict=True):
        lines.append(
            f"| {lab} | {float(bn.trace):.3e} ± {float(bn.trace_stderr):.1e} | "
            f"{float(bn.curvature):.3e} | {float(bn.value):.3g} ± {float(bn.stderr):.2g} |"
        )
    lines += [
        "",
        "## 2. Directional statistics and noise scale along training "
        "(Lee et al.; McCandlish et al.)",
        "",
        f"κ: vMF maximum-likelihood concentration of n = {cfg['kappa_draws']} minibatch "
        f"gradients (b = {cfg['batch_size']}) at each checkpoint; uniform baseline "
        f"κ₀ = {out['kappa_baseline']:.1f} (Banerjee; MLE {out['kappa_baseline_mle']:.1f}).",
        "",
        "| step | mean loss | κ | κ/κ₀ | CV of ‖ĝ‖ | tr D | ‖ḡ‖² | B_simple |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j, s in enumerate(out["kappa_steps"]):
        lines.append(
            f"| {s} | {out['loss'][j]:.4f} | {out['kappa'][j]:.1f} | "
            f"{out['kappa'][j] / out['kappa_baseline']:.3f} | {out['norm_stochasticity'][j]:.3f} | "
            f"{out['trace_d'][j]:.3e} | {out['grad_norm_sq'][j]:.3e} | {out['b_simple'][j]:.3g} |"
        )
    lines += [
        "",
        "## 3. Increments of a long constant-step run (Chaudhari & Soatto)",
        "",
        f"{cfg['long_steps']} further steps from the trained weights at the same η and b, every "
        f"step recorded; {out['long_weights']} weights. Surrogate: the same increments shuffled "
        "in time (shared permutation).",
        "",
        "| | real | shuffled surrogate |",
        "|---|---|---|",
        f"| max / median of the mean FFT amplitude | {fft['flatness_real']:.2f} | "
        f"{fft['flatness_surr']:.2f} |",
        f"| log-log slope of the mean amplitude vs frequency | {fft['slope_real']:.3f} | "
        f"{fft['slope_surr']:.3f} |",
        f"| mean lag-1 autocorrelation of the increments | {out['acf_real'][1]:.3f} | "
        f"{out['acf_surr'][1]:.3f} |",
        f"| weights with lag-1 autocorrelation outside ±{out['acf_band']:.3f} (95 %) | "
        f"{100 * out['acf1_out_real']:.1f} % | {100 * out['acf1_out_surr']:.1f} % |",
        "",
        f"Real/surrogate amplitude ratio: {fft['low_ratio']:.3f} in the lowest decile of "
        f"frequencies, {fft['high_ratio']:.3f} in the highest; the real spectrum peaks at "
        f"{fft['peak_freq']:.4f} cycles/step (the epoch frequency b/N is "
        f"{out['epoch_frequency']:.4f}).",
        "",
        "## 4. Diffusion-map intrinsic dimension (Fjellström & Nyström)",
        "",
        "| trajectory | snapshots | intrinsic dimension | top diffusion-map eigenvalues λ₁…λ₅ |",
        "|---|---|---|---|",
    ]
    for name, dim, dm, pts in (
        ("training (all snapshots)", out["dim_train"], out["dm_train"], out["train_points"]),
        ("long constant-step run", out["dim_long"], out["dm_long"], out["long_points"]),
    ):
        lam = ", ".join(f"{x:.3f}" for x in np.asarray(dm.eigenvalues)[:5])
        lines.append(f"| {name} | {pts} | {float(dim.dimension):.2f} | {lam} |")
    return "\n".join(lines)


def plot(out, directory, prefix: str = "analysis_") -> list[Path]:
    """Write the PNG figures into ``directory``; returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    spec = out["spectrum"]
    labels = [f"{int(100 * f)} % of training" for f in FRACTIONS]
    fig = ga.plot_spectrum_histogram(spec, labels=labels, bins=30)
    paths.append(directory / f"{prefix}spectrum.png")
    fig.savefig(paths[-1], dpi=120)

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    a1, a2 = fig.subplots(1, 2)
    a1.plot(out["kappa_steps"], out["kappa"], "o-", label="κ (vMF MLE)")
    a1.axhline(out["kappa_baseline"], color="k", ls="--", label="uniform baseline p/√n")
    title = f"Concentration of n={out['config']['kappa_draws']} minibatch gradients"
    a1.set(xlabel="SGD step", ylabel="κ", title=title)
    a1.legend()
    a2.semilogy(out["kappa_steps"], out["b_simple"], "o-", color="C2", label="B_simple")
    a2.set(xlabel="SGD step", ylabel="batch size", title="Noise scale B_simple = tr D/|ḡ|²")
    a2.axhline(out["config"]["batch_size"], color="k", ls=":", label="b used")
    a2.legend()
    paths.append(directory / f"{prefix}kappa_noise_scale.png")
    fig.savefig(paths[-1], dpi=120)

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    a1, a2 = fig.subplots(1, 2)
    f = out["fft_freq"]
    a1.loglog(f, out["fft_real"], label="SGD increments")
    a1.loglog(f, out["fft_real"] + out["fft_real_std"], color="C0", lw=0.5, alpha=0.5,
              label="SGD: mean + std over weights")  # fmt: skip
    a1.loglog(f, out["fft_surr"], label="shuffled surrogate")
    a1.axvline(out["epoch_frequency"], color="k", ls=":", label="epoch frequency b/N")
    a1.set(xlabel="frequency (cycles/step)", ylabel="|FFT| (mean over weights)",
           title="Increment spectrum of a long constant-step run")  # fmt: skip
    a1.legend(fontsize="small")
    lags = np.arange(len(out["acf_real"]))
    a2.plot(lags[1:], out["acf_real"][1:], "o-", ms=3, label="SGD increments")
    a2.plot(lags[1:], out["acf_surr"][1:], "o-", ms=3, label="shuffled surrogate")
    a2.axhspan(-out["acf_band"], out["acf_band"], color="k", alpha=0.1, label="95 % white band")
    a2.set(xlabel="lag (steps)", ylabel="mean autocorrelation", title="Autocorrelation")
    a2.legend(fontsize="small")
    paths.append(directory / f"{prefix}increments.png")
    fig.savefig(paths[-1], dpi=120)

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    a1, a2 = fig.subplots(1, 2)
    for name, dim in (("training", out["dim_train"]), ("long run", out["dim_long"])):
        a1.semilogx(np.asarray(dim.eps_grid), 2 * np.asarray(dim.slope),
                    label=f"{name}: dim ≈ {float(dim.dimension):.2f}")  # fmt: skip
    a1.set(xlabel="bandwidth ε", ylabel="2 · d log L / d log ε", title="Intrinsic dimension")
    a1.legend()
    c = np.asarray(out["dm_train"].coordinates)
    sc = a2.scatter(c[:, 0], c[:, 1], c=np.arange(len(c)), s=6, cmap="viridis")
    fig.colorbar(sc, ax=a2, label="snapshot")
    a2.set(xlabel="ψ₁", ylabel="ψ₂", title="Diffusion-map embedding of the training trajectory")
    paths.append(directory / f"{prefix}diffusion_map.png")
    fig.savefig(paths[-1], dpi=120)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for the figures and the markdown (default: "
                         "benchmarks/results, or a temporary directory with --quick)")  # fmt: skip
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    out = run(cfg)
    body = report(out)
    repo = Path(__file__).resolve().parents[1]
    if args.out is None and not args.quick:
        sys.path.insert(0, str(repo / "benchmarks"))
        from _common import RESULTS_DIR, write_results

        figures = plot(out, RESULTS_DIR)
        body += "\n\nFigures: " + ", ".join(f"`{p.name}`" for p in figures) + ".\n"
        path = write_results("analysis", "SGD analysis on the digits (grd.analysis)", body)
    else:
        directory = args.out or Path(tempfile.mkdtemp(prefix="grd-analysis-out-"))
        figures = plot(out, directory)
        path = directory / "analysis.md"
        path.write_text(body + "\n")
    print(body)
    print(f"\nwrote {path} and {', '.join(str(p) for p in figures)}")


if __name__ == "__main__":
    main()
