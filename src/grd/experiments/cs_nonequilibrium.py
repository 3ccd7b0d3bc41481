"""Chaudhari & Soatto: limit cycles / non-equilibrium SGD, tested by its probability current.

Claim (Chaudhari & Soatto 2018, arXiv:1710.11029, abstract and §5): SGD for deep networks does
not converge to an equilibrium; its iterates keep circulating ("limit cycles") because the
gradient noise is highly non-isotropic (D does not commute with the Hessian). The paper's
evidence is a fully connected network on 7 × 7 MNIST trained for ~10⁵ epochs with momentum
0.9: the FFT of the per-epoch weight increments x_{k+1} − x_k (averaged over weights) shows
peaks, and the autocorrelation of the weights decays slowly.

Neither statistic decides the question: an equilibrium (reversible) model with the same
Hessian and the same momentum also has non-flat increment spectra and slowly decaying
autocorrelations, and a non-equilibrium linear SDE need not show peaks. This experiment keeps
the paper's FFT and autocorrelation (with an equilibrium control through the same pipeline)
and rests its verdict on the irreversibility statistics of :mod:`grd.analysis` (theory §8):
the areal velocity of the iterates in the planes of the top Hessian eigenvectors, against the
reversible Fourier surrogate, at a verified stationary state of a net with weight decay, with
momentum 0.9 and without; and the measured current against its linear prediction from the
dense H and D at the minimum.

Public API only (``grd``, ``grd.analysis``, ``grd.data``, ``grd.report``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import grd
from grd import analysis as ga
from grd.data import load_mnist
from grd.report import Figure, Section, Table, figure_png

from ._base import Context, Experiment, Finding, Outcome

__all__ = [
    "EXPERIMENT",
    "Config",
    "CurrentJudgement",
    "judge_current",
    "current_verdict",
    "run",
]

NAME = "cs_nonequilibrium"
SOURCE = "Chaudhari & Soatto 2018 (arXiv:1710.11029), §5 and Fig. 4"


@dataclasses.dataclass(frozen=True)
class Config:
    """One profile of the experiment.

    Attributes:
      n_train: examples of the 5-class subset (digits 0–4 of MNIST-5k, ≤ 2 5xx); ``None``: all.
      pool: average-pooling side (4 → 7 × 7 inputs, the paper's resolution).
      hidden: width of the one tanh hidden layer.
      weight_decay: L2 coefficient λ (makes the minimum strict and the slowest relaxation
        time finite, so that a stationary state exists and can be verified).
      batch_size: b; minibatches drawn with replacement (the linear prediction's noise D/b).
      lr_frac: η_eff·h_max with η_eff = η/(1 − μ) (the same effective step with and without
        momentum).
      momentum: the heavy-ball μ of the momentum run (optax convention); a μ = 0 run is always
        made too.
      epochs: epochs per run after burn-in (one epoch = N/b steps); one snapshot per epoch.
      burn_epochs: epochs discarded at the start (the runs start at the minimum).
      k: basis size (top-k Hessian eigenvectors); k(k − 1)/2 planes (≥ 15 for k ≥ 6).
      n_batches: batch means for the errors.
      n_surrogates: reversible surrogates per run (the null of the current).
      chunk_epochs: epochs per jitted chunk (and per checkpoint step).
    """

    n_train: int | None = None
    pool: int = 4
    hidden: int = 8
    weight_decay: float = 1e-2
    batch_size: int = 100
    lr_frac: float = 0.5
    momentum: float = 0.9
    epochs: int = 1000
    burn_epochs: int = 40
    k: int = 6
    n_batches: int = 32
    n_surrogates: int = 20
    chunk_epochs: int = 20


CONFIGS = {
    "tiny": Config(
        n_train=300, hidden=3, epochs=160, burn_epochs=8, n_surrogates=8, chunk_epochs=8
    ),
    # As many epochs as fit in ~90 s for 3 seeds × 2 momentum settings on 2 shared cores.
    # Weight decay 0.03: the slowest relaxation (≈ 80–300 epochs at 0.01, which left 2 of 3
    # seeds non-stationary in 800 epochs) shortens, so stationarity is reachable in budget.
    "default": Config(
        weight_decay=3e-2, epochs=800, burn_epochs=40, n_surrogates=12, chunk_epochs=40
    ),
    # The paper's scale in epochs (≥ 10⁴), still a tiny net.
    "full": Config(epochs=10_000, burn_epochs=200, n_surrogates=40, chunk_epochs=200),
}


# ---------------------------------------------------------------------------------------------
# The verdict rule (public: tested on synthetic processes with a known answer)


class CurrentJudgement(NamedTuple):
    """Result of :func:`judge_current` for one run.

    Attributes:
      detected: a current is present (``max_abs_z`` above both thresholds).
      max_abs_z: max over planes of |rate|/se.
      critical: two-sided Bonferroni critical value at ``level`` for the P planes (Student t
        with n_batches − 1 degrees of freedom).
      surrogate_q: the (1 − level) quantile of max |z| over reversible surrogates.
      n_planes: P.
      n_above: planes with |z| > ``critical``.
      resolvable: with a prediction, whether its largest plane is ≥ critical + 2 standard
        errors (the test had the power to see it); ``None`` without a prediction.
      z: (P,) |rate|/se per plane, signed.
    """

    detected: bool
    max_abs_z: float
    critical: float
    surrogate_q: float
    n_planes: int
    n_above: int
    resolvable: bool | None
    z: np.ndarray


def judge_current(
    y, key, *, n_batches: int = 32, n_surrogates: int = 20, predicted=None, level: float = 0.01
) -> CurrentJudgement:
    """Is there a probability current in the (T, k) projected series ``y``?

    Rule: z_p = a_p / se_p for the P = k(k − 1)/2 planes (:func:`grd.analysis.areal_velocity`,
    batch means; under no current z_p ~ t with B − 1 degrees of freedom). A current is
    **detected** when max_p |z_p| exceeds both the two-sided Bonferroni critical value
    t_{B−1}⁻¹(1 − level/(2P)) and the (1 − level) quantile of the same
    max |z| over ``n_surrogates`` reversible Fourier surrogates of ``y``
    (:func:`grd.analysis.reversible_surrogate`: same auto- and symmetric cross-covariances,
    zero current). ``predicted`` (k × k) only adds the power check ``resolvable``.
    """
    from scipy.stats import t as t_dist

    y = jnp.asarray(y)
    k = y.shape[1]
    i, j = ga.plane_pairs(k)
    rate, se = ga.areal_velocity(y, n_batches=n_batches, check_batches=False)
    z = np.asarray(rate)[i, j] / np.asarray(se)[i, j]
    p = len(i)
    crit = float(t_dist.isf(level / (2 * p), n_batches - 1))  # batch-means z ~ t(B − 1)

    null = np.asarray(_surrogate_max_z(y, jax.random.split(key, n_surrogates), n_batches))
    q = float(np.quantile(null, 1 - level))
    mz = float(np.max(np.abs(z)))
    resolvable = None
    if predicted is not None:
        pz = np.abs(np.asarray(predicted)[i, j]) / np.asarray(se)[i, j]
        resolvable = bool(np.max(pz) >= crit + 2.0)
    return CurrentJudgement(
        bool(mz > max(crit, q)),
        mz,
        crit,
        q,
        p,
        int(np.sum(np.abs(z) > crit)),
        resolvable,
        z,
    )


@functools.partial(jax.jit, static_argnames=("n_batches",))
def _surrogate_max_z(y, keys, n_batches):
    """max over planes of |z| for reversible surrogates of ``y``, one per key (vmapped)."""
    i, j = ga.plane_pairs(y.shape[1])

    def one(key_):
        ys = ga.reversible_surrogate(y, key_)
        r, s = ga.areal_velocity(ys, n_batches=n_batches, check_batches=False)
        return jnp.max(jnp.abs(r[i, j] / s[i, j]))

    return jax.vmap(one)(keys)


def current_verdict(judgements, stationary) -> tuple[str, str]:
    """Verdict on "SGD carries a probability current" from the runs of one setting (one per seed).

    Only runs whose stationarity diagnostic passed count, and at least half of the runs must
    pass it. ``reproduced`` (current present) when every counted run detects a current;
    ``not_reproduced`` when none does and every counted run had the power to see its predicted
    current (or no prediction was given); ``inconclusive`` when fewer than half of the runs are
    stationary, when seeds disagree, or when the predicted current is below the resolution.
    Returns ``(verdict, reason)``.
    """
    used = [jd for jd, ok in zip(judgements, stationary, strict=True) if ok]
    if 2 * len(used) < len(judgements) or not used:
        det_all = sum(jd.detected for jd in judgements)
        return "inconclusive", (
            f"only {len(used)}/{len(judgements)} runs passed the stationarity diagnostic (a "
            f"current was detected in {det_all}/{len(judgements)} runs, stationary or not)"
        )
    det = sum(jd.detected for jd in used)
    if det == len(used):
        return "reproduced", (
            f"a current is detected in {det}/{len(used)} stationary runs (max |z| above the "
            "Bonferroni 1 % value and the 99 % quantile of reversible surrogates)"
        )
    if det == 0:
        if all(jd.resolvable is not False for jd in used):
            return "not_reproduced", (
                f"no current in {len(used)}/{len(used)} stationary runs although the predicted "
                "one would have been resolved"
            )
        return "inconclusive", "no current detected, but the predicted current is below resolution"
    return "inconclusive", f"a current is detected in only {det}/{len(used)} stationary runs"


# ---------------------------------------------------------------------------------------------
# Model, minimum, runs


def _data(cfg: Config):
    raw = load_mnist(dtype=np.float64, pool=cfg.pool)
    keep = raw["y"] < 5
    x, y = raw["x"][keep], raw["y"][keep]
    if cfg.n_train is not None:
        x, y = x[: cfg.n_train], y[: cfg.n_train]
    return {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32)}


def _model(p: int, hidden: int, classes: int, wd: float):
    sizes = [(p, hidden), (hidden,), (hidden, classes), (classes,)]
    offs = np.cumsum([0] + [int(np.prod(s)) for s in sizes])

    def logits(w, x):
        parts = [w[offs[i] : offs[i + 1]].reshape(sizes[i]) for i in range(4)]
        return jnp.tanh(x @ parts[0] + parts[1]) @ parts[2] + parts[3]

    def loss(w, ex):  # per-example loss (for D)
        return -jax.nn.log_softmax(logits(w, ex["x"]))[ex["y"]] + 0.5 * wd * (w @ w)

    def batch_loss(w, x, y):
        lp = jax.nn.log_softmax(logits(w, x))
        return -jnp.mean(jnp.take_along_axis(lp, y[:, None], 1)) + 0.5 * wd * (w @ w)

    def init(key):
        ks = jax.random.split(key, 2)
        w1 = jax.random.normal(ks[0], sizes[0]) / np.sqrt(p)
        w2 = jax.random.normal(ks[1], sizes[2]) / np.sqrt(hidden)
        return jnp.concatenate(
            [w1.ravel(), jnp.zeros(hidden), w2.ravel(), jnp.zeros(classes)]
        ).astype(jnp.float64)

    return loss, batch_loss, init, int(offs[-1])


def _minimiser(batch_loss):
    """Jitted value-and-gradient, gradient and Hessian of the full loss (compiled once)."""
    return (
        jax.jit(jax.value_and_grad(batch_loss)),
        jax.jit(jax.grad(batch_loss)),
        jax.jit(jax.hessian(batch_loss)),
    )


def _minimise(fns, data, w0):
    """L-BFGS, then Newton with the exact Hessian; returns (w*, H, |∇f(w*)|)."""
    import scipy.optimize

    vg, g, hess = fns
    x, y = data["x"], data["y"]
    res = scipy.optimize.minimize(
        lambda w: tuple(np.asarray(t) for t in vg(jnp.asarray(w), x, y)),
        np.asarray(w0),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 3000, "gtol": 1e-10, "ftol": 0.0},
    )
    w = jnp.asarray(res.x)
    for _ in range(8):
        gn = g(w, x, y)
        if float(jnp.linalg.norm(gn)) < 1e-12:
            break
        w = w - jnp.linalg.solve(hess(w, x, y), gn)
    h = hess(w, x, y)
    return w, 0.5 * (h + h.T), float(jnp.linalg.norm(g(w, x, y)))


def _sgd_chunk(batch_loss, cfg: Config, spe: int):
    """Jitted chunk of ``chunk_epochs`` epochs: per-step projections, per-epoch snapshots.

    Every array is an argument (nothing large is baked into the compiled function), so it is
    compiled once per run and reused across seeds and momentum settings."""
    grad = jax.grad(batch_loss)
    ce = cfg.chunk_epochs

    @jax.jit
    def chunk(w, m, key, eta, mu, wstar, basis, x, y):
        idx = jax.random.randint(key, (ce, spe, cfg.batch_size), 0, y.shape[0])

        def step(carry, ib):
            w, m = carry
            m = mu * m + grad(w, x[ib], y[ib])
            w = w - eta * m
            return (w, m), (w - wstar) @ basis

        def epoch(carry, ie):
            carry, proj = jax.lax.scan(step, carry, ie)
            return carry, (proj, carry[0])

        (w, m), (proj, snaps) = jax.lax.scan(epoch, (w, m), idx)
        return w, m, proj.reshape(ce * spe, -1), snaps

    return chunk


def _run_sgd(ctx: Context, stage, chunk, wstar, basis, data, key, eta, mu, cfg: Config, spe):
    k = basis.shape[1]
    x, y = data["x"], data["y"]
    n_chunks = -(-(cfg.epochs + cfg.burn_epochs) // cfg.chunk_epochs)
    ce = cfg.chunk_epochs
    state = {
        "w": wstar,
        "m": jnp.zeros_like(wstar),
        "proj": jnp.zeros((n_chunks, ce * spe, k)),
        "snaps": jnp.zeros((n_chunks, ce, wstar.size)),
    }

    def step_fn(st, c):
        w, m, proj, snaps = chunk(
            st["w"], st["m"], jax.random.fold_in(key, c), eta, mu, wstar, basis, x, y
        )
        return {
            "w": w,
            "m": m,
            "proj": st["proj"].at[c].set(proj),
            "snaps": st["snaps"].at[c].set(snaps),
        }

    st = ctx.checkpointed(stage, step_fn, state, n_chunks, every=max(1, n_chunks // 4))
    burn = cfg.burn_epochs
    proj = np.asarray(st["proj"]).reshape(-1, k)[burn * spe : (burn + cfg.epochs) * spe]
    snaps = np.asarray(st["snaps"]).reshape(-1, wstar.size)[burn : burn + cfg.epochs]
    return proj, snaps


@functools.partial(jax.jit, static_argnames=("steps",))
def _equilibrium_path(lam, sd, eta, mu, key, steps):
    def step(carry, k_):
        x, m = carry
        m = mu * m + lam * x + sd * jax.random.normal(k_, lam.shape)
        x = x - eta * m
        return (x, m), x

    init = (jnp.zeros_like(lam), jnp.zeros_like(lam))
    return jax.lax.scan(step, init, jax.random.split(key, steps))[1]


def _equilibrium_run(lam, v, c_eq, basis, eta, mu, cfg: Config, spe: int, key):
    """Linear SGD on ½xᵀHx with reversible noise D = cH (same H, η, μ, b), same records."""
    steps = (cfg.epochs + cfg.burn_epochs) * spe
    sd = jnp.sqrt(c_eq * lam / cfg.batch_size)
    xs = _equilibrium_path(lam, sd, eta, mu, key, steps)[cfg.burn_epochs * spe :]
    return np.asarray(xs @ (v.T @ basis)), np.asarray(xs[spe - 1 :: spe] @ v.T)


# ---------------------------------------------------------------------------------------------
# C&S's statistics on per-epoch snapshots


def _cs_stats(snaps, key, max_lag):
    spec = ga.increment_spectrum(snaps)
    sur = ga.increment_spectrum(ga.shuffled_surrogate(snaps, key))
    ratio = np.asarray(spec.mean) / np.asarray(sur.mean)
    acf = np.asarray(ga.autocorrelation(snaps, max_lag).acf).mean(axis=1)
    below = np.nonzero(acf < np.exp(-1))[0]
    return {
        "freqs": np.asarray(spec.frequencies),
        "amp": np.asarray(spec.mean),
        "amp_surrogate": np.asarray(sur.mean),
        "max_ratio": float(ratio.max()),
        "freq_of_max_ratio": float(np.asarray(spec.frequencies)[int(ratio.argmax())]),
        "acf": acf,
        "acf_1e_lag": int(below[0]) if below.size else max_lag,
    }


# ---------------------------------------------------------------------------------------------


def run(cfg: Config, ctx: Context) -> Outcome:
    """The experiment in float64 (the prediction needs it), inside a scoped x64 context: the
    process-wide setting seen by the other experiments is left unchanged."""
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:  # jax < 0.7 spells it jax.experimental.enable_x64
        from jax.experimental import enable_x64
    with enable_x64(True):
        return _run(cfg, ctx)


def _run(cfg: Config, ctx: Context) -> Outcome:
    t0 = time.perf_counter()
    data = _data(cfg)
    n, p = data["x"].shape
    spe = n // cfg.batch_size
    loss, batch_loss, init, d = _model(p, cfg.hidden, 5, cfg.weight_decay)
    settings = {"μ = 0": 0.0, f"μ = {cfg.momentum:g}": cfg.momentum}
    planes = ga.plane_pairs(cfg.k)
    fns = _minimiser(batch_loss)
    chunk = _sgd_chunk(batch_loss, cfg, spe)
    per = {name: [] for name in settings}
    cs = {}
    first = {}
    minima = []
    for seed in ctx.seeds:
        key = jax.random.key(seed)
        wstar, hess, gnorm = _minimise(fns, data, init(jax.random.fold_in(key, 0)))
        lam, v = np.linalg.eigh(np.asarray(hess))
        diff = grd.diffusion_matrix(loss, wstar, data)
        basis = ga.eigen_basis(hess, cfg.k)
        slow = ga.eigen_basis(-hess, cfg.k)
        h_max = float(lam[-1])
        minima.append(
            {"seed": seed, "grad_norm": gnorm, "lambda_min": float(lam[0]), "lambda_max": h_max}
        )
        big = jnp.concatenate([basis, slow], axis=1)
        for s_i, (name, mu) in enumerate(settings.items()):
            eta = (1 - mu) * cfg.lr_frac / h_max
            proj, snaps = _run_sgd(
                ctx, f"seed{seed}_mu{mu:g}", chunk, wstar, big, data,
                jax.random.fold_in(key, 1 + s_i), eta, mu, cfg, spe,
            )  # fmt: skip
            y = proj[:, : cfg.k]
            ye = snaps @ np.asarray(big)
            r2 = np.sum((snaps - np.asarray(wstar)) ** 2, axis=1)
            st_slow = ga.stationarity(ye[:, cfg.k :], n_batches=8)
            st_top = ga.stationarity(y, n_batches=16)
            st_r2 = ga.stationarity(r2[:, None], n_batches=8)
            stationary = bool(st_slow.stationary & st_top.stationary & st_r2.stationary)
            pred = ga.predicted_areal_velocity(
                hess, diff, eta, cfg.batch_size, momentum=mu, basis=basis
            )
            jd = judge_current(
                y, jax.random.fold_in(key, 10 + s_i), n_batches=cfg.n_batches,
                n_surrogates=cfg.n_surrogates, predicted=pred,
            )  # fmt: skip
            br = np.asarray(
                ga.areal_velocity_batches(y, n_batches=cfg.n_batches, check_batches=False)
            )
            cr = ga.compare_rates(br, np.asarray(pred))
            tau = float(np.max(np.asarray(ga.integrated_autocorrelation_time(y))))
            sig, _ = ga.sgd_stationary_covariance(hess, diff, eta, cfg.batch_size, momentum=mu)
            rec = {
                "seed": seed,
                "eta": eta,
                "stationary": stationary,
                "drift_slow_max_z": float(st_slow.max_abs_z),
                "drift_top_max_z": float(st_top.max_abs_z),
                "drift_r2_z": float(st_r2.z[0]),
                "drift_threshold_slow": float(st_slow.threshold),
                "drift_threshold_r2": float(st_r2.threshold),
                "slowest_relaxation_epochs": float((1 - mu) / (eta * lam[0]) / spe),
                "r2_mean": float(r2.mean()),
                "trace_sigma_linear": float(jnp.trace(sig)),
                "max_abs_z": jd.max_abs_z,
                "critical": jd.critical,
                "surrogate_q99": jd.surrogate_q,
                "planes_above": jd.n_above,
                "detected": jd.detected,
                "resolvable": bool(jd.resolvable),
                "slope": float(cr.slope),
                "slope_se": float(cr.slope_se),
                "corr": float(cr.corr),
                "corr_se": float(cr.corr_se),
                "f_stat": float(cr.f_stat),
                "tau_int_max": tau,
                "batch_length": int(y.shape[0] // cfg.n_batches),
            }
            per[name].append((rec, jd))
            if seed == ctx.seeds[0]:
                # The paper's statistics, and the same on the equilibrium model (D ∝ H).
                c_eq = float(jnp.trace(diff) / jnp.trace(hess))
                ye_q, snaps_q = _equilibrium_run(
                    jnp.asarray(lam), jnp.asarray(v), c_eq, basis, eta, mu, cfg, spe,
                    jax.random.fold_in(key, 20 + s_i),
                )  # fmt: skip
                max_lag = min(200, snaps.shape[0] // 4)
                cs[name] = {
                    "sgd": _cs_stats(snaps, jax.random.fold_in(key, 30 + s_i), max_lag),
                    "equilibrium": _cs_stats(snaps_q, jax.random.fold_in(key, 40 + s_i), max_lag),
                }
                jq = judge_current(
                    ye_q, jax.random.fold_in(key, 50 + s_i), n_batches=cfg.n_batches,
                    n_surrogates=cfg.n_surrogates,
                )  # fmt: skip
                cs[name]["equilibrium_current"] = jq
                # Time-reversal asymmetry at several lags, incl. one epoch (per-epoch snapshots).
                lags = tuple(sorted({1, 2, 5, 10, spe}))
                tra = ga.time_reversal_asymmetry(y, lags=lags, n_batches=cfg.n_batches)
                cl = ga.predicted_lagged_covariance(
                    hess, diff, eta, cfg.batch_size, lags, momentum=mu, basis=basis
                )
                q = int(np.argmax(np.abs(np.asarray(pred)[planes])))
                pi, pj = int(planes[0][q]), int(planes[1][q])
                first[name] = {
                    "y": y,
                    "pred": np.asarray(pred)[planes],
                    "meas": np.asarray(cr.measured),
                    "se": np.asarray(cr.stderr),
                    "r2": r2,
                    "trace": float(jnp.trace(sig)),
                    "plane": (pi, pj),
                    "tra": [
                        (
                            lag,
                            float(tra.asymmetry[li, pi, pj]),
                            float(tra.stderr[li, pi, pj]),
                            float((cl[li].T - cl[li])[pi, pj]),
                        )
                        for li, lag in enumerate(lags)
                    ],
                }
    wall = time.perf_counter() - t0
    return _outcome(cfg, ctx, per, cs, first, minima, d, n, spe, wall)


def _outcome(cfg, ctx, per, cs, first, minima, d, n, spe, wall):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    findings, rows_cur, rows_st, metrics = [], [], [], {"runs": {}, "cs_statistics": {}}
    n_planes = cfg.k * (cfg.k - 1) // 2
    for name, runs in per.items():
        recs = [r for r, _ in runs]
        verdict, reason = current_verdict([jd for _, jd in runs], [r["stationary"] for r in recs])
        metrics["runs"][name] = recs
        used = [r for r in recs if r["stationary"]] or recs
        mz = np.array([r["max_abs_z"] for r in used])
        findings.append(
            Finding(
                claim=(
                    "SGD does not reach equilibrium: at its stationary state the iterates carry "
                    "a probability current (limit cycles), because D does not commute with H "
                    f"({name})"
                ),
                source=SOURCE,
                paper_setting="FC net, 7×7 MNIST, momentum 0.9, ~10⁵ epochs, FFT of increments",
                our_setting=(
                    f"MLP 49-{cfg.hidden}-5 tanh, 5-class MNIST-5k (N = {n}), weight decay "
                    f"{cfg.weight_decay:g}, {name}, {cfg.epochs} epochs × {len(recs)} seeds; "
                    "areal velocity"
                ),
                measured=float(np.median(mz)),
                uncertainty=float(np.std(mz)) if len(mz) > 1 else None,
                null=float(np.median([r["surrogate_q99"] for r in used])),
                verdict=verdict,
                reason=(
                    f"{reason}. Rule: a run has a current when max over {n_planes} planes of "
                    "|areal velocity|/se (batch means) exceeds the Bonferroni 1 % value (Student "
                    "t) and the 99 % quantile of reversible Fourier surrogates; at least half of "
                    "the seeds must pass the stationarity check; reproduced if every "
                    "stationary seed has one, not reproduced if none has and the predicted "
                    "one "
                    "was resolvable. measured = median max |z| over seeds (± sd); null = "
                    "median surrogate 99 % quantile."
                ),
                unit="max |z| over planes",
            )
        )
        for r in recs:
            rows_st.append(
                [
                    name,
                    str(r["seed"]),
                    f"{r['drift_slow_max_z']:.2f} / {r['drift_threshold_slow']:.2f}",
                    f"{r['drift_top_max_z']:.2f}",
                    f"{r['drift_r2_z']:+.2f}",
                    f"{r['r2_mean']:.3g} / {r['trace_sigma_linear']:.3g}",
                    f"{r['slowest_relaxation_epochs']:.1f}",
                    "yes" if r["stationary"] else "no",
                ]
            )
            rows_cur.append(
                [
                    name,
                    str(r["seed"]),
                    f"{r['max_abs_z']:.1f}",
                    f"{r['critical']:.2f} / {r['surrogate_q99']:.2f}",
                    f"{r['planes_above']}/{n_planes}",
                    f"{r['slope']:.2f} ± {r['slope_se']:.2f}",
                    f"{r['corr']:.2f} ± {r['corr_se']:.2f}",
                    f"{r['f_stat']:.1f}",
                    f"{r['tau_int_max']:.0f} / {r['batch_length']}",
                    "yes" if r["detected"] else "no",
                ]
            )
    rows_cs = []
    for name, c in cs.items():
        jq = c["equilibrium_current"]
        metrics["cs_statistics"][name] = {
            "sgd_max_fft_ratio": c["sgd"]["max_ratio"],
            "equilibrium_max_fft_ratio": c["equilibrium"]["max_ratio"],
            "sgd_acf_1e_lag_epochs": c["sgd"]["acf_1e_lag"],
            "equilibrium_acf_1e_lag_epochs": c["equilibrium"]["acf_1e_lag"],
            "equilibrium_current_max_abs_z": jq.max_abs_z,
            "equilibrium_current_detected": jq.detected,
            "time_reversal_asymmetry": first[name]["tra"],
        }
        for who in ("sgd", "equilibrium"):
            rows_cs.append(
                [
                    name,
                    "SGD" if who == "sgd" else "equilibrium model (D ∝ H)",
                    f"{c[who]['max_ratio']:.2f} at {c[who]['freq_of_max_ratio']:.3g}",
                    str(c[who]["acf_1e_lag"]),
                    f"{np.max(np.abs(first[name]['meas'] / first[name]['se'])):.1f}"
                    if who == "sgd"
                    else f"{jq.max_abs_z:.1f}",
                ]
            )
    rows_tra = []
    for name, f in first.items():
        for lag, a, se, pr in f["tra"]:
            rows_tra.append([name, str(f["plane"]), str(lag), f"{a:.3e} ± {se:.1e}", f"{pr:.3e}"])

    figs = []
    # Figure 1: the paper's statistics, SGD against the equilibrium model.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, c), col in zip(cs.items(), ("C0", "C1"), strict=False):
        axes[0].loglog(c["sgd"]["freqs"], c["sgd"]["amp"], color=col, lw=0.8, label=f"SGD {name}")
        axes[0].loglog(
            c["equilibrium"]["freqs"], c["equilibrium"]["amp"], color=col, ls=":", lw=0.8,
            label=f"equilibrium model {name}",
        )  # fmt: skip
        lags = np.arange(c["sgd"]["acf"].size)
        axes[1].plot(lags, c["sgd"]["acf"], color=col, label=f"SGD {name}")
        axes[1].plot(lags, c["equilibrium"]["acf"], color=col, ls=":", label=f"equilibrium {name}")
    axes[0].set(
        xlabel="frequency (cycles / epoch)",
        ylabel="|FFT| of per-epoch increments (mean over weights)",
        title="C&S Fig. 4a statistic",
    )
    axes[1].set(
        xlabel="lag (epochs)",
        ylabel="autocorrelation of weights (mean over weights)",
        title="C&S Fig. 4b statistic",
    )
    for ax in axes:
        ax.legend(fontsize=7)
    figs.append(
        Figure(
            f"{NAME}_fft_acf",
            "The paper's FFT of per-epoch increments and autocorrelation of weights, for SGD "
            "(solid) and for an equilibrium linear model with the same H, η, μ and noise D ∝ H "
            "(dotted): both show the same kind of structure, so these statistics cannot decide.",
            figure_png(fig),
        )
    )
    # Figure 2: measured vs predicted areal velocity (first seed).
    fig, axes = plt.subplots(1, len(first), figsize=(4.3 * len(first), 3.9))
    for ax, (name, f) in zip(np.atleast_1d(axes), first.items(), strict=True):
        ax.errorbar(f["pred"], f["meas"], yerr=2 * f["se"], fmt="o", ms=3, capsize=2,
                    label="measured ± 2 se")  # fmt: skip
        lim = [min(f["pred"].min(), f["meas"].min()), max(f["pred"].max(), f["meas"].max())]
        ax.plot(lim, lim, "k--", lw=1, label="measured = predicted")
        ax.set(
            xlabel="predicted areal velocity per step (linear, H and D at w*)",
            ylabel="measured areal velocity per step",
            title=f"{name}, seed {ctx.seeds[0]}, {n_planes} planes of top-{cfg.k} H",
        )
        ax.ticklabel_format(style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=7)
    figs.append(
        Figure(
            f"{NAME}_areal_velocity",
            "Measured against predicted areal velocity (the probability current) per plane; "
            "error bars ± 2 batch-means standard errors.",
            figure_png(fig),
        )
    )
    # Figure 3: stationarity, |w − w*|² per epoch.
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for (name, f), col in zip(first.items(), ("C0", "C1"), strict=False):
        ax.plot(f["r2"], color=col, lw=0.6, label=f"{name}")
        ax.axhline(f["trace"], color=col, ls="--", lw=1, label=f"{name}: linear tr Σ")
    ax.set(xlabel="epoch (after burn-in)", ylabel="|w − w*|²", yscale="log",
           title="Distance from the minimum per epoch")  # fmt: skip
    ax.legend(fontsize=7)
    figs.append(
        Figure(
            f"{NAME}_stationarity",
            "|w − w*|² at every epoch snapshot against the linear stationary tr Σ.",
            figure_png(fig),
        )
    )

    m0 = minima[0]
    paragraphs = [
        "Claim (Chaudhari & Soatto, abstract and §5): SGD for deep networks does not converge "
        "to an equilibrium; its iterates circulate because the gradient noise is highly "
        "non-isotropic. Their evidence (Fig. 4, as we read the paper; the seed file holds only "
        "the abstract): a small fully connected network "
        "on 7 × 7 MNIST trained with momentum 0.9 for ~10⁵ epochs; the FFT of the per-epoch "
        "weight increments x_{k+1} − x_k, averaged over weights, has peaks, and the "
        "autocorrelation of the weights decays slowly. Those two statistics cannot decide the "
        "question: an equilibrium model with the same Hessian and momentum has structured "
        "spectra too (shown below), and a non-equilibrium linear SDE need not have peaks.",
        f"What we did: a tanh MLP 49-{cfg.hidden}-5 (d = {d}) on the digits 0–4 of MNIST-5k "
        f"(N = {n}, 7 × 7 average-pooled), weight decay {cfg.weight_decay:g} so that a strict "
        f"minimum and a stationary state exist; the minimum by L-BFGS + Newton (|∇f(w*)| = "
        f"{m0['grad_norm']:.1e} for seed {m0['seed']}, Hessian eigenvalues {m0['lambda_min']:.2e} "
        f"… {m0['lambda_max']:.3f}). From w*, SGD with b = {cfg.batch_size} (minibatches drawn "
        f"with replacement; an epoch is N/b = {spe} steps) at η_eff·h_max = {cfg.lr_frac:g}, "
        f"without momentum and with heavy-ball μ = {cfg.momentum:g} (optax convention, same "
        f"effective step); {cfg.epochs} epochs after {cfg.burn_epochs} burn-in epochs, a snapshot "
        f"per epoch (the paper's ~10⁵-epoch run is shrunk to what fits the profile's budget: "
        f"{cfg.epochs} epochs here), and the projections of w − w* on the "
        f"top-{cfg.k} Hessian eigenvectors at every step; seeds {list(ctx.seeds)} (each its own "
        "initialisation, minimum and SGD noise). Differences from the paper: a tiny net, "
        "weight decay (to make stationarity attainable and verifiable), heavy ball instead of "
        "Nesterov, i.i.d. minibatches instead of epoch-wise reshuffling.",
        "Stationarity is checked before any verdict: drift between the two halves of the "
        f"per-epoch projections on the {cfg.k} slowest Hessian directions and of |w − w*|², and "
        f"of the per-step projections on the top-{cfg.k}, against their batch-means "
        "fluctuation (Bonferroni 5 %). Runs that fail are not counted.",
        f"Verdict rule (per momentum setting): a run carries a current when the largest of the "
        f"{n_planes} |areal velocity|/se (batch means over {cfg.n_batches} batches) exceeds "
        "both the Bonferroni 1 % critical value (Student t, B − 1 degrees of freedom; the "
        "family-wise false-detection rate per run is 1 %) and the 99 % quantile of the same "
        "maximum over "
        f"{cfg.n_surrogates} reversible Fourier surrogates of the run (same covariances, no "
        "current); at least half of the seeds must pass the stationarity check, else "
        "inconclusive; reproduced if every stationary seed has one, not reproduced if none has "
        "while the linear prediction from (H, D) at w* would have been resolved, inconclusive "
        "otherwise. The measured-against-predicted slope and correlation (jackknife errors) and "
        "the time-reversal asymmetry at several lags against its prediction are reported "
        "beside it; the equilibrium model (D ∝ H) run through the same rule is the control.",
    ]
    paragraphs.append(
        "Scope: a detected current shows that the stationary state violates detailed balance "
        "(C&S's out-of-equilibrium claim, and their Lemma on non-commuting D and H); it does not "
        "show deterministic closed orbits (limit cycles in the strict sense), which the linear "
        "theory at a strict minimum does not have. A run that fails the stationarity check is "
        "reported but not counted, and the verdict is inconclusive when fewer than half of the "
        "seeds are stationary."
    )
    for name, fd in zip(per, findings, strict=True):
        paragraphs.append(f"Verdict ({name}): {fd.verdict} — {fd.reason}")
    paragraphs.append(f"Wall time {wall:.0f} s.")
    tables = [
        Table(
            "Stationarity (before any verdict)",
            [
                "run",
                "seed",
                "drift slow max|z| / threshold",
                "drift top max|z|",
                "drift |w − w*|² z",
                "mean |w − w*|² / linear tr Σ",
                "slowest relaxation (epochs)",
                "stationary",
            ],
            rows_st,
        ),
        Table(
            "Probability current (areal velocity, top-k Hessian planes)",
            [
                "run",
                "seed",
                "max |z|",
                "Bonferroni 1 % / surrogate 99 %",
                "planes above",
                "slope (meas./pred.) ± jk",
                "corr ± jk",
                "F",
                "τ_int / batch length (steps)",
                "current",
            ],
            rows_cur,
        ),
        Table(
            f"The paper's statistics (seed {ctx.seeds[0]}), SGD against the equilibrium model",
            [
                "run",
                "series",
                "max FFT ratio to shuffled (at cycles/epoch)",
                "ACF of weights < 1/e at lag (epochs)",
                "max |z| of the current",
            ],
            rows_cs,
        ),
        Table(
            f"Time-reversal asymmetry C_ij(τ) − C_ji(τ) in the strongest plane (seed "
            f"{ctx.seeds[0]}); τ = {spe} is one epoch",
            ["run", "plane", "τ (steps)", "measured ± se", "predicted"],
            rows_tra,
        ),
    ]
    metrics.update(
        {
            "config": dataclasses.asdict(cfg),
            "d": d,
            "n_train": n,
            "steps_per_epoch": spe,
            "minima": minima,
            "wall_seconds": wall,
        }
    )
    section = Section(NAME, "Chaudhari & Soatto: limit cycles and the probability current of SGD",
                      paragraphs, tables, figs)  # fmt: skip
    return Outcome(section, metrics, findings)


EXPERIMENT = Experiment(
    name=NAME,
    title="Chaudhari & Soatto: limit cycles and the probability current of SGD",
    sources=(SOURCE,),
    configs=CONFIGS,
    run=run,
)
