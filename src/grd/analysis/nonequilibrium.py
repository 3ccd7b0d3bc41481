"""Non-equilibrium SGD, measured: areal velocities, time-reversal asymmetry, their prediction.

Chaudhari & Soatto, "Stochastic gradient descent performs variational inference, converges to
limit cycles for deep networks", ICLR 2018 (arXiv:1710.11029): when the diffusion matrix D does
not commute with the Hessian H, the stationary law of SGD carries a probability current and the
iterates circulate. This module measures that current on a trajectory and predicts it from
(H, D, η, b, μ) at a minimum (theory §8).

Measurement. With y_t = (x_t − x̄) B the coordinates of the iterates in a basis B (orthonormal
columns), the *areal velocity* (mean signed area swept per step) in the plane (i, j) is

    a_ij = ½ E[y_{t,i} y_{t+1,j} − y_{t,j} y_{t+1,i}],

antisymmetric in (i, j); zero for every reversible (detailed-balance) process. Its standard
error comes from batch means, which is safe under the strong autocorrelation of SGD iterates
as long as one batch is much longer than the slowest correlation time in the basis.

Prediction. Linearising at the minimum, x_{t+1} = A x_t − η ξ_t, A = I − ηH, Cov ξ_t = c D/b
(c = 1 for minibatches drawn with replacement, c = (N − b)/(N − 1) without; C&S Remark 12).
The stationary covariance solves the discrete Lyapunov equation Σ = AΣAᵀ + c η² D/b and the
lag-one covariance is C₁ = E[x_{t+1} x_tᵀ] = AΣ, so

    a = ½ Bᵀ(C₁ᵀ − C₁)B = ½ Bᵀ(ΣAᵀ − AΣ)B = (η/2) Bᵀ(HΣ − ΣH)B.

Heavy-ball momentum in optax's convention (m ← μm + g, x ← x − ηm) is linear in z = (x, m):

    z_{t+1} = M z_t + (−η, 1)ᵀ ⊗ ξ_t,   M = [[I − ηH, −ημI], [H, μI]],

with Σ_z = M Σ_z Mᵀ + [[η², −η], [−η, 1]] ⊗ cD/b and E[z_{t+1} z_tᵀ] = MΣ_z; the position block
of MΣ_z replaces C₁ above. Both are solved exactly in the eigenbasis of H, where M splits
into d blocks of size 2 and the Lyapunov equation into d² independent 4 × 4 systems.

Continuous time. The small-η limit is the SDE dx = −Hx dt + √(2β⁻¹ D) dW with β⁻¹ = cη/(2b)
(η/(1 − μ) in place of η with momentum), time η per step; its per-step areal velocity is
(η/2)·ω with ω the rotation rate of :func:`grd.analysis.rotation_rate`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grd.analysis import _checks


class ArealVelocity(NamedTuple):
    """Result of :func:`areal_velocity` (unpacks as ``rate, stderr = ...``).

    Attributes:
      rate: (k, k) antisymmetric mean signed area per step, a_ij = ½ E[y_i y'_j − y_j y'_i].
      stderr: (k, k) batch-means standard error of ``rate`` (zero diagonal).
    """

    rate: jax.Array
    stderr: jax.Array


class TimeReversalAsymmetry(NamedTuple):
    """Result of :func:`time_reversal_asymmetry`.

    Attributes:
      lags: (L,) lags τ.
      asymmetry: (L, k, k) C_ij(τ) − C_ji(τ), C_ij(τ) = mean_t y_{t,i} y_{t+τ,j}.
      stderr: (L, k, k) batch-means standard error of ``asymmetry``.
      reversed: (L, k, k) the same estimator on the time-reversed series; identically
        −``asymmetry`` up to O(τ/T) edge terms (reversal transposes C(τ)), so a sign check, not
        a null — see :func:`reversible_surrogate` for one.
    """

    lags: jax.Array
    asymmetry: jax.Array
    stderr: jax.Array
    reversed: jax.Array


class Stationarity(NamedTuple):
    """Result of :func:`stationarity`.

    Attributes:
      drift: (k,) mean of the second half minus mean of the first half.
      stderr: (k,) batch-means standard error of ``drift`` under stationarity.
      z: (k,) drift / stderr.
      variance_ratio: (k,) variance of the second half over that of the first.
      max_abs_z: scalar max_i |z_i|.
      threshold: scalar Bonferroni two-sided 5 % critical value for k coordinates.
      stationary: scalar bool, ``max_abs_z < threshold``.
    """

    drift: jax.Array
    stderr: jax.Array
    z: jax.Array
    variance_ratio: jax.Array
    max_abs_z: jax.Array
    threshold: jax.Array
    stationary: jax.Array


class SGDStationaryCovariance(NamedTuple):
    """Result of :func:`sgd_stationary_covariance`.

    Attributes:
      sigma: (d, d) stationary covariance Σ = E[x_t x_tᵀ] of the positions.
      lag_one: (d, d) C₁ = E[x_{t+1} x_tᵀ].
    """

    sigma: jax.Array
    lag_one: jax.Array


# ---------------------------------------------------------------------------------------------
# Measurement


def _as_trajectory(trajectory, name="trajectory", min_rows=3):
    if hasattr(trajectory, "as_array"):  # a grd.analysis.Trajectory store
        trajectory = trajectory.as_array()
    x = _checks.as_matrix(trajectory, name, min_rows=min_rows, what="snapshot(s)")
    return _checks.finite_rows(x, name)


def _project(trajectory, basis, center=True):
    x = _as_trajectory(trajectory)
    if center:
        x = x - jnp.mean(x, axis=0)
    if basis is None:
        return x
    basis = jnp.asarray(basis, x.dtype)
    if basis.ndim != 2 or basis.shape[0] != x.shape[1]:
        raise ValueError(
            f"`basis` must have shape (d, k) with d = {x.shape[1]} (the trajectory's width); "
            f"got {basis.shape}."
        )
    return x @ basis


def _check_batches(n_batches, n_rows, name="n_batches"):
    if not (isinstance(n_batches, int) and n_batches >= 2):
        raise ValueError(f"`{name}` must be an int ≥ 2; got {n_batches!r}.")
    if n_rows < 2 * n_batches:
        raise ValueError(
            f"the series has {n_rows} usable step(s), too few for {n_batches} batches of at "
            "least 2 steps; record a longer trajectory or lower `n_batches`."
        )
    return n_rows // n_batches


def _batch_means(products, n_batches):
    """products: (n, ...) per-step terms → (mean, stderr) over ``n_batches`` equal batches."""
    length = products.shape[0] // n_batches
    p = products[: length * n_batches].reshape((n_batches, length) + products.shape[1:])
    means = jnp.mean(p, axis=1)
    return jnp.mean(means, axis=0), jnp.std(means, axis=0, ddof=1) / np.sqrt(n_batches)


def _lagged_batches(y, lag, n_batches):
    """(n_batches, k, k) batch means of y_t y_{t+lag}ᵀ over t < T − lag."""
    n = y.shape[0] - lag
    length = _check_batches(n_batches, n)
    y0 = y[: length * n_batches].reshape(n_batches, length, -1)
    y1 = y[lag : lag + length * n_batches].reshape(n_batches, length, -1)
    return jnp.einsum("bli,blj->bij", y0, y1) / length


def areal_velocity(
    trajectory, basis=None, *, n_batches: int = 32, center: bool = True, check_batches=True
):
    """Areal velocity a_ij = ½ mean_t (y_{t,i} y_{t+1,j} − y_{t,j} y_{t+1,i}), batch-means errors.

    y_t = (x_t − x̄) B are the coordinates of the snapshots in the basis B. The per-step terms
    are split into ``n_batches`` consecutive equal batches (a remainder of < n_batches steps at
    the end is dropped); ``rate`` is the mean of the batch means and ``stderr`` their standard
    deviation over √n_batches. The estimate is asymptotically normal with that error when each
    batch is much longer than the integrated autocorrelation time of the projected process
    (≈ 1/(η λ_min) steps for SGD in a plane with smallest curvature λ_min, ≈ 1/(1 − μ) times
    longer with momentum). A reversible process has a = 0 in every plane (theory §8).

    Args:
      trajectory: (T, d) snapshots (or a :class:`grd.analysis.Trajectory`), consecutive steps.
      basis: (d, k) orthonormal columns (e.g. :func:`pca_basis`, :func:`eigen_basis`); ``None``
        uses the coordinates as given (a trajectory already projected).
      n_batches: number of batches for the error, ≥ 2 (default 32).
      center: subtract the time mean x̄ first (default); the rate is then invariant to where
        the minimum is.
      check_batches: estimate τ_int of every projected coordinate
        (:func:`integrated_autocorrelation_time`) and warn (``UserWarning``) when a batch is
        shorter than 20 τ_int, where the errors become optimistic. Skipped under jit/vmap.

    Returns:
      :class:`ArealVelocity` ``(rate, stderr)``, each (k, k); ``rate`` is antisymmetric.
    """
    y = _project(trajectory, basis, center)
    a = _areal_batches(y, n_batches)
    if check_batches:
        _warn_short_batches(y, n_batches, "areal_velocity")
    return ArealVelocity(jnp.mean(a, axis=0), jnp.std(a, axis=0, ddof=1) / np.sqrt(n_batches))


def _areal_batches(y, n_batches):
    m = _lagged_batches(y, 1, n_batches)  # batch means of y_t y_{t+1}ᵀ
    return 0.5 * (m - jnp.swapaxes(m, 1, 2))


def areal_velocity_batches(
    trajectory, basis=None, *, n_batches: int = 32, center: bool = True, check_batches=True
):
    """(n_batches, k, k) per-batch areal velocities; their mean is :func:`areal_velocity`'s rate.

    The input of :func:`compare_rates`: keeping the batch means (rather than only their mean
    and standard error) keeps the covariance between planes that share an axis. Arguments as
    in :func:`areal_velocity`.
    """
    y = _project(trajectory, basis, center)
    if check_batches:
        _warn_short_batches(y, n_batches, "areal_velocity_batches")
    return _areal_batches(y, n_batches)


def integrated_autocorrelation_time(trajectory, basis=None, *, c: float = 5.0, center=True):
    """(k,) integrated autocorrelation time τ_int of each projected coordinate, in steps.

    τ_int = 1 + 2 Σ_{t=1}^{M} ρ(t), ρ the normalised autocorrelation (by FFT), with Sokal's
    automatic window: the smallest M with M ≥ c·τ_int(M) (default c = 5). For an AR(1) with
    coefficient φ, τ_int = (1 + φ)/(1 − φ). Batch means of length L give a variance of the
    mean that is biased low by ≈ τ_int/L; :func:`areal_velocity` warns when L < 20 τ_int.
    The areal-velocity summands y_i y'_j decorrelate at least as fast as the slower of the two
    coordinates, so max(τ_i, τ_j) bounds the plane's correlation time (theory §8).

    Args:
      trajectory: (T, d) snapshots (or a :class:`grd.analysis.Trajectory`).
      basis: (d, k) orthonormal columns, or ``None``.
      c: window constant (4–10 is usual).
      center: subtract the time mean first.

    Returns:
      (k,) τ_int per coordinate (≥ 1 for positively correlated series).
    """
    y = _project(trajectory, basis, center)
    return _tau_int(y, c)


def _tau_int(y, c=5.0):
    n = y.shape[0]
    nfft = 1 << int(2 * n - 1).bit_length()
    f = jnp.fft.rfft(y - jnp.mean(y, axis=0), n=nfft, axis=0)
    acf = jnp.fft.irfft(jnp.abs(f) ** 2, n=nfft, axis=0)[:n]
    rho = acf / acf[0]
    taus = 1.0 + 2.0 * jnp.cumsum(rho[1:], axis=0)  # τ(M) for M = 1 … n − 1
    m = jnp.arange(1, n, dtype=y.dtype)[:, None]
    ok = m >= c * taus
    first = jnp.where(jnp.any(ok, axis=0), jnp.argmax(ok, axis=0), n - 2)
    return jnp.take_along_axis(taus, first[None, :], axis=0)[0]


def _warn_short_batches(y, n_batches, who, factor=20.0):
    if isinstance(y, jax.core.Tracer):
        return None
    length = y.shape[0] // n_batches
    tau = np.asarray(_tau_int(y))
    worst = float(np.max(tau))
    if length < factor * worst:
        warnings.warn(
            f"{who}: batches of {length} steps are shorter than {factor:g} × the slowest "
            f"integrated autocorrelation time τ_int = {worst:.3g} steps (coordinate "
            f"{int(np.argmax(tau))}); the batch-means standard errors are then biased low "
            f"(by ≈ τ_int/length ≈ {worst / length:.0%} in variance, more for short series). "
            "Record a longer trajectory, lower `n_batches`, or drop slow directions from the "
            "basis; check with grd.analysis.integrated_autocorrelation_time.",
            stacklevel=3,
        )
    return tau


def time_reversal_asymmetry(
    trajectory, basis=None, lags=(1, 2, 5, 10), *, n_batches: int = 32, center: bool = True
):
    """Time-reversal asymmetry of the lagged cross-covariance, C_ij(τ) − C_ji(τ).

    C_ij(τ) = mean_t y_{t,i} y_{t+τ,j}. For a stationary reversible process
    C(τ) = C(τ)ᵀ at every lag, so the asymmetry vanishes; a probability current makes it
    nonzero (at τ = 1 it is twice the areal velocity). Errors by batch means, as in
    :func:`areal_velocity`.

    ``reversed`` is the same estimator on the time-reversed series. It is **not** a null
    hypothesis test: reversing the series maps C(τ) to C(τ)ᵀ identically, so ``reversed`` equals
    −``asymmetry`` up to O(τ/T) edge terms for *every* series, reversible or not; it checks the
    estimator's sign convention and nothing else. For a null distribution under reversibility use
    :func:`reversible_surrogate`, which keeps the auto-covariances and the symmetric part of the
    cross-covariances and removes the antisymmetric part.

    Args:
      trajectory: (T, d) snapshots (or a :class:`grd.analysis.Trajectory`).
      basis: (d, k) orthonormal columns, or ``None``.
      lags: positive int lags (each < T / (2 n_batches)).
      n_batches: number of batches for the error.
      center: subtract the time mean first.

    Returns:
      :class:`TimeReversalAsymmetry`.
    """
    y = _project(trajectory, basis, center)
    lags = tuple(int(t) for t in np.atleast_1d(lags))
    if not lags or min(lags) < 1:
        raise ValueError(f"`lags` must be positive ints; got {lags!r}.")
    fwd, err, rev = [], [], []
    for lag in lags:
        m = _lagged_batches(y, lag, n_batches)
        a = m - jnp.swapaxes(m, 1, 2)
        fwd.append(jnp.mean(a, axis=0))
        err.append(jnp.std(a, axis=0, ddof=1) / np.sqrt(n_batches))
        mr = jnp.mean(_lagged_batches(y[::-1], lag, n_batches), axis=0)
        rev.append(mr - mr.T)
    return TimeReversalAsymmetry(jnp.asarray(lags), jnp.stack(fwd), jnp.stack(err), jnp.stack(rev))


def stationarity(trajectory, basis=None, *, n_batches: int = 16, level: float = 0.05):
    """Stationarity diagnostic: drift between the two halves against the stationary fluctuation.

    The (projected, uncentred) series is split into halves; drift = ȳ₂ − ȳ₁ per coordinate and
    its error under stationarity is √(se₁² + se₂²), each se by batch means over
    ``n_batches`` batches of one half. A stationary series gives z ≈ N(0, 1) per coordinate;
    the verdict ``stationary`` compares max |z| with the two-sided Bonferroni critical value
    for k coordinates at ``level``. ``variance_ratio`` (≈ 1 when stationary) catches a
    spread that is still growing or shrinking. Print it before any verdict on a current.

    Args:
      trajectory: (T, d) snapshots (or a :class:`grd.analysis.Trajectory`).
      basis: (d, k) orthonormal columns, or ``None``.
      n_batches: batches per half (default 16).
      level: family-wise level of the verdict (default 0.05).

    Returns:
      :class:`Stationarity`.
    """
    from scipy.stats import norm

    y = _project(trajectory, basis, center=False)
    half = y.shape[0] // 2
    _check_batches(n_batches, half)
    first, second = y[:half], y[half : 2 * half]
    m1, s1 = _batch_means(first, n_batches)
    m2, s2 = _batch_means(second, n_batches)
    drift = m2 - m1
    se = jnp.sqrt(s1**2 + s2**2)
    z = drift / se
    var_ratio = jnp.var(second, axis=0) / jnp.var(first, axis=0)
    k = y.shape[1]
    thr = jnp.asarray(norm.isf(level / (2 * k)), y.dtype)
    mz = jnp.max(jnp.abs(z))
    return Stationarity(drift, se, z, var_ratio, mz, thr, mz < thr)


def reversible_surrogate(trajectory, key, basis=None, *, center: bool = True):
    """A time-reversible surrogate of a multivariate series (the null for a current).

    Multivariate Fourier surrogate with the cross-spectrum symmetrised. With Y(f) the DFT of
    the (projected, centred) series, the cross-periodogram Y Y* has real part
    Re Y Re Yᵀ + Im Y Im Yᵀ (the symmetric cross-covariance, even in τ) and imaginary part
    (the antisymmetric one, odd in τ, which carries the current). The surrogate is

        Z(f) = Re Y(f) · e^{iφ_f} + Im Y(f) · e^{iψ_f},   φ_f, ψ_f i.i.d. uniform,

    the same two phases for every coordinate; so E_φψ[Z Z*] = Re(Y Y*) at every frequency.
    Averaged over the phases it keeps every auto-covariance and the symmetric part of every
    cross-covariance (circular, i.e. up to O(τ/T) edge terms) and has C(τ) = C(τ)ᵀ, hence zero
    areal velocity; a single draw keeps them up to the fluctuation of an average over ~T/2
    frequencies. Gaussian by construction, so it is a null for *linear* reversible dynamics.
    The mean (f = 0) and the Nyquist term are kept. O(T k log T).

    Args:
      trajectory: (T, d) snapshots (or a :class:`grd.analysis.Trajectory`).
      key: a ``jax.random`` key (vmap over keys for an ensemble of surrogates).
      basis: (d, k) orthonormal columns, or ``None``.
      center: subtract the time mean first (default).

    Returns:
      (T, k) surrogate series, real.
    """
    y = _project(trajectory, basis, center)
    n = y.shape[0]
    f = jnp.fft.rfft(y, axis=0)  # (n//2 + 1, k)
    k1, k2 = jax.random.split(key)
    shape = (f.shape[0], 1)
    phi = jnp.exp(2j * jnp.pi * jax.random.uniform(k1, shape, dtype=y.dtype))
    psi = jnp.exp(2j * jnp.pi * jax.random.uniform(k2, shape, dtype=y.dtype))
    z = jnp.real(f) * phi + jnp.imag(f) * psi
    keep = jnp.zeros(shape, bool).at[0].set(True)
    if n % 2 == 0:
        keep = keep.at[-1].set(True)
    z = jnp.where(keep, f, z)
    return jnp.fft.irfft(z, n=n, axis=0)


class RateComparison(NamedTuple):
    """Result of :func:`compare_rates`.

    Attributes:
      slope: OLS slope of measured on predicted through the origin, Σ m p / Σ p².
      slope_se: its delete-one-batch jackknife standard error.
      corr: Pearson correlation of measured and predicted over the planes.
      corr_se: its jackknife standard error.
      chi2: Hotelling's T² = rᵀ Ŝ⁻¹ r, r = measured − predicted, Ŝ the batch-means
        covariance of the measured mean over planes (carries the cross-plane covariance).
      dof: number of planes P.
      f_stat: T² (B − P)/(P (B − 1)) ~ F(P, B − P) under "measured = predicted" (≈ 1,
        the honest χ²/dof with an estimated covariance).
      p_value: upper tail of that F distribution.
      z: (P,) per-plane (measured − predicted)/se, se from the batch means.
      measured: (P,) measured mean rate per plane.
      stderr: (P,) its batch-means standard error.
    """

    slope: jax.Array
    slope_se: jax.Array
    corr: jax.Array
    corr_se: jax.Array
    chi2: jax.Array
    dof: int
    f_stat: jax.Array
    p_value: jax.Array
    z: jax.Array
    measured: jax.Array
    stderr: jax.Array


def compare_rates(batch_rates, predicted, planes=None) -> RateComparison:
    """Measured against predicted areal velocities, with errors that carry the plane covariance.

    Planes that share an axis have correlated errors, so per-plane standard errors alone
    understate the error of a fit over planes. Here every statistic is computed from the B
    batch means (:func:`areal_velocity_batches`): the slope (through the origin) and the
    correlation get delete-one-batch jackknife errors,

        se²_jk(θ) = (B − 1)/B Σ_b (θ_(−b) − θ̄_(·))²,   θ_(−b) from the mean without batch b,

    and the goodness of fit is Hotelling's T² = rᵀ Ŝ⁻¹ r with r = m̄ − p and Ŝ the sample
    covariance of the batch means over B; under m = p (Gaussian batch means)
    T² (B − P)/(P(B − 1)) ~ F(P, B − P), reported as ``f_stat`` (≈ 1) and ``p_value``.
    Needs B > P + 1 batches (B ≥ 2P is advisable: Ŝ is noisy).

    Args:
      batch_rates: (B, k, k) per-batch rates (planes taken from ``planes`` or all i < j), or
        (B, P) per-batch rates of P planes.
      predicted: (k, k) or (P,) predicted rates, matching ``batch_rates``.
      planes: optional (i, j) index arrays selecting planes from (k, k) inputs; default
        :func:`plane_pairs`.

    Returns:
      :class:`RateComparison`.
    """
    from scipy.stats import f as f_dist

    r = np.asarray(batch_rates, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if r.ndim == 3:
        if p.shape != r.shape[1:]:
            raise ValueError(
                f"`predicted` must have shape {r.shape[1:]} to match `batch_rates`; got {p.shape}."
            )
        i, j = plane_pairs(r.shape[1]) if planes is None else planes
        r, p = r[:, i, j], p[i, j]
    elif r.ndim != 2 or p.shape != r.shape[1:]:
        raise ValueError(
            "`batch_rates` must be (B, k, k) or (B, P) with `predicted` (k, k) or (P,); got "
            f"{r.shape} and {p.shape}."
        )
    nb, npl = r.shape
    if nb <= npl + 1:
        raise ValueError(
            f"{nb} batches cannot estimate the covariance of {npl} planes; need more than "
            f"{npl + 1} (raise `n_batches` or compare fewer planes)."
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
        raise ValueError("`batch_rates` and `predicted` must be finite.")

    def stats(m):
        slope = m @ p / (p @ p)
        corr = np.corrcoef(m, p)[0, 1]
        return slope, corr

    mean = r.mean(0)
    slope, corr = stats(mean)
    loo = (nb * mean[None, :] - r) / (nb - 1)
    jk = np.array([stats(m) for m in loo])
    se_jk = np.sqrt((nb - 1) / nb * np.sum((jk - jk.mean(0)) ** 2, axis=0))
    cov = np.cov(r, rowvar=False, ddof=1) / nb
    res = mean - p
    chi2 = float(res @ np.linalg.solve(cov, res))
    fs = chi2 * (nb - npl) / (npl * (nb - 1))
    se = np.sqrt(np.diag(cov))
    return RateComparison(
        jnp.asarray(slope),
        jnp.asarray(se_jk[0]),
        jnp.asarray(corr),
        jnp.asarray(se_jk[1]),
        jnp.asarray(chi2),
        npl,
        jnp.asarray(fs),
        jnp.asarray(f_dist.sf(fs, npl, nb - npl)),
        jnp.asarray(res / se),
        jnp.asarray(mean),
        jnp.asarray(se),
    )


def pca_basis(trajectory, k: int):
    """(d, k) top-k principal directions of the centred snapshots (right singular vectors).

    Signs fixed so that each column's largest-magnitude entry is positive (reproducible plane
    orientations, hence reproducible signs of the areal velocity). O(T d min(T, d)).
    """
    x = _as_trajectory(trajectory, min_rows=2)
    if not (isinstance(k, int) and 1 <= k <= min(x.shape)):
        raise ValueError(f"`k` must be an int in [1, {min(x.shape)}]; got {k!r}.")
    x = x - jnp.mean(x, axis=0)
    _, _, vt = jnp.linalg.svd(x, full_matrices=False)
    return _fix_signs(vt[:k].T)


def eigen_basis(matrix, k: int):
    """(d, k) eigenvectors of the symmetric ``matrix`` (e.g. H or D) for its k largest eigenvalues.

    Signs fixed as in :func:`pca_basis`. In the eigenbasis of H the predicted areal velocity of
    plane (i, j) is (η/2)(λ_i − λ_j)Σ_ij without momentum, so top-H planes with strongly
    coupled noise D_ij carry the largest currents.
    """
    a = jnp.asarray(matrix)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"`matrix` must be square (d, d); got shape {a.shape}.")
    if not (isinstance(k, int) and 1 <= k <= a.shape[0]):
        raise ValueError(f"`k` must be an int in [1, {a.shape[0]}]; got {k!r}.")
    _, vecs = jnp.linalg.eigh(0.5 * (a + a.T))
    return _fix_signs(vecs[:, ::-1][:, :k])


def _fix_signs(e):
    pivot = jnp.take_along_axis(e, jnp.argmax(jnp.abs(e), axis=0)[None, :], axis=0)
    return e * jnp.where(pivot < 0, -1.0, 1.0)


def plane_pairs(k: int):
    """The k(k − 1)/2 planes (i, j), i < j, of a k-column basis, as two int arrays (i, j).

    ``rate[i, j]`` indexes :func:`areal_velocity` results plane by plane.
    """
    i, j = np.triu_indices(k, 1)
    return i, j


# ---------------------------------------------------------------------------------------------
# Prediction


def _noise_factor(batch_size, n):
    if n is None:
        return 1.0
    if not (isinstance(n, int | np.integer) and n >= batch_size and n >= 2):
        raise ValueError(f"`n` (the data set size N) must be an int ≥ batch_size; got {n!r}.")
    return (n - batch_size) / (n - 1)


def _check_model(hessian, diffusion, lr, batch_size, momentum):
    h = jnp.asarray(hessian)
    dm = jnp.asarray(diffusion)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"`hessian` must be a square (d, d) matrix; got shape {h.shape}.")
    if dm.shape != h.shape:
        raise ValueError(f"`diffusion` must have the shape of `hessian` {h.shape}; got {dm.shape}.")
    dtype = jnp.result_type(h, dm, float)
    h, dm = h.astype(dtype), dm.astype(dtype)
    for name, a in (("hessian", h), ("diffusion", dm)):
        if not isinstance(a, jax.core.Tracer):
            an = np.asarray(a)
            if not np.all(np.isfinite(an)):
                raise ValueError(f"`{name}` contains NaN or inf.")
            scale = np.abs(an).max() if an.size else 0.0
            if not np.allclose(an, an.T, rtol=1e-6, atol=1e-10 * scale):
                raise ValueError(f"`{name}` must be symmetric; symmetrise it as (A + Aᵀ)/2.")
    if isinstance(lr, int | float) and not lr > 0:
        raise ValueError(f"`lr` must be > 0; got {lr}.")
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise ValueError(f"`batch_size` must be an int ≥ 1; got {batch_size!r}.")
    if isinstance(momentum, int | float) and not 0.0 <= momentum < 1.0:
        raise ValueError(f"`momentum` must be in [0, 1); got {momentum}.")
    return 0.5 * (h + h.T), 0.5 * (dm + dm.T), dtype


def _check_stable(lam, lr, momentum):
    """Stability of heavy ball on a quadratic: 0 < ηλ < 2(1 + μ) for every eigenvalue λ."""
    if any(isinstance(v, jax.core.Tracer) for v in (lam, lr, momentum)):
        return
    lam = np.asarray(lam)
    lo, hi = float(lam.min()), float(lam.max())
    if lo <= 0 or lr * hi >= 2 * (1 + momentum):
        raise ValueError(
            "the linearised SGD is not stationary: it needs every Hessian eigenvalue λ > 0 (a "
            f"strict minimum) and lr·λ < 2(1 + momentum); got λ ∈ [{lo:.3g}, {hi:.3g}], "
            f"lr = {lr}, momentum = {momentum}. Regularise the model or lower `lr`."
        )


def sgd_stationary_covariance(hessian, diffusion, lr, batch_size, *, momentum=0.0, n=None):
    """Stationary covariance and lag-one covariance of linearised (heavy-ball) SGD, exactly.

    Solves Σ_z = M Σ_z Mᵀ + G ⊗ cD/b for z = (x, m), M = [[I − ηH, −ημI], [H, μI]],
    G = [[η², −η], [−η, 1]], c = 1 (with replacement) or (N − b)/(N − 1) (``n`` = N given),
    and returns the position blocks Σ = E[x xᵀ] and C₁ = E[x_{t+1} x_tᵀ] = (MΣ_z)_xx. With
    μ = 0 this is Σ = AΣAᵀ + cη²D/b, C₁ = AΣ, A = I − ηH (theory §8).

    Method: H = VΛVᵀ; in that basis M is block-diagonal with 2 × 2 blocks
    M_i = [[1 − ηλ_i, −ημ], [λ_i, μ]], and the equation separates into d² systems
    (I₄ − M_i ⊗ M_j) vec S_ij = vec G · cD̃_ij/b, solved batched in the input dtype (use
    float64). With ``momentum=0`` (a Python number) the blocks are scalars and
    Σ̃_ij = cη²D̃_ij / (b(1 − a_i a_j)), a_i = 1 − ηλ_i. Cost O(d³) time for the
    eigendecomposition; memory O(d²) without momentum and O(16 d²) with it (d = 2000: ≈ 0.5
    GB), so dense d up to a few thousand; jit- and grad-able in H, D, η (and μ).

    Args:
      hessian: (d, d) symmetric H at the minimum, positive definite.
      diffusion: (d, d) symmetric D = covariance of the per-example gradients at the minimum.
      lr: learning rate η, with 0 < ηλ < 2(1 + μ) for every eigenvalue λ of H.
      batch_size: minibatch size b.
      momentum: heavy-ball μ ∈ [0, 1) in optax's convention (m ← μm + g, x ← x − ηm).
      n: data set size N for minibatches drawn without replacement; ``None`` (default) means
        draws with replacement (c = 1).

    Returns:
      :class:`SGDStationaryCovariance` ``(sigma, lag_one)``.
    """
    v, blocks, s = _phase_space_solution(hessian, diffusion, lr, batch_size, momentum, n)
    sigma_t = s[:, :, 0, 0]
    # (M_i S_ij)_xx = M_i[0,0] S_ij[0,0] + M_i[0,1] S_ij[1,0].
    lag_t = blocks[:, 0, 0][:, None] * sigma_t + blocks[:, 0, 1][:, None] * s[:, :, 1, 0]
    sigma = v @ sigma_t @ v.T
    return SGDStationaryCovariance(0.5 * (sigma + sigma.T), v @ lag_t @ v.T)


def _phase_space_solution(hessian, diffusion, lr, batch_size, momentum, n):
    """H = VΛVᵀ; the (d, 2, 2) blocks M_i and the (d, d, 2, 2) blocks S_ij of Σ_z in V."""
    h, dm, dtype = _check_model(hessian, diffusion, lr, batch_size, momentum)
    c = _noise_factor(batch_size, n)
    lam, v = jnp.linalg.eigh(h)
    _check_stable(lam, lr, momentum)
    eta = jnp.asarray(lr, dtype)
    dt = (v.T @ dm @ v) * (c / batch_size)
    d = lam.shape[0]
    one = jnp.ones_like(lam)
    if isinstance(momentum, int | float) and momentum == 0:
        # Plain SGD: scalar blocks, Σ̃_ij = η² D̃_ij / (1 − a_i a_j), a = 1 − ηλ; the momentum
        # coordinate is absent (its blocks are zero and never read).
        a = 1 - eta * lam
        sigma_t = eta**2 * dt / (1 - a[:, None] * a[None, :])
        zero = jnp.zeros_like(lam)
        blocks = jnp.stack([jnp.stack([a, zero], -1), jnp.stack([zero, zero], -1)], -2)
        s = jnp.zeros((d, d, 2, 2), dtype).at[:, :, 0, 0].set(sigma_t)
        return v, blocks, s
    mu = jnp.asarray(momentum, dtype)
    blocks = jnp.stack(
        [jnp.stack([1 - eta * lam, -eta * mu * one], -1), jnp.stack([lam, mu * one], -1)], -2
    )  # (d, 2, 2)
    # Row-major vec: vec(M_i S M_jᵀ) = (M_i ⊗ M_j) vec S.
    kron = jnp.einsum("iab,jcd->ijacbd", blocks, blocks).reshape(d, d, 4, 4)
    op = jnp.eye(4, dtype=dtype) - kron
    g = jnp.stack([eta**2, -eta, -eta, one[0]])
    rhs = g[None, None, :] * dt[:, :, None]
    s = jnp.linalg.solve(op, rhs[..., None])[..., 0].reshape(d, d, 2, 2)
    return v, blocks, s


def predicted_lagged_covariance(
    hessian, diffusion, lr, batch_size, lags, *, momentum=0.0, basis=None, n=None
):
    """Stationary lagged covariances C_τ = E[x_{t+τ} x_tᵀ] of linearised SGD (theory §8).

    C_τ = (M^τ Σ_z)_xx for heavy ball (M, Σ_z as in :func:`sgd_stationary_covariance`) and
    C_τ = A^τ Σ, A = I − ηH, without momentum; in the eigenbasis of H, M^τ is a power of each
    2 × 2 block. The time-reversal asymmetry that :func:`time_reversal_asymmetry` measures,
    C_ij(τ) − C_ji(τ) with C_ij(τ) = mean_t y_{t,i} y_{t+τ,j}, is predicted by
    Bᵀ(C_τᵀ − C_τ)B; half of it is the areal velocity of the series subsampled every τ steps
    (e.g. per-epoch snapshots, τ = steps per epoch). τ = 1 gives
    :func:`predicted_areal_velocity` × 2.

    Args:
      hessian, diffusion, lr, batch_size, momentum, n: as :func:`predicted_areal_velocity`.
      lags: non-negative int lags τ (a sequence; τ = 0 gives Σ).
      basis: (d, k) orthonormal columns B; ``None`` returns (d, d) matrices.

    Returns:
      (L, k, k) array, ``[l] = BᵀC_{lags[l]}B``.

    Cost: as :func:`sgd_stationary_covariance`, plus O(L d²) (dense, d up to a few thousand).
    """
    lags = tuple(int(t) for t in np.atleast_1d(lags))
    if not lags or min(lags) < 0:
        raise ValueError(f"`lags` must be non-negative ints; got {lags!r}.")
    v, blocks, s = _phase_space_solution(hessian, diffusion, lr, batch_size, momentum, n)
    out = []
    for lag in lags:
        p = jnp.broadcast_to(jnp.eye(2, dtype=blocks.dtype), blocks.shape)
        base, k = blocks, lag
        while k:  # M_i^τ by repeated squaring, batched over the d blocks
            if k & 1:
                p = p @ base
            base = base @ base
            k >>= 1
        c_t = p[:, 0, 0][:, None] * s[:, :, 0, 0] + p[:, 0, 1][:, None] * s[:, :, 1, 0]
        out.append(_in_basis(v @ c_t @ v.T, basis))
    return jnp.stack(out)


def _in_basis(a, basis):
    if basis is None:
        return a
    b = jnp.asarray(basis, a.dtype)
    if b.ndim != 2 or b.shape[0] != a.shape[0]:
        raise ValueError(f"`basis` must have shape ({a.shape[0]}, k); got {b.shape}.")
    return b.T @ a @ b


def predicted_areal_velocity(
    hessian, diffusion, lr, batch_size, *, momentum=0.0, basis=None, n=None
):
    """Predicted areal velocity of SGD at a minimum: a = ½ Bᵀ(C₁ᵀ − C₁)B (theory §8).

    With C₁ = E[x_{t+1} x_tᵀ] from :func:`sgd_stationary_covariance`. Without momentum
    C₁ = AΣ, A = I − ηH, and a = (η/2) Bᵀ(HΣ − ΣH)B, zero iff Σ commutes with H (e.g. D ∝ H or
    D = I); with heavy-ball momentum the phase-space solution is used and a is the rate of the
    positions x, which is what :func:`areal_velocity` measures on the iterates. Sign convention
    as in :func:`areal_velocity`: a_ij > 0 when the iterates turn from axis i towards axis j.

    Args:
      hessian: (d, d) symmetric positive definite H at the minimum.
      diffusion: (d, d) symmetric D (per-example gradient covariance at the minimum).
      lr: learning rate η.
      batch_size: minibatch size b.
      momentum: heavy-ball μ ∈ [0, 1) (optax convention).
      basis: (d, k) orthonormal columns B; ``None`` returns the full (d, d) rate.
      n: data set size N for sampling without replacement (noise × (N − b)/(N − 1));
        ``None`` (default): with replacement.

    Returns:
      (k, k) antisymmetric predicted rate per step.

    Size limit: dense, d up to a few thousand (see :func:`sgd_stationary_covariance`).
    """
    _, c1 = sgd_stationary_covariance(hessian, diffusion, lr, batch_size, momentum=momentum, n=n)
    c1 = _in_basis(c1, basis)
    return 0.5 * (c1.T - c1)


def sde_temperature(lr, batch_size, *, momentum=0.0, n=None):
    """Temperature β⁻¹ = c η_eff / (2b) of the SDE limit, η_eff = η/(1 − μ).

    c = 1 by default (minibatches drawn with replacement), c = (N − b)/(N − 1) with ``n`` = N
    (without replacement, C&S Remark 12) — the same choice as :func:`predicted_areal_velocity`.
    With μ = 0 and ``n=None`` it equals :func:`grd.analysis.sgd_temperature`.
    """
    c = _noise_factor(batch_size, n)
    return c * lr / ((1.0 - momentum) * 2.0 * batch_size)


def continuous_areal_velocity(
    hessian, diffusion, lr, batch_size, *, momentum=0.0, basis=None, n=None
):
    """Areal velocity per step of the SDE limit, (η_eff/2) Bᵀ(HΣ_c − Σ_cH)B.

    Σ_c solves HΣ_c + Σ_cH = 2β⁻¹D with β⁻¹ = :func:`sde_temperature` (the continuous
    Lyapunov equation of :func:`grd.analysis.lyapunov_solve`, here solved in the eigenbasis of
    H: Σ̃_ij = 2β⁻¹ D̃_ij / (λ_i + λ_j), O(d³)); one SGD step lasts η_eff = η/(1 − μ) units of
    time. In a plane E this is (η_eff/2)·ω with ω = :func:`grd.analysis.rotation_rate`
    (F = H), and it is the η → 0 limit of :func:`predicted_areal_velocity` (relative error
    O(η λ_max)).

    Args: as :func:`predicted_areal_velocity`.

    Returns:
      (k, k) antisymmetric rate per step.
    """
    h, dm, dtype = _check_model(hessian, diffusion, lr, batch_size, momentum)
    lam, v = jnp.linalg.eigh(h)
    _check_stable(lam, lr, momentum)
    beta_inv = sde_temperature(lr, batch_size, momentum=momentum, n=n)
    eta_eff = lr / (1.0 - momentum)
    dt = v.T @ dm @ v
    sigma_t = 2.0 * beta_inv * dt / (lam[:, None] + lam[None, :])
    comm_t = (lam[:, None] - lam[None, :]) * sigma_t  # (ΛΣ̃ − Σ̃Λ)_ij
    return 0.5 * eta_eff * _in_basis(v @ comm_t @ v.T, basis)
