"""Small statistics every verdict of ``grd reproduce`` rests on.

- :func:`summarize`: mean, standard error and a t-based confidence interval over seeds;
- :func:`welch_test`: a statistic's values against the same statistic on a null model
  (two samples, unequal variances);
- :func:`local_exponents` and :func:`exponent_check`: the local exponent of a power law
  y ∝ x^p, read between neighbouring points rather than from one fit across regimes;
- :func:`format_value`: ``x ± u`` with no more digits than the uncertainty allows.

All take plain sequences or NumPy arrays and return NumPy floats in NamedTuples (they run
after the JAX computations, on a handful of numbers).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "SeedSummary",
    "WelchTest",
    "LocalExponents",
    "ExponentCheck",
    "summarize",
    "welch_test",
    "local_exponents",
    "exponent_check",
    "format_value",
]


class SeedSummary(NamedTuple):
    """Result of :func:`summarize`: ``mean``, standard error ``se``, ``n`` values, the
    confidence interval ``[low, high]`` and its ``half_width`` at ``level``."""

    mean: float
    se: float
    n: int
    low: float
    high: float
    half_width: float
    level: float


def _values(x, name: str, min_n: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size < min_n:
        raise ValueError(f"`{name}` needs at least {min_n} values; got {a.size}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite; got {a.tolist()}.")
    return a


def mean_ci(values, level: float = 0.95):
    """Mean and the half-width of its Student-t confidence interval (None for one value);
    the plain-tuple form of :func:`summarize`, without its finiteness check."""
    from scipy import stats

    v = np.asarray(values, float).ravel()
    m = float(v.mean())
    if v.size < 2:
        return m, None
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return m, float(half)


def summarize(values, *, level: float = 0.95) -> SeedSummary:
    """Mean ± standard error over seeds and the t-based confidence interval.

    mean = x̄, se = s/√n with s² = Σ(x_i − x̄)²/(n − 1), and the interval
    x̄ ± t_{(1+level)/2, n−1} · se (Student's t with n − 1 degrees of freedom: with 3 seeds
    the 95 % half-width is 4.30 se, not 1.96 se). One value gives se = 0 and an infinite
    half-width (no spread is known).

    Args:
      values: one number per seed (at least 1).
      level: confidence level in (0, 1).

    Returns:
      :class:`SeedSummary`.
    """
    from scipy import stats

    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie in (0, 1); got {level}.")
    a = _values(values, "values")
    n, mean = a.size, float(a.mean())
    if n == 1:
        return SeedSummary(mean, 0.0, 1, -math.inf, math.inf, math.inf, level)
    se = float(a.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    return SeedSummary(mean, se, n, mean - half, mean + half, half, level)


class WelchTest(NamedTuple):
    """Result of :func:`welch_test`: ``difference`` = mean(x) − mean(y), its standard error
    ``se``, the statistic ``t``, the Welch–Satterthwaite degrees of freedom ``dof`` and the
    two-sided ``p_value``."""

    difference: float
    se: float
    t: float
    dof: float
    p_value: float


def welch_test(x, y) -> WelchTest:
    """Welch's two-sample t-test of mean(x) = mean(y) with unequal variances.

    t = (x̄ − ȳ)/√(s_x²/n_x + s_y²/n_y); ν = (s_x²/n_x + s_y²/n_y)² /
    [(s_x²/n_x)²/(n_x − 1) + (s_y²/n_y)²/(n_y − 1)]; p = 2 P(T_ν > |t|). Use it for a
    statistic over seeds (x) against the same statistic on its null model over seeds (y).
    If both samples have zero spread, p is 1 when the means agree and 0 otherwise.

    Args:
      x: values of the statistic (at least 2).
      y: values of the statistic on the null (at least 2).

    Returns:
      :class:`WelchTest`.
    """
    from scipy import stats

    a, b = _values(x, "x", 2), _values(y, "y", 2)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return WelchTest(
            diff,
            0.0,
            0.0 if diff == 0 else math.copysign(math.inf, diff),
            float(a.size + b.size - 2),
            1.0 if diff == 0 else 0.0,
        )
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    t = diff / se
    return WelchTest(diff, se, t, float(dof), float(2 * stats.t.sf(abs(t), dof)))


class LocalExponents(NamedTuple):
    """Result of :func:`local_exponents`: ``x`` the geometric midpoints √(x_i x_{i+1}) and
    ``exponents`` the slopes of log y against log x between neighbours."""

    x: np.ndarray
    exponents: np.ndarray


def local_exponents(x, y) -> LocalExponents:
    """Local exponents p_i = log(y_{i+1}/y_i) / log(x_{i+1}/x_i) of a power law y ∝ x^p.

    A single fit of log y against log x across regimes averages a first-order law with its
    saturation; the local slopes between neighbours show where the law holds. y = c x exactly
    gives p_i = 1 for every i, y = c x² gives 2.

    Args:
      x: (m,) positive, strictly increasing abscissae (m ≥ 2).
      y: (m,) positive values.

    Returns:
      :class:`LocalExponents` with (m − 1,) midpoints and exponents.
    """
    xs, ys = _values(x, "x", 2), _values(y, "y", 2)
    if xs.shape != ys.shape:
        raise ValueError(f"`x` and `y` must have the same length; got {xs.size} and {ys.size}.")
    if np.any(xs <= 0) or np.any(ys <= 0):
        raise ValueError("`x` and `y` must be positive (their logarithms are taken).")
    if np.any(np.diff(xs) <= 0):
        raise ValueError("`x` must be strictly increasing.")
    lx, ly = np.log(xs), np.log(ys)
    return LocalExponents(np.exp(0.5 * (lx[1:] + lx[:-1])), np.diff(ly) / np.diff(lx))


class ExponentCheck(NamedTuple):
    """Result of :func:`exponent_check`: ``within`` (every local exponent in the window is
    within ``tol`` of ``p``), the window's ``exponents`` and midpoints ``x``, and the largest
    deviation ``max_deviation``."""

    within: bool
    x: np.ndarray
    exponents: np.ndarray
    max_deviation: float


def exponent_check(x, y, p: float, tol: float, *, x_max: float | None = None) -> ExponentCheck:
    """Judge "y ∝ x^p" locally: every local exponent (:func:`local_exponents`) between
    neighbours with both abscissae ≤ ``x_max`` lies within ``tol`` of ``p``.

    Args:
      x: (m,) positive, strictly increasing abscissae.
      y: (m,) positive values.
      p: the predicted exponent.
      tol: the allowed |p_i − p| (state why in the verdict's reason).
      x_max: only neighbours with x_{i+1} ≤ x_max count (the regime where the law is
        predicted, e.g. the weak-field regime ε·λ_max ≤ 0.1); ``None``: all.

    Returns:
      :class:`ExponentCheck` (``within`` is False when no pair lies in the window).
    """
    if not tol >= 0:
        raise ValueError(f"`tol` must be ≥ 0; got {tol}.")
    xs = _values(x, "x", 2)
    loc = local_exponents(xs, y)
    keep = np.ones(loc.exponents.shape, bool) if x_max is None else xs[1:] <= x_max
    ex, mid = loc.exponents[keep], loc.x[keep]
    if ex.size == 0:
        return ExponentCheck(False, mid, ex, math.inf)
    dev = float(np.max(np.abs(ex - p)))
    return ExponentCheck(bool(dev <= tol), mid, ex, dev)


def format_value(x, uncertainty=None, *, digits: int = 3) -> str:
    """``x ± u`` rounded to the uncertainty's first two significant digits (``1.23 ± 0.45``,
    ``0.0312 ± 0.0021``); without an uncertainty, ``digits`` significant digits."""
    x = float(x)
    if uncertainty is None or not math.isfinite(float(uncertainty)) or float(uncertainty) <= 0:
        if x == 0:
            return "0"
        if 1e-3 <= abs(x) < 1e4:
            return f"{x:.{digits}g}"
        return f"{x:.{digits - 1}e}"
    u = float(uncertainty)
    decimals = max(0, 1 - int(math.floor(math.log10(u))))
    if decimals > 6 or abs(x) >= 1e5:
        return f"{x:.2e} ± {u:.1e}"
    return f"{x:.{decimals}f} ± {u:.{decimals}f}"
