"""The ``grd reproduce`` pipeline: train, analyse, integrate, and write a report directory.

One run on the bundled digits data (no download):

1. **training** — a two-layer tanh MLP trained by constant-step SGD; parameter snapshots are
   recorded every ``record_every`` steps and kept at the checkpoints (fractions of training).
2. **spectrum** — at every checkpoint the exact spectrum of D (Gram form), its rank under
   the relative and absolute thresholds, ``tr D``, ``|ḡ|²`` and the noise scale
   ``B_simple = tr D / |ḡ|²`` (SPEC §2, §6).

Every number shown in the report is stored in ``metrics.json``. The report is written into a
hidden temporary directory beside the target and renamed into place at the very end, so an
interrupted run never leaves a directory that passes for a complete report.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SECTIONS",
    "ReproduceConfig",
    "OutputExistsError",
    "check_output_dir",
    "reproduce",
]

#: The analysis sections ``--sections`` chooses from, in report order. Training always runs.
SECTIONS: tuple[str, ...] = ("spectrum",)


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
    eps: tuple[float, ...] = (0.1, 0.3, 1.0)
    seed: int = 0
    data_seed: int = 0
    float64: bool = False
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def tiny(cls, **overrides) -> ReproduceConfig:
        """A setting that runs in seconds (for tests and smoke checks)."""
        base = dict(width=8, n_train=96, steps=200, batch_size=16, record_every=5,
                    checkpoints=(0.0, 0.5, 1.0))
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ValueError(
                f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}."
            )
        for name in ("width", "n_train", "steps", "batch_size", "record_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}.")
        if self.n_train < 4:
            raise ValueError(f"n_train must be at least 4; got {self.n_train}.")
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
        if self.steps // self.record_every < 2:
            raise ValueError("steps / record_every must be at least 2 (two snapshots).")


class OutputExistsError(FileExistsError):
    """The output directory exists and is not empty, and overwriting was not allowed."""


def check_output_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output directory {out} is not empty; pass --force to overwrite it."
        )


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
    progress: bool
    workdir: Path


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

    @jax.jit
    def run_chunk(params, opt_state, key):
        idx = jax.random.randint(key, (cfg.record_every, cfg.batch_size), 0, n)

        def step(carry, i):
            p, s = carry
            mb = jax.tree_util.tree_map(lambda x: x[i], train)
            g = jax.grad(mean_loss)(p, mb)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state

    @jax.jit
    def evaluate(params):
        return mean_loss(params, train), accuracy(model, params, test)

    n_chunks = cfg.steps // cfg.record_every
    ck_chunks = sorted({int(round(c * n_chunks)) for c in cfg.checkpoints})
    history = {"step": [], "train_loss": [], "test_accuracy": []}
    snapshots, snapshot_steps, checkpoints = [], [], []

    def record(chunk, params):
        step = chunk * cfg.record_every
        loss, acc = evaluate(params)
        history["step"].append(step)
        history["train_loss"].append(float(loss))
        history["test_accuracy"].append(float(acc))
        snapshots.append(np.asarray(ravel_pytree(params)[0]))
        snapshot_steps.append(step)
        if chunk in ck_chunks:
            checkpoints.append((chunk / n_chunks, step, params))

    record(0, params)
    keys = jax.random.split(key_sgd, n_chunks)
    with _tqdm(total=cfg.steps, desc="SGD training", unit="step", disable=not progress) as bar:
        for c in range(1, n_chunks + 1):
            params, opt_state = run_chunk(params, opt_state, keys[c - 1])
            record(c, params)
            bar.update(cfg.record_every)
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}")
    for name, values in history.items():
        if name != "step" and not np.all(np.isfinite(values)):
            raise FloatingPointError(
                f"SGD diverged ({name} is not finite); lower the learning rate (--lr)."
            )
    return _Run(
        cfg=cfg, dtype=dtype, train=train, test=test, model=model, loss_fn=loss_fn, d=d,
        unravel=unravel, history={k: np.asarray(v) for k, v in history.items()},
        snapshots=np.stack(snapshots), snapshot_steps=np.asarray(snapshot_steps),
        checkpoints=checkpoints, progress=progress, workdir=workdir,
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
            ["learning rate η; temperature η/(2b)",
             f"{_fmt(cfg.lr)}; {_fmt(metrics['temperature'])}"],
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
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from . import diffusion_rank, diffusion_spectrum, diffusion_trace
    from .report import Figure, Section, Table, figure_png

    cfg, train, loss_fn = run.cfg, run.train, run.loss_fn
    mean_loss = _mean_loss(loss_fn)

    @jax.jit
    def measure(params):
        lam = diffusion_spectrum(loss_fn, params, train, method="gram").eigenvalues
        tr = diffusion_trace(loss_fn, params, train)
        gbar = jax.grad(mean_loss)(params, train)
        g2 = sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(gbar))
        return lam, tr, g2

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
        rows.append([
            f"{100 * frac:.0f} % (step {step})", _fmt(m["lambda_max"]), str(r_rel), str(r_abs),
            f"{100 * m['rank_over_d']:.2f} %", f"{_fmt(m['eigenvalue_mean'])} ± "
            f"{_fmt(m['eigenvalue_std'])}", _fmt(tr), _fmt(g2), _fmt(m["noise_scale_B_simple"]),
        ])

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
        "spectrum", "Eigenvalues of the diffusion matrix D at the checkpoints (log-log).",
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
        [Table(
            "Spectrum, rank and noise scale at the checkpoints",
            ["checkpoint", "λ_max", "rank (rel.)", "rank (abs.)", "rank/d", "mean ± std λ",
             "tr D", "|ḡ|²", "B_simple"],
            rows,
        )],
        [fig_spec, fig_noise],
    )
    return section, {"rank_atol": cfg.rank_atol, "checkpoints": per_ck}


_SECTION_FUNCS: dict[str, Callable] = {"spectrum": _section_spectrum}


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


def reproduce(
    config: ReproduceConfig,
    out,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> list[Path]:
    """Run the pipeline and write the report directory ``out`` atomically.

    Everything is written into a hidden directory ``.<name>.partial-*`` beside ``out``, which is
    renamed to ``out`` only after the last file is written (an existing ``out`` is replaced
    only with ``overwrite=True``); on any error or interrupt the partial directory is removed.

    Args:
      config: the run settings (validated first).
      out: the report directory.
      overwrite: replace an existing non-empty ``out``.
      progress: show tqdm progress bars on stderr.
      command: the command line, recorded in the report.

    Returns:
      The files written, relative to ``out``.
    """
    import jax

    config.validate()
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    if config.float64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    start = time.perf_counter()
    try:
        sections, metrics = _pipeline(config, tmp, progress)
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
            f"run time {elapsed:.1f} s.",
        ]
        from .report import write_report

        written = write_report(tmp, "grd reproduce: the geometry of SGD on the digits",
                               sections, metrics, meta)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
