"""The ``grd reproduce`` pipeline: train, analyse, integrate, and write a report directory.

One run on the bundled digits data (no download):

1. **training** — a two-layer tanh MLP trained by constant-step SGD; parameter snapshots are
   recorded every ``record_every`` steps (:class:`grd.analysis.TrajectoryRecorder`) and kept
   at the checkpoints (fractions of training).
2. **spectrum** — at every checkpoint the exact spectrum of D (Gram form), its rank under
   the relative and absolute thresholds, ``tr D``, ``|ḡ|²`` and the noise scale
   ``B_simple = tr D / |ḡ|²`` (theory §2, §6).
3. **directional** — vMF concentration of minibatch-gradient directions against the uniform
   baseline ``p/√n``, gradient (norm) stochasticity (Lee, Cho & Kang).
4. **flows** — GD, NGD and GRD integrated from a checkpoint for several ε; distance between
   GRD and NGD, the residual ``R`` along GRD, losses (theory §5).
5. **limit_cycles** — FFT and autocorrelation of the per-step increments of a long
   constant-step SGD run, against a time-shuffled surrogate (Chaudhari & Soatto).
6. **diffusion_map** — diffusion-map embedding and intrinsic dimension of the recorded
   trajectories (Coifman & Lafon; Fjellström & Nyström).

Every number shown in the report is stored in ``metrics.json``. The report is written into a
hidden temporary directory beside the target and renamed into place at the very end, with a
``.grd-report`` marker listing its files (written last), so an interrupted run never leaves a
directory that passes for a complete report, and ``--force`` replaces only directories grd
wrote (``grd._outdir``). Training and the continuation run checkpoint into that hidden
directory and resume from it (``resume=True``, ``grd reproduce --resume``); a diverging run
stops with :class:`DivergenceError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._outdir import OutputError, OutputExistsError, check_output

__all__ = [
    "SECTIONS",
    "ReproduceConfig",
    "DivergenceError",
    "OutputError",
    "OutputExistsError",
    "ReportNotPlacedError",
    "check_output",
    "check_output_dir",
    "reproduce",
]

#: The analysis sections ``--sections`` chooses from, in report order. Training always runs.
SECTIONS: tuple[str, ...] = ("spectrum", "directional", "flows", "limit_cycles", "diffusion_map")

#: Number of examples in the bundled digits data (scikit-learn's ``load_digits``).
DIGITS_SIZE = 1797

#: A run has diverged when the training loss is not finite or exceeds this factor times its
#: initial value (checked every ``record_every`` steps on the whole training set).
DIVERGENCE_FACTOR = 100.0


class DivergenceError(FloatingPointError):
    """SGD diverged: the loss became non-finite or exceeded ``DIVERGENCE_FACTOR`` × initial.

    Attributes: ``stage`` (``"training"`` or ``"continuation"``), ``step``, ``loss``,
    ``initial_loss``, ``lr``.
    """

    def __init__(self, stage: str, step: int, loss: float, initial_loss: float, lr: float):
        self.stage, self.step, self.loss = stage, int(step), float(loss)
        self.initial_loss, self.lr = float(initial_loss), float(lr)
        what = "the constant-step SGD continuation" if stage == "continuation" else "SGD"
        why = (
            "is not finite"
            if not np.isfinite(loss)
            else f"> {DIVERGENCE_FACTOR:g} × the initial {initial_loss:.3g}"
        )
        super().__init__(
            f"{what} diverged at step {self.step}: training loss {self.loss:.3g} ({why}); "
            f"try a smaller --lr (now {lr:g}; the default is {ReproduceConfig.lr:g})."
        )


def _check_loss(stage, step, loss, initial, lr) -> None:
    if not (np.isfinite(loss) and loss <= DIVERGENCE_FACTOR * initial):
        raise DivergenceError(stage, step, loss, initial, lr)


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """Everything a ``grd reproduce`` run depends on (the CLI options map onto it)."""

    width: int = 32
    n_train: int = 1024
    test_fraction: float = 0.2
    steps: int = 3000
    batch_size: int = 32
    lr: float = 0.1
    record_every: int = 10
    checkpoints: tuple[float, ...] = (0.0, 0.2, 0.4, 0.7, 1.0)
    rank_atol: float = 1e-6
    vmf_draws: int = 64
    eps: tuple[float, ...] = (0.1, 0.3, 1.0)
    flow_checkpoint: float = 0.2
    flow_examples: int = 256
    flow_t1: float = 4.0
    flow_points: int = 12
    cycle_steps: int = 2048
    dmap_k: int = 6
    seed: int = 0
    data_seed: int = 0
    float64: bool = False
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def tiny(cls, **overrides) -> ReproduceConfig:
        """A setting that runs in seconds (for tests and smoke checks)."""
        base = dict(
            width=8,
            n_train=96,
            steps=200,
            batch_size=16,
            record_every=5,
            checkpoints=(0.0, 0.5, 1.0),
            vmf_draws=16,
            flow_examples=32,
            flow_t1=1.0,
            flow_points=4,
            cycle_steps=128,
            dmap_k=3,
        )
        base.update(overrides)
        return cls(**base)

    @property
    def flow_batch_size(self) -> int:
        """Examples used by the flows: ``flow_examples``, capped at ``n_train``."""
        return min(self.flow_examples, self.n_train)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ValueError(
                f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}."
            )
        for name in (
            "width",
            "n_train",
            "steps",
            "batch_size",
            "record_every",
            "flow_examples",
            "flow_points",
            "dmap_k",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}.")
        if self.n_train < 4:
            raise ValueError(f"n_train must be at least 4; got {self.n_train}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1); got {self.test_fraction}.")
        available = DIGITS_SIZE - int(round(self.test_fraction * DIGITS_SIZE))
        if self.n_train > available:
            raise ValueError(
                f"n_train must be at most {available} (the {DIGITS_SIZE} digits less the "
                f"test fraction {self.test_fraction}); got {self.n_train}."
            )
        if self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed n_train ({self.n_train})."
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr}.")
        if not self.eps or any(not (e > 0 and np.isfinite(e)) for e in self.eps):
            raise ValueError(f"eps values must be positive and finite; got {list(self.eps)}.")
        if not self.checkpoints or any(not 0.0 <= c <= 1.0 for c in self.checkpoints):
            raise ValueError(f"checkpoints must lie in [0, 1]; got {list(self.checkpoints)}.")
        if self.steps // self.record_every < max(4, self.dmap_k + 1):
            raise ValueError(
                f"steps / record_every must be at least {max(4, self.dmap_k + 1)} (snapshots "
                "for the diffusion map)."
            )
        if self.vmf_draws < 2:
            raise ValueError(f"vmf_draws must be at least 2; got {self.vmf_draws}.")
        if self.cycle_steps < 16:
            raise ValueError(f"cycle_steps must be at least 16; got {self.cycle_steps}.")
        if self.flow_examples < 2:
            raise ValueError(f"flow_examples must be at least 2; got {self.flow_examples}.")
        for name in ("seed", "data_seed"):
            if not 0 <= getattr(self, name) <= 2**32 - 1:
                raise ValueError(
                    f"{name} must be an integer in [0, 2**32 - 1]; got {getattr(self, name)}."
                )
        if not (self.flow_t1 > 0 and np.isfinite(self.flow_t1)):
            raise ValueError(f"flow_t1 must be positive and finite; got {self.flow_t1}.")
        if not 0.0 <= self.flow_checkpoint <= 1.0:
            raise ValueError(f"flow_checkpoint must lie in [0, 1]; got {self.flow_checkpoint}.")


def check_output_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output path grd may not write (see :func:`grd._outdir.check_output`)."""
    check_output(out, overwrite=overwrite)


# --------------------------------------------------------------------------------------------
# Run state


@dataclasses.dataclass
class _Run:
    """What the sections share: data, model, loss and the recorded training run."""

    cfg: ReproduceConfig
    dtype: object
    train: dict
    test: dict
    model: object
    loss_fn: Callable
    d: int
    unravel: Callable
    history: dict  # step, train_loss, test_acc per record
    snapshots: np.ndarray  # (n_snapshots, d) flattened parameters
    snapshot_steps: np.ndarray
    checkpoints: list  # [(fraction, step, params)]
    flow_start: tuple  # (fraction, step, params) where the flows start
    final_params: object
    sgd_step: Callable  # jitted (params, key) -> params, one SGD step
    progress: bool
    workdir: Path
    mean_loss: Callable | None = None  # (params, batch) -> mean loss
    _cycle: np.ndarray | None = None

    def cycle_trajectory(self) -> np.ndarray:
        """``(cycle_steps + 1, d)`` snapshots of constant-step SGD continued from the end of
        training, one per step (computed once)."""
        if self._cycle is None:
            import jax
            from jax.flatten_util import ravel_pytree

            cfg = self.cfg

            @jax.jit
            def block(params, keys):
                def step(p, k):
                    p = self.sgd_step(p, k)
                    return p, ravel_pytree(p)[0]

                return jax.lax.scan(step, params, keys)

            from .analysis import TrajectoryRecorder, load_trajectory

            store = self.workdir / "trajectory" / "continuation"
            keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 1), cfg.cycle_steps)
            size = 256
            n_blocks = -(-cfg.cycle_steps // size)
            loss_fn = jax.jit(self.mean_loss)
            initial = float(self.history["train_loss"][0])
            with (
                TrajectoryRecorder(store, every=1, chunk=size) as rec,
                _tqdm(
                    total=cfg.cycle_steps,
                    desc="constant-step SGD run",
                    unit="step",
                    disable=not self.progress,
                ) as bar,
            ):
                done = -1 if rec.last_step is None else rec.last_step  # resumed store
                if done < 0:
                    rec.record(0, self.final_params)

                def block_fn(params, b):
                    i = int(b) * size
                    params, ws = block(params, keys[i : i + size])
                    for j, w in enumerate(np.asarray(ws)):
                        if i + j + 1 > done:  # a resumed store may hold it already
                            rec.record(i + j + 1, w)
                    last = i + ws.shape[0]
                    _check_loss(
                        "continuation", last, float(loss_fn(params, self.train)), initial, cfg.lr
                    )
                    bar.n = last
                    bar.refresh()
                    return params

                _checkpointed(
                    "continuation",
                    block_fn,
                    self.final_params,
                    n_blocks,
                    self.workdir,
                    every=max(1, n_blocks // CHECKPOINTS_PER_STAGE),
                    on_save=lambda *_: rec.flush(),
                )
            traj = load_trajectory(store).as_array()
            if traj.shape[0] != cfg.cycle_steps + 1:
                raise RuntimeError(
                    f"the recorder returned {traj.shape[0]} snapshots; expected "
                    f"{cfg.cycle_steps + 1}."
                )
            if not np.all(np.isfinite(traj)):  # (the loss check above catches this first)
                bad = int(np.argmin(np.all(np.isfinite(traj), axis=1)))
                raise DivergenceError("continuation", bad, float("nan"), initial, cfg.lr)
            self._cycle = traj
        return self._cycle


def _tqdm(**kw):
    import sys

    from tqdm.auto import tqdm

    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(**kw)


def _mean_loss(loss_fn):
    import jax
    import jax.numpy as jnp

    def f(params, batch):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(params, batch))

    return f


def _train(cfg: ReproduceConfig, progress: bool, workdir: Path) -> _Run:
    """Constant-step SGD on the digits MLP, recording snapshots and checkpoints."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from .analysis import TrajectoryRecorder, load_trajectory
    from .data import load_digits
    from .models.mlp import accuracy, init_mlp, mlp_classifier

    dtype = jnp.float64 if cfg.float64 else jnp.float32
    np_dtype = np.float64 if cfg.float64 else np.float32
    train, test = load_digits(
        None, test_fraction=cfg.test_fraction, seed=cfg.data_seed, dtype=np_dtype
    )
    if cfg.n_train > len(train["y"]):
        raise ValueError(
            f"n_train must be at most {len(train['y'])} with test_fraction "
            f"{cfg.test_fraction}; got {cfg.n_train}."
        )
    train = {k: jnp.asarray(v[: cfg.n_train]) for k, v in train.items()}
    test = {k: jnp.asarray(v) for k, v in test.items()}
    model, loss_fn = mlp_classifier(hidden=(cfg.width,))
    key_init, key_sgd = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = init_mlp(model, key_init, train["x"].shape[1], dtype)
    flat0, unravel = ravel_pytree(params)
    d = int(flat0.size)
    mean_loss = _mean_loss(loss_fn)
    opt = optax.sgd(cfg.lr)
    opt_state = opt.init(params)
    n = cfg.n_train

    def sgd_step(p, key):
        """One step of SGD (optax.sgd is stateless) on a minibatch drawn with replacement."""
        idx = jax.random.randint(key, (cfg.batch_size,), 0, n)
        mb = jax.tree_util.tree_map(lambda x: x[idx], train)
        u, _ = opt.update(jax.grad(mean_loss)(p, mb), opt_state, p)
        return optax.apply_updates(p, u)

    @jax.jit
    def run_chunk(params, key):
        def step(p, k):
            return sgd_step(p, k), None

        return jax.lax.scan(step, params, jax.random.split(key, cfg.record_every))[0]

    @jax.jit
    def evaluate(params):
        return mean_loss(params, train), accuracy(model, params, test)

    n_chunks = cfg.steps // cfg.record_every
    ck_chunks = sorted({int(round(c * n_chunks)) for c in cfg.checkpoints})
    flow_chunk = int(round(cfg.flow_checkpoint * n_chunks))
    store = workdir / "trajectory" / "training"
    keys = jax.random.split(key_sgd, n_chunks)
    hist_dtype = np.float64 if cfg.float64 else np.float32
    loss0, acc0 = evaluate(params)
    _check_loss("training", 0, float(loss0), float(loss0), cfg.lr)
    state = {
        "params": params,
        "train_loss": np.zeros(n_chunks + 1, hist_dtype),
        "test_accuracy": np.zeros(n_chunks + 1, hist_dtype),
    }
    state["train_loss"][0], state["test_accuracy"][0] = loss0, acc0

    with (
        TrajectoryRecorder(store, every=cfg.record_every, chunk=256) as recorder,
        _tqdm(total=cfg.steps, desc="SGD training", unit="step", disable=not progress) as bar,
    ):
        done = -1 if recorder.last_step is None else recorder.last_step  # resumed store
        if done < 0:
            recorder.record(0, params)

        def chunk_fn(state, i):
            """SGD steps of chunk ``i + 1``; record the snapshot, loss and accuracy after it."""
            c = int(i) + 1
            step = c * cfg.record_every
            p = run_chunk(state["params"], keys[c - 1])
            loss, acc = evaluate(p)
            # a resumed run holds jax arrays after loading: back to (mutable) numpy once
            hist = {
                k: v if isinstance(v, np.ndarray) else np.array(v)
                for k, v in state.items()
                if k != "params"
            }
            hist["train_loss"][c], hist["test_accuracy"][c] = loss, acc
            _check_loss("training", step, float(loss), float(hist["train_loss"][0]), cfg.lr)
            if step > done:  # a resumed store may hold it already
                recorder.record(step, p)
            bar.n = step
            bar.set_postfix(loss=f"{float(loss):.3f}")
            return {"params": p, **hist}

        state = _checkpointed(
            "training",
            chunk_fn,
            state,
            n_chunks,
            workdir,
            every=max(1, n_chunks // CHECKPOINTS_PER_STAGE),
            on_save=lambda *_: recorder.flush(),
        )
    trajectory = load_trajectory(store)
    snapshots = trajectory.as_array()
    if snapshots.shape[0] != n_chunks + 1:
        raise RuntimeError(
            f"the training store holds {snapshots.shape[0]} snapshots; expected {n_chunks + 1}."
        )

    def at(chunk):
        return chunk / n_chunks, chunk * cfg.record_every, unravel(jnp.asarray(snapshots[chunk]))

    history = {
        "step": np.arange(n_chunks + 1) * cfg.record_every,
        "train_loss": np.asarray(state["train_loss"], np.float64),
        "test_accuracy": np.asarray(state["test_accuracy"], np.float64),
    }
    return _Run(
        cfg=cfg,
        dtype=dtype,
        train=train,
        test=test,
        model=model,
        loss_fn=loss_fn,
        d=d,
        unravel=unravel,
        history=history,
        snapshots=snapshots,
        snapshot_steps=np.asarray(trajectory.steps),
        checkpoints=[at(c) for c in ck_chunks],
        flow_start=at(flow_chunk),
        final_params=unravel(jnp.asarray(snapshots[-1])),
        sgd_step=sgd_step,
        progress=progress,
        workdir=workdir,
        mean_loss=mean_loss,
    )


#: Checkpoints written per long stage (training, continuation): a kill loses at most
#: 1/CHECKPOINTS_PER_STAGE of the stage.
CHECKPOINTS_PER_STAGE = 20


def _checkpointed(name, step_fn, state, num_steps, workdir: Path, *, every, on_save=None):
    """:func:`grd.checkpoint.run_checkpointed` into ``workdir/checkpoints/<name>.npz``.

    A run resumed in the same work directory continues from the last checkpoint; the
    metadata ties the checkpoint to the stage and its length.
    """
    from .checkpoint import run_checkpointed

    return run_checkpointed(
        step_fn,
        state,
        num_steps,
        path=workdir / "checkpoints" / f"{name}.npz",
        every=every,
        on_save=on_save,
        metadata={"stage": name, "num_steps": int(num_steps), "every": int(every)},
    )


# --------------------------------------------------------------------------------------------
# Sections: each returns (report.Section, metrics dict)


def _fmt(x, digits=3) -> str:
    x = float(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def _section_training(run: _Run):
    import matplotlib.pyplot as plt

    from .report import Figure, Section, Table, figure_png

    cfg, h = run.cfg, run.history
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.semilogy(h["step"], h["train_loss"], color="C0")
    ax1.set(xlabel="SGD step", ylabel="training loss (mean cross-entropy)")
    ax2.plot(h["step"], h["test_accuracy"], color="C1")
    ax2.set(xlabel="SGD step", ylabel="test accuracy", ylim=(0, 1.02))
    for _, step, _ in run.checkpoints:
        for ax in (ax1, ax2):
            ax.axvline(step, color="0.7", lw=0.8, ls="--")
    fig.suptitle("Constant-step SGD on the digits (checkpoints dashed)")
    metrics = {
        "n_train": cfg.n_train,
        "n_test": int(run.test["y"].shape[0]),
        "d": run.d,
        "width": cfg.width,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.lr,
        "temperature": cfg.lr / (2 * cfg.batch_size),
        "final_train_loss": float(h["train_loss"][-1]),
        "final_test_accuracy": float(h["test_accuracy"][-1]),
        "checkpoint_steps": [step for _, step, _ in run.checkpoints],
        "history": h,
    }
    table = Table(
        "Training setting and result",
        ["quantity", "value"],
        [
            ["examples (train / test)", f"{cfg.n_train} / {metrics['n_test']}"],
            ["parameters d", str(run.d)],
            ["hidden width", str(cfg.width)],
            ["SGD steps × batch", f"{cfg.steps} × {cfg.batch_size}"],
            [
                "learning rate η; temperature η/(2b)",
                f"{_fmt(cfg.lr)}; {_fmt(metrics['temperature'])}",
            ],
            ["final training loss", _fmt(metrics["final_train_loss"], 4)],
            ["final test accuracy", _fmt(metrics["final_test_accuracy"], 4)],
        ],
    )
    section = Section(
        "training",
        "Training",
        [
            f"A 64–{cfg.width}–10 tanh MLP (d = {run.d} parameters) trained by constant-step "
            f"SGD with replacement on {cfg.n_train} digits; snapshots every "
            f"{cfg.record_every} steps, checkpoints at "
            + ", ".join(f"{100 * f:.0f} %" for f, _, _ in run.checkpoints)
            + " of training."
        ],
        [table],
        [Figure("training", "Training loss and test accuracy along SGD.", figure_png(fig))],
    )
    return section, metrics


def _section_spectrum(run: _Run):
    import jax
    import matplotlib.pyplot as plt

    from . import diffusion_rank, diffusion_spectrum
    from .analysis import noise_scale_simple
    from .report import Figure, Section, Table, figure_png

    cfg, train, loss_fn = run.cfg, run.train, run.loss_fn

    @jax.jit
    def measure(params):
        lam = diffusion_spectrum(loss_fn, params, train, method="gram").eigenvalues
        noise = noise_scale_simple(loss_fn, params, train)
        return lam, noise.trace, noise.grad_norm_sq

    rows, per_ck = [], []
    for frac, step, params in _tqdm(
        iterable=run.checkpoints, desc="spectrum of D", unit="ckpt", disable=not run.progress
    ):
        lam, tr, g2 = jax.device_get(measure(params))
        lam = np.asarray(lam, dtype=np.float64)
        r_rel = int(diffusion_rank(lam, run.d, threshold="relative"))
        r_abs = int(diffusion_rank(lam, run.d, threshold="absolute", atol=cfg.rank_atol))
        nz = lam[: max(r_rel, 1)]
        tr, g2 = float(tr), float(g2)
        m = {
            "fraction": frac,
            "step": step,
            "eigenvalues": lam,
            "lambda_max": float(lam[0]),
            "rank_relative": r_rel,
            "rank_absolute": r_abs,
            "rank_over_d": r_rel / run.d,
            "rank_over_n_minus_1": r_rel / (cfg.n_train - 1),
            "eigenvalue_mean": float(nz.mean()),
            "eigenvalue_std": float(nz.std()),
            "trace_D": tr,
            "trace_from_eigenvalues": float(lam.sum()),
            "mean_grad_sq_norm": g2,
            "noise_scale_B_simple": tr / g2,
        }
        per_ck.append(m)
        rows.append(
            [
                f"{100 * frac:.0f} % (step {step})",
                _fmt(m["lambda_max"]),
                str(r_rel),
                str(r_abs),
                f"{100 * m['rank_over_d']:.2f} %",
                f"{_fmt(m['eigenvalue_mean'])} ± {_fmt(m['eigenvalue_std'])}",
                _fmt(tr),
                _fmt(g2),
                _fmt(m["noise_scale_B_simple"]),
            ]
        )

    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(len(per_ck) - 1, 1)) for i in range(len(per_ck))]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m, c in zip(per_ck, colors, strict=True):
        lam = m["eigenvalues"]
        pos = lam[lam > 0]
        label = f"{100 * m['fraction']:.0f} %"
        ax1.loglog(np.arange(1, pos.size + 1), pos, color=c, label=label)
        kept = lam[: max(m["rank_relative"], 1)]
        bins = np.logspace(np.log10(kept.min()), np.log10(kept.max()) + 1e-9, 30)
        hist, edges = np.histogram(kept, bins=bins)
        centres = np.sqrt(edges[:-1] * edges[1:])
        ax2.loglog(centres[hist > 0], hist[hist > 0], "o-", ms=3, color=c, label=label)
    ax1.set(xlabel="index i", ylabel="eigenvalue λ_i of D", title="Sorted spectrum of D")
    ax2.set(xlabel="eigenvalue λ", ylabel="count", title="Histogram (above the rank threshold)")
    ax1.legend(title="training", fontsize=8)
    fig.tight_layout()
    fig_spec = Figure(
        "spectrum",
        "Eigenvalues of the diffusion matrix D at the checkpoints (log-log).",
        figure_png(fig),
    )

    steps = [m["step"] for m in per_ck]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax1.semilogy(steps, [m["trace_D"] for m in per_ck], "o-", label="tr D")
    ax1.semilogy(steps, [m["mean_grad_sq_norm"] for m in per_ck], "s-", label="|ḡ|²")
    ax1.set(xlabel="SGD step", title="Noise and signal")
    ax1.legend()
    ax2.semilogy(steps, [m["noise_scale_B_simple"] for m in per_ck], "o-", color="C2")
    ax2.axhline(cfg.batch_size, color="0.5", ls="--", lw=0.8, label=f"batch b = {cfg.batch_size}")
    ax2.set(xlabel="SGD step", title="Gradient noise scale B_simple = tr D / |ḡ|²")
    ax2.legend()
    fig.tight_layout()
    fig_noise = Figure(
        "noise_scale", "tr D, |ḡ|² and the noise scale B_simple along training.", figure_png(fig)
    )

    eps32 = float(np.finfo(np.float32).eps)
    section = Section(
        "spectrum",
        "Spectrum and rank of the diffusion matrix D",
        [
            f"Exact eigenvalues of D = Cov_a(g_a, g_a) from the {cfg.n_train}×{cfg.n_train} Gram "
            f"matrix of the centred per-example gradients (rank D ≤ min(d, N − 1) = "
            f"{min(run.d, cfg.n_train - 1)}). Rank thresholds: relative λ > λ_max·d·eps_float32 "
            f"(d·eps = {_fmt(run.d * eps32)}) and absolute λ > {_fmt(cfg.rank_atol)}; mean ± std "
            "over the eigenvalues above the relative threshold. Chaudhari & Soatto report ranks "
            "of 0.3–1.8 % of d for networks with d ≫ N; this small model on a small data set "
            "is bounded by N − 1 instead.",
            "B_simple = tr D / |ḡ|² (McCandlish et al.) is the batch size above which larger "
            "batches stop reducing the number of steps much; compare it with the batch size b.",
        ],
        [
            Table(
                "Spectrum, rank and noise scale at the checkpoints",
                [
                    "checkpoint",
                    "λ_max",
                    "rank (rel.)",
                    "rank (abs.)",
                    "rank/d",
                    "mean ± std λ",
                    "tr D",
                    "|ḡ|²",
                    "B_simple",
                ],
                rows,
            )
        ],
        [fig_spec, fig_noise],
    )
    return section, {"rank_atol": cfg.rank_atol, "checkpoints": per_ck}


def _section_directional(run: _Run):
    import jax
    import matplotlib.pyplot as plt

    from .analysis import (
        gradient_norm_stochasticity,
        gradient_stochasticity,
        minibatch_gradients,
        uniform_concentration_baseline,
        vmf_concentration,
    )
    from .report import Figure, Section, Table, figure_png

    cfg = run.cfg
    n, b, p = cfg.vmf_draws, cfg.batch_size, run.d
    baseline = float(uniform_concentration_baseline(p, n))
    per_ck, rows = [], []
    for i, (frac, step, params) in enumerate(
        _tqdm(
            iterable=run.checkpoints,
            desc="vMF concentration",
            unit="ckpt",
            disable=not run.progress,
        )
    ):
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 2), i)
        grads = minibatch_gradients(
            run.loss_fn, params, run.train, key, n=n, batch_size=b, replace=True
        )
        m = {
            "fraction": frac,
            "step": step,
            "kappa_mle": float(vmf_concentration(grads, method="mle")),
            "kappa_banerjee": float(vmf_concentration(grads, method="banerjee")),
            "gradient_norm_stochasticity": float(gradient_norm_stochasticity(grads)),
            "gradient_stochasticity": float(gradient_stochasticity(grads)),
        }
        m["kappa_over_baseline"] = m["kappa_mle"] / baseline
        per_ck.append(m)
        rows.append(
            [
                f"{100 * frac:.0f} % (step {step})",
                _fmt(m["kappa_mle"]),
                _fmt(m["kappa_banerjee"]),
                _fmt(m["kappa_over_baseline"]),
                _fmt(m["gradient_norm_stochasticity"]),
                _fmt(m["gradient_stochasticity"]),
            ]
        )
    steps = [m["step"] for m in per_ck]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax1.semilogy(steps, [m["kappa_mle"] for m in per_ck], "o-", label="κ (MLE)")
    ax1.semilogy(steps, [m["kappa_banerjee"] for m in per_ck], "x--", label="κ (Banerjee)")
    ax1.axhline(baseline, color="0.4", ls=":", label=f"uniform baseline p/√n ≈ {baseline:.0f}")
    ax1.set(xlabel="SGD step", ylabel="κ", title=f"vMF concentration of {n} minibatch gradients")
    ax1.legend(fontsize=8)
    ax2.plot(
        steps,
        [m["gradient_norm_stochasticity"] for m in per_ck],
        "o-",
        label="norm stochasticity (CV of |ĝ_i|)",
    )
    ax2.plot(
        steps,
        [m["gradient_stochasticity"] for m in per_ck],
        "s-",
        label="gradient stochasticity |std|/|mean|",
    )
    ax2.set_yscale("log")
    ax2.set(xlabel="SGD step", title="Gradient stochasticity")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    section = Section(
        "directional",
        "Directional statistics of minibatch gradients",
        [
            f"At every checkpoint, n = {n} minibatch gradients of size b = {b} (drawn with "
            f"replacement) are normalised to unit directions u_i in R^p, p = d = {p}, and a von "
            "Mises–Fisher concentration is fitted: the exact MLE A_p(κ) = R̄ and Banerjee's "
            "approximation κ ≈ R̄(p − R̄²)/(1 − R̄²) (Lee, Cho & Kang). Uniformly random "
            f"directions give κ ≈ p/√n = {baseline:.1f}, not 0: κ is only meaningful against "
            "that baseline, with n held fixed across checkpoints.",
        ],
        [
            Table(
                "Concentration and stochasticity at the checkpoints",
                [
                    "checkpoint",
                    "κ (MLE)",
                    "κ (Banerjee)",
                    "κ / baseline",
                    "norm stoch.",
                    "grad. stoch.",
                ],
                rows,
            )
        ],
        [
            Figure(
                "directional",
                "vMF concentration κ of minibatch-gradient directions against "
                "the uniform baseline, and gradient stochasticity.",
                figure_png(fig),
            )
        ],
    )
    return section, {
        "n_draws": n,
        "batch_size": b,
        "p": p,
        "uniform_baseline": baseline,
        "checkpoints": per_ck,
    }


def _section_flows(run: _Run):
    import diffrax
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    from jax.flatten_util import ravel_pytree

    from . import compare_flows, integrate, lambda_max
    from .report import Figure, Section, Table, figure_png

    cfg = run.cfg
    frac, step, w0 = run.flow_start
    batch = jax.tree_util.tree_map(lambda x: x[: cfg.flow_batch_size], run.train)
    ts = np.linspace(cfg.flow_t1 / cfg.flow_points, cfg.flow_t1, cfg.flow_points)
    ts_j = jnp.asarray(ts, dtype=run.dtype)
    lam0 = float(lambda_max(run.loss_fn, w0, batch, num_matvecs=min(run.d, 30)))
    mean_loss = _mean_loss(run.loss_fn)

    flatten = jax.vmap(lambda p: ravel_pytree(p)[0])

    @jax.jit
    def gd_path(w0, batch):
        sol = integrate(
            run.loss_fn, w0, batch, flow="gd", t1=cfg.flow_t1, saveat=diffrax.SaveAt(ts=ts_j)
        )
        return jax.vmap(mean_loss, in_axes=(0, None))(sol.ys, batch), flatten(sol.ys)

    @jax.jit
    def grd_vs_ngd(w0, batch, eps, ts):
        # one compilation for every ε (ε is traced; so is ts: compare_flows reads t1 = ts[-1]
        # eagerly unless ts is a tracer)
        cmp = compare_flows(run.loss_fn, w0, batch, eps=eps, ts=ts)
        sol_ngd = integrate(
            run.loss_fn, w0, batch, flow="ngd", t1=ts[-1], eps=eps, saveat=diffrax.SaveAt(ts=ts)
        )
        return cmp, flatten(sol_ngd.ys)

    bar = _tqdm(
        total=1 + len(cfg.eps), desc="GRD / NGD / GD flows", unit="flow", disable=not run.progress
    )
    with bar:
        loss_gd, flat_gd = jax.device_get(gd_path(w0, batch))
        bar.update(1)
        per_eps = []
        for c in cfg.eps:
            eps = c / lam0
            cmp, flat_ngd = jax.device_get(grd_vs_ngd(w0, batch, jnp.asarray(eps, run.dtype), ts_j))
            m = {
                "eps_times_lambda_max": c,
                "eps": eps,
                "distance_grd_ngd": np.asarray(cmp.distance),
                "distance_ngd_gd": np.linalg.norm(flat_ngd - flat_gd, axis=1),
                "loss_grd": np.asarray(cmp.loss_grd),
                "loss_ngd": np.asarray(cmp.loss_ngd),
                "residual_norm": np.asarray(cmp.residual_norm),
                "field_strength": np.asarray(cmp.field_strength),
            }
            m["distance_grd_ngd_t1"] = float(m["distance_grd_ngd"][-1])
            m["distance_ngd_gd_t1"] = float(m["distance_ngd_gd"][-1])
            m["max_residual_norm"] = float(m["residual_norm"].max())
            per_eps.append(m)
            bar.update(1)
    path_len = float(np.linalg.norm(flat_gd[-1] - np.asarray(ravel_pytree(w0)[0])))
    cs = np.array([m["eps_times_lambda_max"] for m in per_eps])
    dist_t1 = np.array([m["distance_grd_ngd_t1"] for m in per_eps])
    slope = (
        float(np.polyfit(np.log(cs), np.log(dist_t1), 1)[0])
        if len(cs) >= 2 and np.all(dist_t1 > 0)
        else None
    )

    cmap = plt.get_cmap("plasma")
    colors = [cmap(0.15 + 0.7 * i / max(len(per_eps) - 1, 1)) for i in range(len(per_eps))]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.6))
    ax = axes[0, 0]
    for m, col in zip(per_eps, colors, strict=True):
        ax.semilogy(
            ts,
            np.maximum(m["distance_grd_ngd"], 1e-30),
            "o-",
            ms=3,
            color=col,
            label=f"ε·λ_max = {_fmt(m['eps_times_lambda_max'])}",
        )
    ax.set(xlabel="t", ylabel="‖w_GRD(t) − w_NGD(t)‖", title="GRD against its NGD limit")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for m, col in zip(per_eps, colors, strict=True):
        ax.semilogy(ts, np.maximum(m["residual_norm"], 1e-30), "o-", ms=3, color=col)
    ax.set(xlabel="t", ylabel="|R| along the GRD path", title="Residual R = a_GRD − ẅ_NGD")
    ax = axes[1, 0]
    ax.plot(ts, loss_gd, "k--", label="GD")
    for m, col in zip(per_eps, colors, strict=True):
        ax.plot(ts, m["loss_ngd"], "-", color=col, label=f"NGD {_fmt(m['eps_times_lambda_max'])}")
        ax.plot(ts, m["loss_grd"], ":", color=col, lw=2)
    ax.set(
        xlabel="t", ylabel="mean loss", title="Loss along GD (dashed), NGD (solid), GRD (dotted)"
    )
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    ax.loglog(cs, dist_t1, "o-", label="‖w_GRD − w_NGD‖ at t1")
    ax.loglog(cs, [m["distance_ngd_gd_t1"] for m in per_eps], "s--", label="‖w_NGD − w_GD‖ at t1")
    ax.set(xlabel="ε·λ_max(D(w0))", title="Distances at t1 against ε")
    ax.legend(fontsize=8)
    fig.tight_layout()

    rows = [
        [
            _fmt(m["eps_times_lambda_max"]),
            _fmt(m["eps"]),
            _fmt(m["distance_grd_ngd_t1"]),
            _fmt(m["distance_ngd_gd_t1"]),
            _fmt(m["max_residual_norm"]),
            _fmt(m["loss_grd"][-1], 4),
            _fmt(m["loss_ngd"][-1], 4),
        ]
        for m in per_eps
    ]
    paragraphs = [
        f"From the checkpoint at {100 * frac:.0f} % of training (step {step}), on the first "
        f"{cfg.flow_batch_size} training examples, GD (ẇ = −∇f), NGD (ẇ = −g⁻¹∇f, "
        "g = I + εD, exact inverse by CG) and GRD (ẅ = −Hẇ − Γ²(ẇ, ẇ), exact Christoffel "
        "symbols, started on the "
        f"NGD velocity) are integrated with diffrax up to t1 = {_fmt(cfg.flow_t1)}, for "
        f"ε = C/λ_max(D(w0)), λ_max = {_fmt(lam0)}. The GD path moves "
        f"‖w_GD(t1) − w0‖ = {_fmt(path_len)}.",
        "GRD reduces to NGD only where the residual R = (g⁻¹ − I)Hẇ + ½g⁻¹∂g(ẇ, ẇ) stays ≈ 0; "
        "the measured distance between the paths and |R| along GRD say how far that holds.",
    ]
    if slope is not None:
        paragraphs.append(
            f"Log-log slope of the GRD–NGD distance at t1 against ε: {slope:.2f} "
            "(1 = the gap grows linearly with ε, the first-order prediction)."
        )
    section = Section(
        "flows",
        "Geodesic flows: GRD, NGD and GD",
        paragraphs,
        [
            Table(
                "Flows at t1 for each ε",
                ["ε·λ_max", "ε", "‖GRD − NGD‖", "‖NGD − GD‖", "max |R|", "loss GRD", "loss NGD"],
                rows,
            )
        ],
        [
            Figure(
                "flows",
                "Distance between GRD and NGD, the residual |R|, the losses along "
                "each flow, and the distances at t1 against ε.",
                figure_png(fig),
            )
        ],
    )
    metrics = {
        "start_fraction": frac,
        "start_step": step,
        "n_examples": cfg.flow_batch_size,
        "t1": cfg.flow_t1,
        "ts": ts,
        "lambda_max_start": lam0,
        "loss_gd": loss_gd,
        "gd_path_length": path_len,
        "per_eps": per_eps,
    }
    if slope is not None:
        metrics["distance_vs_eps_loglog_slope"] = slope
    return section, metrics


def _section_limit_cycles(run: _Run):
    import jax
    import matplotlib.pyplot as plt

    from .analysis import autocorrelation, increment_spectrum, shuffled_surrogate
    from .report import Figure, Section, Table, figure_png

    cfg = run.cfg
    full = run.cycle_trajectory()
    # weights that never move (e.g. those fed by always-blank pixels) have no increment
    # spectrum or autocorrelation: analyse the moving ones
    moving = np.std(np.diff(full, axis=0), axis=0) > 0
    traj = full[:, moving]
    n_blank = int(np.sum(np.max(np.asarray(run.train["x"]), axis=0) == 0))
    with _tqdm(total=3, desc="limit-cycle analysis", unit="step", disable=not run.progress) as bar:
        surrogate = np.asarray(shuffled_surrogate(traj, jax.random.PRNGKey(cfg.seed + 3)))
        bar.update(1)
        real = increment_spectrum(traj)
        surr = increment_spectrum(surrogate)
        bar.update(1)
        max_lag = min(50, traj.shape[0] // 4)
        acf_real = autocorrelation(np.diff(traj, axis=0), max_lag)
        acf_surr = autocorrelation(np.diff(surrogate, axis=0), max_lag)
        bar.update(1)
    freqs = np.asarray(real.frequencies)
    mean_r, std_r = np.asarray(real.mean), np.asarray(real.std)
    mean_s, std_s = np.asarray(surr.mean), np.asarray(surr.std)
    ratio = mean_r / mean_s
    acf_r = np.asarray(acf_real.acf).mean(axis=1)
    acf_s = np.asarray(acf_surr.acf).mean(axis=1)
    band = float(acf_real.band)
    lags = np.asarray(acf_real.lags)
    low = freqs <= np.quantile(freqs, 0.1)
    high = freqs >= np.quantile(freqs, 0.9)
    metrics = {
        "steps": cfg.cycle_steps,
        "moving_weights": int(moving.sum()),
        "frequencies": freqs,
        "amplitude_mean": mean_r,
        "amplitude_std": std_r,
        "surrogate_amplitude_mean": mean_s,
        "surrogate_amplitude_std": std_s,
        "max_ratio_to_surrogate": float(ratio.max()),
        "frequency_of_max_ratio": float(freqs[int(np.argmax(ratio))]),
        "low_over_high_amplitude": float(mean_r[low].mean() / mean_r[high].mean()),
        "surrogate_low_over_high_amplitude": float(mean_s[low].mean() / mean_s[high].mean()),
        "acf_lags": lags,
        "acf_mean_over_weights": acf_r,
        "surrogate_acf_mean_over_weights": acf_s,
        "acf_band_95": band,
        "lag1_acf": float(acf_r[1]),
        "surrogate_lag1_acf": float(acf_s[1]),
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.loglog(freqs, mean_r, color="C0", label="SGD increments")
    ax1.fill_between(
        freqs, np.maximum(mean_r - std_r, mean_r * 0.05), mean_r + std_r, color="C0", alpha=0.2
    )
    ax1.loglog(freqs, mean_s, color="C3", lw=1, label="time-shuffled surrogate")
    ax1.set(
        xlabel="frequency (cycles / step)",
        ylabel="|FFT| of w_{k+1} − w_k",
        title="Increment spectrum (mean ± std over weights)",
    )
    ax1.legend(fontsize=8)
    ax2.plot(lags[1:], acf_r[1:], "o-", ms=3, label="SGD increments")
    ax2.plot(lags[1:], acf_s[1:], "x-", ms=3, color="C3", label="surrogate")
    ax2.axhspan(-band, band, color="0.85", label="95 % band, one white-noise series")
    ax2.set(
        xlabel="lag (steps)",
        ylabel="autocorrelation (mean over weights)",
        title="Autocorrelation of increments",
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    section = Section(
        "limit_cycles",
        "Limit cycles: increments of a long constant-step SGD run",
        [
            f"After training, SGD continues for {cfg.cycle_steps} steps at the same learning "
            f"rate, recording every step. The {run.d - int(moving.sum())} weights whose "
            "increments are all zero are left out "
            f"({n_blank} pixels are blank in every training image, which freezes their "
            f"{n_blank * cfg.width} first-layer weights); {int(moving.sum())} of {run.d} remain. "
            "Chaudhari & Soatto find that the FFT of the per-weight "
            "increments w_{k+1} − w_k of deep networks is not flat (white noise would be) and "
            "read it as evidence of limit cycles. The time-shuffled surrogate keeps every "
            "increment and destroys their order: where the two spectra coincide there is no "
            "temporal structure to explain.",
            f"Largest amplitude ratio SGD / surrogate: {metrics['max_ratio_to_surrogate']:.2f} at "
            f"{metrics['frequency_of_max_ratio']:.3g} cycles/step; low- over high-frequency "
            f"amplitude {metrics['low_over_high_amplitude']:.2f} (surrogate "
            f"{metrics['surrogate_low_over_high_amplitude']:.2f}); lag-1 autocorrelation "
            f"{metrics['lag1_acf']:.3f} (surrogate {metrics['surrogate_lag1_acf']:.3f}, band "
            f"±{band:.3f}).",
        ],
        [
            Table(
                "Increment statistics",
                ["quantity", "SGD", "surrogate"],
                [
                    [
                        "low/high-frequency amplitude",
                        _fmt(metrics["low_over_high_amplitude"]),
                        _fmt(metrics["surrogate_low_over_high_amplitude"]),
                    ],
                    [
                        "lag-1 autocorrelation",
                        _fmt(metrics["lag1_acf"]),
                        _fmt(metrics["surrogate_lag1_acf"]),
                    ],
                    [
                        "max amplitude ratio (SGD/surrogate)",
                        _fmt(metrics["max_ratio_to_surrogate"]),
                        "1",
                    ],
                ],
            )
        ],
        [
            Figure(
                "limit_cycles",
                "FFT of per-weight increments and their autocorrelation, "
                "against a time-shuffled surrogate.",
                figure_png(fig),
            )
        ],
    )
    return section, metrics


def _section_diffusion_map(run: _Run):
    import matplotlib.pyplot as plt

    from .analysis import diffusion_map, intrinsic_dimension
    from .report import Figure, Section, Table, figure_png

    cfg = run.cfg
    sets = {"training": (run.snapshots, run.snapshot_steps)}
    if "limit_cycles" in cfg.sections:
        traj = run.cycle_trajectory()
        stride = max(1, traj.shape[0] // 400)
        sets["continuation"] = (traj[::stride], np.arange(0, traj.shape[0], stride))
    results = {}
    for name, (pts, steps) in _tqdm(
        iterable=list(sets.items()), desc="diffusion maps", unit="set", disable=not run.progress
    ):
        pts = np.asarray(pts, dtype=np.float64)
        k = min(cfg.dmap_k, pts.shape[0] - 1)
        dm = diffusion_map(pts, k=k)
        dim = intrinsic_dimension(pts)
        results[name] = {
            "n_points": int(pts.shape[0]),
            "steps": steps,
            "eigenvalues": np.asarray(dm.eigenvalues),
            "coordinates": np.asarray(dm.coordinates)[:, :2],
            "bandwidth": float(dm.eps),
            "intrinsic_dimension": float(dim.dimension),
            "eps_star": float(dim.eps_star),
            "eps_grid": np.asarray(dim.eps_grid),
            "slope": np.asarray(dim.slope),
        }
    fig, axes = plt.subplots(1, len(results) + 1, figsize=(4.2 * (len(results) + 1), 3.6))
    for ax, (name, r) in zip(axes, results.items(), strict=False):
        c = r["coordinates"]
        sc = ax.scatter(
            c[:, 0],
            c[:, 1] if c.shape[1] > 1 else np.zeros(len(c)),
            c=r["steps"],
            s=8,
            cmap="viridis",
        )
        fig.colorbar(sc, ax=ax, label="step")
        ax.set(xlabel="λ₁ψ₁", ylabel="λ₂ψ₂", title=f"{name} trajectory ({r['n_points']} points)")
    ax = axes[-1]
    for name, r in results.items():
        ax.semilogx(
            r["eps_grid"], 2 * r["slope"], label=f"{name}: dim ≈ {r['intrinsic_dimension']:.2f}"
        )
        ax.axvline(r["eps_star"], color="0.6", lw=0.8, ls=":")
    ax.set(
        xlabel="bandwidth ε",
        ylabel="2 · d log Σ K_ij / d log ε",
        title="Intrinsic dimension (bandwidth sweep)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    rows = [
        [
            name,
            str(r["n_points"]),
            _fmt(r["intrinsic_dimension"]),
            ", ".join(_fmt(x) for x in r["eigenvalues"][:4]),
        ]
        for name, r in results.items()
    ]
    section = Section(
        "diffusion_map",
        "Diffusion map of the SGD trajectory",
        [
            "Points are flattened parameter snapshots; Gaussian kernel with the median squared "
            "distance as bandwidth, α = 1 normalisation (removes the sampling density), Markov "
            "normalisation; embedding λ_l ψ_l (Coifman & Lafon; Fjellström & Nyström). The "
            "intrinsic dimension is twice the slope of log Σ_ij K_ij(ε) against log ε, read "
            "where each point has about √n neighbours. Trajectories: the training run "
            "(snapshots every record_every steps) and, when the limit-cycle section runs, the "
            "constant-step continuation after training (every step, at most 400 points).",
            "Estimated intrinsic dimension: "
            + "; ".join(f"{name} {r['intrinsic_dimension']:.2f}" for name, r in results.items())
            + ".",
        ],
        [
            Table(
                "Diffusion-map summary",
                ["trajectory", "points", "intrinsic dim.", "top eigenvalues"],
                rows,
            )
        ],
        [
            Figure(
                "diffusion_map",
                "Diffusion-map embedding of the trajectories (coloured by "
                "step) and the bandwidth sweep of the intrinsic dimension.",
                figure_png(fig),
            )
        ],
    )
    return section, results


_SECTION_FUNCS: dict[str, Callable] = {
    "spectrum": _section_spectrum,
    "directional": _section_directional,
    "flows": _section_flows,
    "limit_cycles": _section_limit_cycles,
    "diffusion_map": _section_diffusion_map,
}


# --------------------------------------------------------------------------------------------
# Entry point


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("grd", "jax", "jaxlib", "optax", "diffrax", "flax", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _pipeline(cfg: ReproduceConfig, workdir: Path, progress: bool):
    """Run training and the chosen sections; return (sections, metrics)."""
    import matplotlib

    matplotlib.use("Agg")

    run = _train(cfg, progress, workdir)
    sections, metrics = [], {}
    sec, m = _section_training(run)
    sections.append(sec)
    metrics["training"] = m
    for name in SECTIONS:
        if name in cfg.sections:
            sec, m = _SECTION_FUNCS[name](run)
            sections.append(sec)
            metrics[name] = m
    return sections, metrics


_PARTIAL = ".grd-partial"


class ReportNotPlacedError(RuntimeError):
    """The report was finished but ``out`` changed during the run and may not be replaced."""


def _run_key(cfg: ReproduceConfig) -> str:
    """What a resumed run must share with the interrupted one: config, versions, x64."""
    import jax

    blob = json.dumps(
        {
            "config": dataclasses.asdict(cfg),
            "versions": _versions(),
            "x64": bool(jax.config.jax_enable_x64),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _work_dirs(real_out: Path) -> list[tuple[Path, dict]]:
    """grd's hidden work directories ``.<name>.partial-*`` beside ``out`` (with their record)."""
    prefix = f".{real_out.name}.partial-"
    try:
        entries = sorted(real_out.parent.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found = []
    for path in entries:
        if not path.name.startswith(prefix) or path.is_symlink() or not path.is_dir():
            continue
        try:
            record = json.loads((path / _PARTIAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == "grd-partial":
            found.append((path, record))
    return found


def _lock(directory: Path):
    """An exclusive, non-blocking flock on ``directory/.lock`` (released when the process
    dies, even by SIGKILL); ``None`` if another live run holds it."""
    import fcntl

    fh = open(directory / ".lock", "a")  # noqa: SIM115
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _say(line: str) -> None:
    import sys

    print(f"grd reproduce: {line}", file=sys.stderr, flush=True)


def reproduce(
    config: ReproduceConfig,
    out,
    *,
    overwrite: bool = False,
    progress: bool = True,
    keep_trajectory: bool = False,
    command: Sequence[str] | None = None,
    resume: bool = False,
) -> list[Path]:
    """Run the pipeline and write the report directory ``out`` atomically.

    The run works in a hidden directory ``.<name>.partial-*`` beside ``out``; its long stages
    (SGD training, the constant-step continuation) checkpoint there atomically
    (:func:`grd.checkpoint.run_checkpointed`, :data:`CHECKPOINTS_PER_STAGE` checkpoints per
    stage). At the end the report and its ``.grd-report`` marker (the list of files, written
    last) are moved to ``out``. ``out`` must be new, empty, or a report grd wrote that holds
    nothing else (and then ``overwrite=True``); its permission bits are kept
    (see ``grd._outdir``). A diverging run raises :class:`DivergenceError` and leaves nothing.

    Args:
      config: the run settings (validated first).
      out: the report directory.
      overwrite: replace an existing grd report at ``out``.
      progress: show tqdm progress bars on stderr.
      keep_trajectory: keep the recorded trajectories (``trajectory/training`` and
        ``trajectory/continuation``, :func:`grd.analysis.load_trajectory` stores) in ``out``;
        by default they are deleted once analysed.
      command: the command line, recorded in the report and its marker.
      resume: continue an interrupted run of the same configuration (same config, versions
        and x64 flag) from its work directory if there is one (else start afresh), and keep
        the work directory if this run is interrupted or fails (except by divergence). Without
        it the work directory is removed on any error or interrupt (SIGKILL leaves it; a
        later ``resume=True`` run continues it).

    Returns:
      The files written, relative to ``out``.
    """
    import jax

    from . import __version__
    from ._outdir import MARKER, OutputError, _walk, install, write_marker

    config.validate()
    plan = check_output(out, overwrite=overwrite)
    if config.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    real = plan.real
    real.parent.mkdir(parents=True, exist_ok=True)
    key = _run_key(config)
    matching = [p for p, record in _work_dirs(real) if record.get("key") == key]
    workdir, lock, resumed = None, None, False
    if resume:
        for path in sorted(matching, key=lambda p: p.stat().st_mtime, reverse=True):
            lock = _lock(path)
            if lock is not None:
                workdir, resumed = path, True
                _say(f"resuming the interrupted run in {path}")
                break
        if workdir is None and matching:
            _say(f"a run of this configuration is still running in {matching[0]}; starting afresh")
        elif workdir is None:
            _say("no interrupted run of this configuration to resume; starting afresh")
    elif matching:
        _say(
            f"an interrupted run of this configuration is in {matching[0]}; pass --resume "
            "to continue it (this run starts afresh)"
        )
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f".{real.name}.partial-", dir=real.parent))
        lock = _lock(workdir)
        record = {
            "format": "grd-partial",
            "key": key,
            "config": dataclasses.asdict(config),
            "command": list(command) if command else None,
            "pid": os.getpid(),
        }
        (workdir / _PARTIAL).write_text(json.dumps(record, indent=1), encoding="utf-8")
    start = time.perf_counter()
    keep = False
    try:
        sections, metrics = _pipeline(config, workdir, progress)
        elapsed = time.perf_counter() - start
        versions = _versions()
        metrics = {
            "config": dataclasses.asdict(config),
            "versions": versions,
            "devices": [str(dev) for dev in jax.devices()],
            "x64": bool(jax.config.jax_enable_x64),
            "runtime_seconds": elapsed,
            "sections": ["training", *[s for s in SECTIONS if s in config.sections]],
            **metrics,
        }
        meta = [
            "Command: " + (" ".join(command) if command else "grd.reproduce(...)"),
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"Devices: {', '.join(metrics['devices'])}; float64: {metrics['x64']}; "
            f"run time {elapsed:.1f} s"
            + (" (this part, resumed from a checkpoint)." if resumed else "."),
        ]
        from .report import write_report

        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        if not keep_trajectory:
            shutil.rmtree(workdir / "trajectory", ignore_errors=True)
        for name in (_PARTIAL, ".lock"):
            (workdir / name).unlink(missing_ok=True)
        write_report(
            workdir, "grd reproduce: the geometry of SGD on the digits", sections, metrics, meta
        )
        files, _ = _walk(workdir)
        write_marker(workdir, files, command=command, version=__version__)  # last file
        keep = True  # from here on the work directory is a complete report
        try:
            warning = install(workdir, plan)
        except OutputError as e:
            raise ReportNotPlacedError(f"{e} The finished report is kept in {workdir}.") from None
        if warning:
            _say(warning)
    except BaseException as e:
        if not keep:
            if resume and not isinstance(e, DivergenceError):
                _say(f"progress kept in {workdir}; rerun with --resume to continue")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.close()
    return sorted(Path(f) for f in files if f != MARKER)
