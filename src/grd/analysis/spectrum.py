"""Spectrum and numerical rank of the diffusion matrix D along training (theory §6).

Chaudhari & Soatto, "Stochastic gradient descent performs variational inference, converges to
limit cycles for deep networks", ICLR 2018 (arXiv:1710.11029), section 3 and figure 1: the
eigenvalues of ``D(w) = Cov_a(g_a, g_a)`` at several points of training, the rank with the
threshold ``λ_max · d · eps_float32`` (numpy's ``matrix_rank`` rule), mean ± std of λ and
``rank/d``. They report ranks of 0.3–1.8 % of d for networks with d ≫ N_effective; since
``rank D ≤ N − 1``, a small model on a small data set shows a larger fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grd._diffusion import diffusion_rank, diffusion_spectrum
from grd._tree import tree_size
from grd.analysis.recorder import Trajectory

EPS_FLOAT32 = float(np.finfo(np.float32).eps)


class SpectrumAlongTraining(NamedTuple):
    """Result of :func:`spectrum_along_training`; one row per checkpoint.

    Attributes:
      steps: (T,) step (or index) of each checkpoint.
      eigenvalues: (T, k) eigenvalues of D, descending, clipped at 0.
      rank_relative: (T,) count of λ > λ_max · d · eps_float32.
      rank_absolute: (T,) count of λ > ``atol``.
      relative_threshold: (T,) the relative threshold λ_max · d · eps_float32.
      mean: (T,) mean of the k eigenvalues.
      std: (T,) standard deviation of the k eigenvalues.
      trace: (T,) sum of the k eigenvalues (= tr D when k covers the whole non-zero spectrum).
      d: number of parameters.
      n: number of examples N in the batch (rank D ≤ N − 1).
      atol: the absolute threshold.
      method: ``"gram"`` or ``"lanczos"``.
    """

    steps: np.ndarray
    eigenvalues: np.ndarray
    rank_relative: np.ndarray
    rank_absolute: np.ndarray
    relative_threshold: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    trace: np.ndarray
    d: int
    n: int
    atol: float
    method: str

    @property
    def rank_fraction_relative(self) -> np.ndarray:
        """(T,) rank/d under the relative threshold."""
        return self.rank_relative / self.d

    @property
    def rank_fraction_absolute(self) -> np.ndarray:
        """(T,) rank/d under the absolute threshold."""
        return self.rank_absolute / self.d


def _checkpoint_list(checkpoints, unravel, indices, steps):
    """Resolve ``checkpoints`` into (list of pytrees, steps array)."""
    flat_input = isinstance(checkpoints, Trajectory) or (
        isinstance(checkpoints, np.ndarray | jax.Array) and np.ndim(checkpoints) == 2
    )
    if flat_input:
        if unravel is None:
            raise ValueError(
                "`unravel` is required when `checkpoints` is a Trajectory or a (T, d) array: "
                "pass the function returned by jax.flatten_util.ravel_pytree(params)[1]."
            )
        total = len(checkpoints)
        idx = np.arange(total) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"`indices` must be a non-empty 1-D sequence; got {indices!r}.")
        if np.any(idx < -total) or np.any(idx >= total):
            raise ValueError(f"`indices` must lie in [−{total}, {total}); got {idx.tolist()}.")
        idx = np.where(idx < 0, idx + total, idx)
        trees = [unravel(jnp.asarray(np.asarray(checkpoints[int(i)]))) for i in idx]
        if steps is None:
            steps = (
                np.asarray(checkpoints.steps)[idx] if isinstance(checkpoints, Trajectory) else idx
            )
        return trees, np.asarray(steps)
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str | bytes):
        raise TypeError(
            "`checkpoints` must be a sequence of parameter pytrees, a Trajectory or a (T, d) "
            f"array; got {type(checkpoints).__name__}."
        )
    trees = list(checkpoints)
    if indices is not None:
        trees = [trees[int(i)] for i in np.asarray(indices)]
    if not trees:
        raise ValueError("`checkpoints` is empty; pass at least one parameter pytree.")
    steps = np.arange(len(trees)) if steps is None else np.asarray(steps)
    return trees, steps


def spectrum_along_training(
    loss_fn,
    checkpoints,
    batch,
    *,
    k: int | None = None,
    method: Literal["gram", "lanczos"] = "gram",
    atol: float = 1e-6,
    unravel=None,
    indices=None,
    steps=None,
    num_matvecs: int | None = None,
    key=None,
    chunk_size: int | None = None,
) -> SpectrumAlongTraining:
    """Eigenvalues, rank and moments of D at each checkpoint (Chaudhari & Soatto 2018, §3).

    For each parameter vector w_t: the eigenvalues λ of ``D(w_t) = (1/N) CᵀC`` by
    :func:`grd.diffusion_spectrum`; ``rank`` = #{λ > λ_max · d · eps_float32} (relative) and
    #{λ > atol} (absolute); mean ± std of the k eigenvalues; ``rank/d``.

    Args:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar``.
      checkpoints: a sequence of parameter pytrees; or a :class:`grd.analysis.Trajectory`
        (from :class:`grd.analysis.TrajectoryRecorder`) or a (T, d) array of flattened
        parameters, together with ``unravel``.
      batch: pytree with leading axis N ≥ 2 (the data set D is measured on).
      k: eigenvalues per checkpoint. ``gram``: default min(N − 1, d), the whole non-zero
        spectrum. ``lanczos``: required (top-k).
      method: ``"gram"`` (exact, N gradients and an N×N ``eigh``) or ``"lanczos"``
        (matrix-free top-k, ``num_matvecs`` D·v products).
      atol: absolute rank threshold (in the units of λ: squared loss per parameter).
      unravel: flat vector → pytree, for a Trajectory / array input.
      indices: which snapshots to analyse (default all), e.g. those at 20/40/100 % of training.
      steps: (T,) labels of the checkpoints (default: the Trajectory's steps, else indices).
      num_matvecs, key: Lanczos depth and start-vector key (see ``diffusion_spectrum``).
      chunk_size: stream the batch in chunks of this many examples.

    Returns:
      :class:`SpectrumAlongTraining` (numpy arrays; ``.rank_fraction_relative`` etc.).

    Cost per checkpoint: ``gram`` N gradients, memory O(N d + N²); ``lanczos`` num_matvecs
    gradients, memory O(num_matvecs · d).
    """
    if not (isinstance(atol, int | float) and atol >= 0):
        raise ValueError(f"`atol` must be a number ≥ 0; got {atol!r}.")
    trees, steps = _checkpoint_list(checkpoints, unravel, indices, steps)
    if steps.shape != (len(trees),):
        raise ValueError(f"`steps` must have shape ({len(trees)},); got {steps.shape}.")
    d = tree_size(trees[0])
    n = jax.tree_util.tree_leaves(batch)[0].shape[0] if jax.tree_util.tree_leaves(batch) else 0
    rows = []
    for params in trees:
        if tree_size(params) != d:
            raise ValueError("every checkpoint must have the same number of parameters d.")
        lam = diffusion_spectrum(
            loss_fn,
            params,
            batch,
            k,
            method=method,
            num_matvecs=num_matvecs,
            key=key,
            chunk_size=chunk_size,
        ).eigenvalues
        lam = np.asarray(jax.device_get(lam), dtype=np.float64)
        lam_max = lam[0] if lam.size else 0.0
        rows.append(
            (
                lam,
                int(diffusion_rank(lam, d, threshold="relative")),
                int(diffusion_rank(lam, d, threshold="absolute", atol=atol)),
                lam_max * d * EPS_FLOAT32,
            )
        )
    eigenvalues = np.stack([r[0] for r in rows])
    return SpectrumAlongTraining(
        steps=steps,
        eigenvalues=eigenvalues,
        rank_relative=np.asarray([r[1] for r in rows]),
        rank_absolute=np.asarray([r[2] for r in rows]),
        relative_threshold=np.asarray([r[3] for r in rows]),
        mean=eigenvalues.mean(axis=1),
        std=eigenvalues.std(axis=1),
        trace=eigenvalues.sum(axis=1),
        d=d,
        n=int(n),
        atol=float(atol),
        method=method,
    )


def spectrum_table(
    result: SpectrumAlongTraining,
    *,
    fmt: Literal["markdown", "text"] = "markdown",
    labels: Sequence[str] | None = None,
) -> str:
    """Format a :class:`SpectrumAlongTraining` as a markdown or plain-text table.

    Columns: checkpoint, λ_max, mean ± std of λ, tr D, rank (relative), rank/d, rank (absolute),
    rank/d. ``labels`` replaces the step column (e.g. ``["20 %", "40 %", "100 %"]``).
    """
    if fmt not in ("markdown", "text"):
        raise ValueError(f"`fmt` must be 'markdown' or 'text'; got {fmt!r}.")
    t = len(result.steps)
    if labels is not None and len(labels) != t:
        raise ValueError(f"`labels` must have {t} entries; got {len(labels)}.")
    names = [str(s) for s in result.steps] if labels is None else list(labels)
    header = [
        "checkpoint",
        "λ_max",
        "mean ± std of λ",
        "tr D",
        "rank (rel.)",
        "rank/d (rel.)",
        f"rank (λ > {result.atol:.0e})",
        "rank/d (abs.)",
    ]
    body = []
    for i in range(t):
        body.append(
            [
                names[i],
                f"{result.eigenvalues[i, 0]:.3e}",
                f"{result.mean[i]:.2e} ± {result.std[i]:.2e}",
                f"{result.trace[i]:.3e}",
                str(result.rank_relative[i]),
                f"{100 * result.rank_fraction_relative[i]:.2f} %",
                str(result.rank_absolute[i]),
                f"{100 * result.rank_fraction_absolute[i]:.2f} %",
            ]
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(h), *(len(r[j]) for r in body)) for j, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    foot = (
        f"d = {result.d}, N = {result.n} (rank D ≤ N − 1 = {result.n - 1}), "
        f"method = {result.method}; relative threshold λ_max · d · eps_float32."
    )
    return "\n".join(lines) + "\n\n" + foot


def plot_spectrum_histogram(
    result: SpectrumAlongTraining,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 40,
    threshold: Literal["relative", "absolute"] = "relative",
    ax=None,
):
    """Log-log histogram of the eigenvalues of D per checkpoint (Chaudhari & Soatto, fig. 1).

    Eigenvalues above the rank threshold are binned on log-spaced bins shared by all
    checkpoints; counts on a log axis. The eigenvalues below the threshold (the numerical
    kernel of D) are not drawn: their number is given in the legend.

    Args:
      result: from :func:`spectrum_along_training`.
      labels: legend label per checkpoint (default "step s").
      bins: number of log-spaced bins.
      threshold: which rank threshold separates the kernel.
      ax: a matplotlib Axes to draw on (default: a new Agg figure, no pyplot state).

    Returns:
      The matplotlib ``Figure``.
    """
    if threshold not in ("relative", "absolute"):
        raise ValueError(f"`threshold` must be 'relative' or 'absolute'; got {threshold!r}.")
    t = len(result.steps)
    if labels is not None and len(labels) != t:
        raise ValueError(f"`labels` must have {t} entries; got {len(labels)}.")
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    tol = result.relative_threshold if threshold == "relative" else np.full(t, result.atol)
    kept = [result.eigenvalues[i][result.eigenvalues[i] > tol[i]] for i in range(t)]
    positive = np.concatenate([x for x in kept if x.size] or [np.ones(1)])
    edges = np.geomspace(positive.min(), positive.max() * (1 + 1e-9), bins + 1)
    for i in range(t):
        name = f"step {result.steps[i]}" if labels is None else labels[i]
        below = result.d - kept[i].size
        ax.hist(
            kept[i],
            bins=edges,
            histtype="step",
            linewidth=1.5,
            label=f"{name}: rank {kept[i].size} ({100 * kept[i].size / result.d:.1f} % of d), "
            f"{below} below threshold",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="eigenvalue λ of D",
        ylabel="count",
        title=f"Spectrum of D (d = {result.d}, N = {result.n})",
    )
    ax.legend(fontsize="small")
    return fig
