"""McCandlish et al.: the gradient noise scales B_simple and B_noise along SGD on MNIST-5k.

McCandlish, Kaplan, Amodei et al., "An empirical model of large-batch training"
(arXiv:1812.06162), §2: with D the per-example gradient covariance, ḡ the mean gradient and
H the Hessian, ``B_simple = tr D / |ḡ|²`` and ``B_noise = tr(HD) / (ḡᵀHḡ)``; B_noise is the
batch size at which a step of optimal size gains half of its large-batch limit, and they
relate it to the critical batch size. None of grd's seed papers makes a claim about the
noise scale; the claim tested here is McCandlish et al.'s observation that the noise scale
grows as training proceeds and the loss falls. Their main claim (B_noise predicts the critical
batch size, measured from steps-to-target at many batch sizes with tuned learning rates) does
not fit this experiment's budget and is reported as untested.

Measured: B_simple exactly on the whole training set (:func:`grd.analysis.noise_scale_simple`),
B_noise with Hutchinson probes in independent draw sets
(:func:`grd.analysis.noise_scale_curvature`), and McCandlish et al.'s own two-batch-size
estimator of B_simple (their Appendix A) from independent draw sets of minibatch gradients
(:func:`grd.analysis.minibatch_gradients`), at checkpoints of several seeds.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .. import analysis
from ..report import Figure, Section, Table, figure_png
from ._base import Context, Experiment, Finding, Outcome
from ._nets import (
    SmallFC,
    bootstrap_interval,
    classifier,
    fmt,
    load_mnist_arrays,
    t_interval,
    train_with_snapshots,
)


@dataclasses.dataclass(frozen=True)
class Config:
    n_train: int = 5000
    pool: int = 4
    hidden: tuple[int, ...] = (16, 16)
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 1500
    chunk: int = 50
    snapshot_steps: tuple[int, ...] = (0, 100, 300, 700, 1500)
    probes: int = 8
    n_sets: int = 4
    small_batch: int = 16
    big_batch: int = 512
    pair_draws: int = 16
    n_boot: int = 1000


CONFIGS = {
    "tiny": Config(
        n_train=500,
        hidden=(8,),
        steps=60,
        chunk=20,
        snapshot_steps=(0, 20, 60),
        probes=4,
        n_sets=2,
        big_batch=128,
        pair_draws=4,
        n_boot=100,
    ),
    "default": Config(),
    "full": Config(
        pool=2,
        hidden=(32, 32),
        steps=6000,
        chunk=100,
        snapshot_steps=(0, 100, 300, 600, 1000, 2000, 3000, 4500, 6000),
        probes=16,
        n_sets=8,
        pair_draws=64,
        n_boot=2000,
    ),
}


# ----------------------------------------------------------------------------- statistics
def two_batch_estimate(small: np.ndarray, big: np.ndarray, b_small: int, b_big: int) -> dict:
    """McCandlish et al.'s unbiased estimates (Appendix A.1) from minibatch gradients of two
    sizes (rows of ``small``, ``big``); with replacement E|G_B|² = |ḡ|² + tr D / B, so

    ``|ḡ|² ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)`` and
    ``tr D ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)``, each |G_B|² averaged over
    the rows; B_simple = tr D / |ḡ|² (a ratio of unbiased estimates, itself biased)."""
    s2 = float(np.mean(np.sum(np.asarray(small, np.float64) ** 2, axis=1)))
    b2 = float(np.mean(np.sum(np.asarray(big, np.float64) ** 2, axis=1)))
    g2 = (b_big * b2 - b_small * s2) / (b_big - b_small)
    tr = (s2 - b2) / (1.0 / b_small - 1.0 / b_big)
    return {"grad_norm_sq": g2, "trace": tr, "b_simple": tr / g2}


def growth_verdict(log_ratio: float, lo: float, hi: float, what: str):
    """Verdict on "the noise scale grows during training" from log(B_end/B_start) and its
    95 % interval: ``reproduced`` if the interval lies above 0, ``not_reproduced`` if below,
    else ``inconclusive``. Returns ``(verdict, reason)``."""
    if not all(np.isfinite([log_ratio, lo, hi])):
        return "inconclusive", (
            f"{what} is not positive at the first or last checkpoint in too many resamples "
            "(ḡᵀHḡ ≤ 0 or a negative trace estimate), so its growth is undefined."
        )
    rule = (
        f"log({what}_end/{what}_start) = {log_ratio:.2f} (95 % interval {lo:.2f} to {hi:.2f}; "
        f"×{np.exp(log_ratio):.2g}); reproduced if the interval lies above 0, not reproduced "
        "if below"
    )
    if lo > 0:
        return "reproduced", rule + "."
    if hi < 0:
        return "not_reproduced", rule + "."
    return "inconclusive", rule + "; the interval contains 0."


def hierarchical_log_ratio(values: np.ndarray, *, n_boot: int, seed: int):
    """Mean over seeds of log(v_last/v_first) of an (S, T, K) array (K draw sets) and its
    percentile interval, resampling seeds and then draw sets within each (seed, checkpoint).
    Draw sets whose value is not positive (e.g. ḡᵀHḡ ≤ 0) are dropped from the means."""
    v = np.asarray(values, np.float64)
    v = np.where(v > 0, v, np.nan)

    def stat_from(means):
        with warnings.catch_warnings():  # all-NaN slices are the undefined case, kept as NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(np.log(means[:, -1] / means[:, 0])))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = stat_from(np.nanmean(v, axis=2))

    def stat(rng):
        s, t, k = v.shape
        seeds = rng.integers(0, s, s)
        sets = rng.integers(0, k, (s, t, k))
        picked = v[seeds[:, None, None], np.arange(t)[None, :, None], sets]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(picked, axis=2)
        return stat_from(means)

    lo, hi = bootstrap_interval(stat, n_boot=n_boot, seed=seed)
    return est, lo, hi


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


# ----------------------------------------------------------------------------- experiment
def run(cfg: Config, ctx: Context) -> Outcome:
    import matplotlib.pyplot as plt

    train, _ = load_mnist_arrays(cfg.n_train, pool=cfg.pool)
    side = 28 // cfg.pool
    model = SmallFC(tuple(cfg.hidden))
    init, loss_fn, _ = classifier(model, train["x"].shape[1])
    label = f"FC {side * side}–{'–'.join(map(str, cfg.hidden))}–10 (ReLU)"
    S, T, K = len(ctx.seeds), len(cfg.snapshot_steps), cfg.n_sets
    b_simple = np.zeros((S, T))
    trace = np.zeros((S, T))
    g2 = np.zeros((S, T))
    b_noise = np.zeros((S, T, K))
    curvature = np.zeros((S, T))
    two_batch = np.zeros((S, T, K))
    losses = np.zeros((S, T))
    d = None
    for si, seed in enumerate(ctx.seeds):
        k_init, k_sgd, k_probe = jax.random.split(jax.random.PRNGKey(seed), 3)
        params0 = init(k_init)
        d = sum(x.size for x in jax.tree_util.tree_leaves(params0))
        snaps, loss_hist, unravel = train_with_snapshots(
            ctx,
            f"fc_seed{seed}",
            loss_fn,
            params0,
            train,
            key=k_sgd,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            steps=cfg.steps,
            snapshot_steps=cfg.snapshot_steps,
            chunk=cfg.chunk,
        )
        losses[si] = loss_hist
        for ti, flat in enumerate(snaps):
            params = unravel(jnp.asarray(flat))
            simple = analysis.noise_scale_simple(loss_fn, params, train)
            b_simple[si, ti] = float(simple.value)
            trace[si, ti] = float(simple.trace)
            g2[si, ti] = float(simple.grad_norm_sq)
            for ki in range(K):
                key = jax.random.fold_in(jax.random.fold_in(k_probe, ti), ki)
                k_h, k_s, k_b = jax.random.split(key, 3)
                cur = analysis.noise_scale_curvature(
                    loss_fn, params, train, key=k_h, num_samples=cfg.probes
                )
                b_noise[si, ti, ki] = float(cur.value)
                curvature[si, ti] = float(cur.curvature)
                small = analysis.minibatch_gradients(
                    loss_fn,
                    params,
                    train,
                    k_s,
                    n=cfg.pair_draws,
                    batch_size=cfg.small_batch,
                    replace=True,
                )
                big = analysis.minibatch_gradients(
                    loss_fn,
                    params,
                    train,
                    k_b,
                    n=cfg.pair_draws,
                    batch_size=cfg.big_batch,
                    replace=True,
                )
                two_batch[si, ti, ki] = two_batch_estimate(
                    np.asarray(small), np.asarray(big), cfg.small_batch, cfg.big_batch
                )["b_simple"]

    # --- findings
    log_simple = np.log(b_simple[:, -1] / b_simple[:, 0])
    ls_mean, ls_half = t_interval(log_simple)
    v_s, r_s = growth_verdict(ls_mean, ls_mean - ls_half, ls_mean + ls_half, "B_simple")
    ln_est, ln_lo, ln_hi = hierarchical_log_ratio(b_noise, n_boot=cfg.n_boot, seed=3)
    v_n, r_n = growth_verdict(ln_est, ln_lo, ln_hi, "B_noise")
    setting = (
        f"MNIST-5k (N = {cfg.n_train}), {label}, d = {d}, plain SGD lr {cfg.lr}, "
        f"b = {cfg.batch_size}, {cfg.steps} steps, {S} seeds; checkpoints at steps "
        f"{', '.join(map(str, cfg.snapshot_steps))}"
    )
    paper_setting = (
        "many tasks (MNIST, SVHN, CIFAR, ImageNet, RL, language), noise scale tracked over "
        "full training runs"
    )
    claim = "The gradient noise scale grows over the course of training, as the loss decreases."
    findings = [
        Finding(
            claim=claim + " (B_simple)",
            source="McCandlish et al. 2018 (arXiv:1812.06162), not a seed paper",
            paper_setting=paper_setting,
            our_setting=setting + "; B_simple exact on the whole training set",
            measured=ls_mean,
            uncertainty=ls_half,
            null=0.0,
            verdict=v_s,
            reason=r_s + " Interval: 95 % Student-t over seeds (B_simple is exact per iterate; "
            "the seeds carry the iterate-to-iterate variation). Start = step "
            f"{cfg.snapshot_steps[0]}, end = step {cfg.snapshot_steps[-1]}.",
            unit="log(B_end/B_start)",
        ),
        Finding(
            claim=claim + " (B_noise)",
            source="McCandlish et al. 2018 (arXiv:1812.06162), not a seed paper",
            paper_setting=paper_setting,
            our_setting=setting + f"; B_noise by Hutchinson, {K} draw sets of {cfg.probes} probes",
            measured=ln_est if np.isfinite(ln_est) else 0.0,
            uncertainty=(ln_hi - ln_lo) / 2 if np.isfinite(ln_hi - ln_lo) else None,
            null=0.0,
            verdict=v_n,
            reason=r_n + " Interval: hierarchical percentile bootstrap over seeds and draw sets. "
            f"ḡᵀHḡ (mean over seeds) is {fmt(curvature[:, 0].mean())} at the start and "
            f"{fmt(curvature[:, -1].mean())} at the end; {int(np.sum(curvature <= 0))} of "
            f"{curvature.size} (seed, checkpoint) pairs have ḡᵀHḡ ≤ 0, where B_noise is not "
            "defined. Near initialisation ḡᵀHḡ is small and B_noise ill-conditioned.",
            unit="log(B_end/B_start)",
        ),
    ]
    bn_end = np.nanmean(np.where(b_noise[:, -1] > 0, b_noise[:, -1], np.nan), axis=1)
    bn_mean, bn_half = t_interval(
        bn_end[np.isfinite(bn_end)] if np.isfinite(bn_end).any() else [0.0]
    )
    findings.append(
        Finding(
            claim="B_noise predicts the critical batch size (the batch size beyond which "
            "larger batches stop reducing the number of steps to a target loss).",
            source="McCandlish et al. 2018 (arXiv:1812.06162), §2–3, not a seed paper",
            paper_setting="steps and examples to a target loss at many batch sizes, each "
            "with its own tuned learning rate, against the measured noise scale",
            our_setting=setting,
            measured=bn_mean,
            uncertainty=bn_half,
            null=None,
            verdict="inconclusive",
            reason="Not tested: it needs steps-to-target curves over a grid of batch sizes "
            "with tuned learning rates, beyond this experiment's budget. Measured is "
            "B_noise at the end of training (mean ± 95 % t half-width over seeds), to be set "
            f"beside the batch size used, b = {cfg.batch_size}.",
            unit="B_noise at the end (examples)",
        )
    )

    # --- table and figure
    rows = []
    for ti, step in enumerate(cfg.snapshot_steps):
        bs_m, bs_h = t_interval(b_simple[:, ti])
        bn_seed = np.nanmean(np.where(b_noise[:, ti] > 0, b_noise[:, ti], np.nan), axis=1)
        bn_m, bn_h = t_interval(bn_seed)
        tb_m, tb_h = t_interval(two_batch[:, ti].mean(axis=1))
        spread = b_simple[:, ti].max() / b_simple[:, ti].min()
        rows.append(
            [
                str(step),
                fmt(losses[:, ti].mean(), 3),
                f"{fmt(bs_m)} ± {fmt(bs_h, 1)}",
                f"×{spread:.2g}",
                f"{fmt(bn_m)} ± {fmt(bn_h, 1)}",
                fmt(np.std(b_noise[:, ti], axis=1, ddof=1).mean() if K > 1 else 0.0, 2),
                f"{fmt(tb_m)} ± {fmt(tb_h, 1)}",
                fmt(trace[:, ti].mean()),
                fmt(g2[:, ti].mean()),
            ]
        )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = np.asarray(cfg.snapshot_steps, float)
    x = np.maximum(steps, steps[1] / 3 if steps.size > 1 else 1)
    for si in range(S):
        kw = {"alpha": 0.8 if si == 0 else 0.4}
        ax1.plot(
            x, b_simple[si], "o-", color="C0", label="B_simple (exact)" if si == 0 else None, **kw
        )
        bn = np.nanmean(np.where(b_noise[si] > 0, b_noise[si], np.nan), axis=1)
        ax1.plot(x, bn, "s-", color="C1", label="B_noise (Hutchinson)" if si == 0 else None, **kw)
        ax1.plot(
            x,
            two_batch[si].mean(axis=1),
            "^:",
            color="C2",
            label="B_simple (two-batch estimator)" if si == 0 else None,
            **kw,
        )
        ax2.plot(losses[si], b_simple[si], "o-", color="C0", **kw)
        ax2.plot(losses[si], bn, "s-", color="C1", **kw)
    ax1.axhline(
        cfg.batch_size, color="0.5", ls="--", lw=1, label=f"training batch b = {cfg.batch_size}"
    )
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="SGD step (step 0 at the left edge)",
        ylabel="noise scale (examples)",
        title="Noise scales along training (one line per seed)",
    )
    ax1.legend(fontsize=7)
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="training loss",
        ylabel="noise scale (examples)",
        title="Noise scale against the loss (circles B_simple, squares B_noise)",
    )
    ax2.invert_xaxis()
    fig.tight_layout()
    figures = [
        Figure(
            "noise_scale_along_training",
            "B_simple (exact), B_noise (Hutchinson, mean over draw sets) and McCandlish et "
            "al.'s two-batch estimate of B_simple, per seed, against the step and the loss.",
            figure_png(fig),
        )
    ]
    paragraphs = [
        "What the paper did: McCandlish et al. defined B_simple = tr D/|ḡ|² and B_noise = "
        "tr(HD)/(ḡᵀHḡ), estimated B_simple during training from gradient norms at two batch "
        "sizes, compared it with the critical batch size measured from steps-to-target at "
        "many batch sizes, and observed that the noise scale grows as the loss falls. None of "
        "grd's seed papers makes a claim about the noise scale.",
        f"What we did: {label} on MNIST-5k, plain SGD, {S} seeds. At each checkpoint: "
        "B_simple exactly from all per-example gradients (grd.analysis.noise_scale_simple); "
        f"B_noise from {K} independent draw sets of {cfg.probes} Hutchinson probes each "
        "(grd.analysis.noise_scale_curvature, one HVP and one D·v per probe, ḡᵀHḡ exact); "
        f"and the two-batch estimator of B_simple from {cfg.pair_draws} minibatch gradients "
        f"of b = {cfg.small_batch} and of b = {cfg.big_batch} per draw set. Intervals: "
        "Student-t over seeds for exact quantities, hierarchical bootstrap over seeds and "
        "draw sets for estimated ones. The critical-batch-size claim is not tested (budget).",
        "Single iterates are not enough: the seed-to-seed spread factor max/min of B_simple "
        "at each checkpoint is in the table; quote the noise scale with its interval.",
    ]
    tables = [
        Table(
            "Noise scales at the checkpoints: mean ± 95 % t half-width over seeds (B_noise: "
            "per-seed means over draw sets; 'sd sets' is the mean within-seed sd over draw sets)",
            [
                "step",
                "loss",
                "B_simple (exact)",
                "seed spread",
                "B_noise",
                "B_noise sd sets",
                "B_simple two-batch",
                "tr D",
                "|ḡ|²",
            ],
            rows,
        )
    ]
    metrics = {
        "config": dataclasses.asdict(cfg),
        "d": d,
        "train_loss": losses,
        "b_simple": b_simple,
        "trace_D": trace,
        "grad_norm_sq": g2,
        "b_noise_sets": np.where(np.isfinite(b_noise), b_noise, 0.0),
        "curvature_gHg": curvature,
        "b_simple_two_batch_sets": two_batch,
        "log_growth_b_simple": {"mean": ls_mean, "half_width": ls_half},
        "log_growth_b_noise": {
            "estimate": _finite_or_none(ln_est),
            "ci": [_finite_or_none(ln_lo), _finite_or_none(ln_hi)],
        },
    }
    section = Section("noise_scale", EXPERIMENT.title, paragraphs, tables, figures)
    return Outcome(section=section, metrics=metrics, findings=findings)


EXPERIMENT = Experiment(
    name="noise_scale",
    title="McCandlish et al.: gradient noise scales B_simple and B_noise along SGD",
    sources=("McCandlish et al. 2018, arXiv:1812.06162",),
    configs=CONFIGS,
    run=run,
)
