"""Non-equilibrium behaviour of SGD: increment spectra, autocorrelations, linearised currents.

Chaudhari & Soatto, "Stochastic gradient descent performs variational inference, converges to
limit cycles for deep networks", ICLR 2018 (arXiv:1710.11029), sections 4–5 and appendix.

Empirical side: along a long constant-step SGD run, the per-weight increments w_{k+1} − w_k of
an equilibrium (reversible, white-noise) process have a flat amplitude spectrum and no
autocorrelation; peaks and long correlations, absent from a time-shuffled surrogate, indicate
deterministic rotation.

Linearised side: near a minimum, with ∇f(w) ≈ F w and constant D, SGD is the
Ornstein–Uhlenbeck process dw = −F w dt + √(2β⁻¹) σ dW, σσᵀ = D. Its stationary law is
N(0, Σ) with FΣ + ΣFᵀ = 2β⁻¹D; writing p ∝ exp(−βΦ), Φ = ½ wᵀUw, U = β⁻¹Σ⁻¹, the drift
splits as F w = (D + Q) ∇Φ with Q = F U⁻¹ − D antisymmetric. Q ≠ 0 iff detailed balance
fails, i.e. the stationary state carries a probability current.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grd.analysis import _checks


class IncrementSpectrum(NamedTuple):
    """Result of :func:`increment_spectrum`.

    Attributes:
      frequencies: (m,) frequencies in cycles per step, 1/(T−1) … ½ (zero frequency dropped).
      mean: (m,) amplitude |FFT| averaged over weights.
      std: (m,) standard deviation over weights.
    """

    frequencies: jax.Array
    mean: jax.Array
    std: jax.Array


class Autocorrelation(NamedTuple):
    """Result of :func:`autocorrelation`.

    Attributes:
      lags: (max_lag + 1,) lags 0 … max_lag.
      acf: (max_lag + 1,) or (max_lag + 1, d) sample autocorrelation, acf[0] = 1.
      band: scalar 1.96/√T, the two-sided 95 % band of white noise.
    """

    lags: jax.Array
    acf: jax.Array
    band: jax.Array


class NonequilibriumDecomposition(NamedTuple):
    """Result of :func:`nonequilibrium_decomposition`.

    Attributes:
      sigma: (d, d) stationary covariance Σ, FΣ + ΣFᵀ = 2β⁻¹D.
      U: (d, d) β⁻¹Σ⁻¹, the Hessian of the potential Φ.
      Q: (d, d) F U⁻¹ − D (antisymmetrised).
      asymmetry: scalar |Q + Qᵀ|_F / (2|Q|_F + |D|_F), the round-off check (≈ 1e-15 in f64).
    """

    sigma: jax.Array
    U: jax.Array
    Q: jax.Array
    asymmetry: jax.Array


def _check_trajectory(trajectory, min_steps: int):
    x = _checks.as_matrix(trajectory, "trajectory", min_rows=min_steps, what="snapshot(s)")
    return _checks.finite_rows(x, "trajectory")


def increment_spectrum(trajectory):
    """FFT amplitude spectrum of the per-weight increments Δw_k = w_{k+1} − w_k.

    For each weight j the increments are centred (removing the constant drift, so the zero
    frequency vanishes and is dropped) and A_j(f) = |Σ_k Δw_kj e^{−2πi f k}| / √(T−1);
    returns the mean and std over j. White-noise increments give a flat mean (E A = √(πσ²)/2
    at every interior frequency); Chaudhari & Soatto find peaks for deep networks.

    Args:
      trajectory: (T, d) snapshots, T ≥ 4.

    Returns:
      :class:`IncrementSpectrum` with (⌊(T−1)/2⌋,) arrays.

    Cost: O(T d log T) time, O(T d) memory.
    """
    x = _check_trajectory(trajectory, 4)
    inc = jnp.diff(x, axis=0)
    inc = inc - jnp.mean(inc, axis=0)
    m = inc.shape[0]
    amp = jnp.abs(jnp.fft.rfft(inc, axis=0))[1:] / jnp.sqrt(jnp.asarray(m, x.dtype))
    freqs = jnp.fft.rfftfreq(m)[1:].astype(x.dtype)
    return IncrementSpectrum(freqs, jnp.mean(amp, axis=1), jnp.std(amp, axis=1))


def autocorrelation(x, max_lag: int):
    """Sample autocorrelation r_k = Σ_t (x_t − x̄)(x_{t+k} − x̄) / Σ_t (x_t − x̄)², k ≤ max_lag.

    The usual biased estimator (divides by T at every lag), computed by a zero-padded FFT.
    Under white noise r_k ≈ N(0, 1/T) for k ≥ 1, hence the 95 % band ±1.96/√T (Bartlett).

    Args:
      x: (T,) series or (T, d) series in columns (e.g. increments of each weight), T ≥ 3.
      max_lag: largest lag, 1 ≤ max_lag < T.

    Returns:
      :class:`Autocorrelation`; ``acf`` has shape (max_lag + 1,) or (max_lag + 1, d).
    """
    x = jnp.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"`x` must have shape (T,) or (T, d); got {x.shape}.")
    squeeze = x.ndim == 1
    x2 = _checks.as_matrix(x[:, None] if squeeze else x, "x", min_rows=3, what="time step(s)")
    x2 = _checks.finite_rows(x2, "x")
    big_t = x2.shape[0]
    if not (isinstance(max_lag, int) and 1 <= max_lag < big_t):
        raise ValueError(
            f"`max_lag` must be an int with 1 ≤ max_lag < T = {big_t}; got {max_lag!r}."
        )
    c = x2 - jnp.mean(x2, axis=0)
    nfft = 1 << int(np.ceil(np.log2(2 * big_t - 1)))
    spec = jnp.fft.rfft(c, n=nfft, axis=0)
    acov = jnp.fft.irfft(spec * jnp.conj(spec), n=nfft, axis=0)[: max_lag + 1]
    acf = acov / acov[0]
    band = 1.96 / jnp.sqrt(jnp.asarray(big_t, acf.dtype))
    return Autocorrelation(jnp.arange(max_lag + 1), acf[:, 0] if squeeze else acf, band)


def shuffled_surrogate(trajectory, key):
    """Time-shuffled surrogate: permute the increments in time and re-sum them.

    w̃_0 = w_0, w̃_{k+1} = w̃_k + Δw_{π(k)} with one random permutation π shared by all weights:
    the marginal law of the increments and their cross-weight covariance are kept, every
    temporal correlation (and hence any cycle) is destroyed. The end point is unchanged.

    Args:
      trajectory: (T, d) snapshots, T ≥ 3.
      key: a ``jax.random`` key.

    Returns:
      (T, d) surrogate trajectory.
    """
    x = _check_trajectory(trajectory, 3)
    inc = jnp.diff(x, axis=0)
    inc = inc[jax.random.permutation(key, inc.shape[0])]
    return jnp.concatenate([x[:1], x[:1] + jnp.cumsum(inc, axis=0)], axis=0)


def _check_linear(F, D, beta_inv):
    F = jnp.asarray(F)
    D = jnp.asarray(D)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(f"`F` must be a square (d, d) matrix; got shape {F.shape}.")
    if D.shape != F.shape:
        raise ValueError(f"`D` must have the shape of `F` {F.shape}; got {D.shape}.")
    dtype = jnp.result_type(F, D, float)
    F, D = F.astype(dtype), D.astype(dtype)
    if not isinstance(F, jax.core.Tracer):
        ev = np.linalg.eigvals(np.asarray(F))
        if not np.all(np.isfinite(ev)) or np.min(ev.real) <= 0:
            raise ValueError(
                "`F` must be stable (every eigenvalue with positive real part) for the "
                f"process dw = −F w dt + … to be stationary; smallest real part {np.min(ev.real)}."
            )
    if not isinstance(D, jax.core.Tracer):
        dn = np.asarray(D)
        if not np.allclose(dn, dn.T, rtol=1e-6, atol=1e-12 * np.abs(dn).max()):
            raise ValueError("`D` must be symmetric (a diffusion matrix σσᵀ).")
    if isinstance(beta_inv, int | float) and not beta_inv > 0:
        raise ValueError(f"`beta_inv` must be > 0; got {beta_inv}.")
    return F, D, jnp.asarray(beta_inv, dtype)


def lyapunov_solve(F, D, beta_inv):
    """Stationary covariance Σ of dw = −F w dt + √(2β⁻¹) σ dW: solves FΣ + ΣFᵀ = 2β⁻¹D.

    Solved as the d²×d² linear system (I ⊗ F + F ⊗ I) vec Σ = 2β⁻¹ vec D with
    ``jnp.linalg.solve`` (jit- and grad-able; O(d⁶) time, O(d⁴) memory, so meant for the
    linearised analysis in a few dimensions, d ≲ 50; for larger d use
    ``scipy.linalg.solve_continuous_lyapunov(F, 2*beta_inv*D)``, Bartels–Stewart, O(d³)).
    The system is non-singular iff no two eigenvalues of F sum to zero, in particular when F
    is stable.

    Args:
      F: (d, d) drift matrix (∇f ≈ F w), eigenvalues with positive real part.
      D: (d, d) symmetric diffusion matrix.
      beta_inv: temperature β⁻¹ > 0 (η/(2b) for SGD).

    Returns:
      (d, d) symmetric Σ.
    """
    F, D, beta_inv = _check_linear(F, D, beta_inv)
    d = F.shape[0]
    eye = jnp.eye(d, dtype=F.dtype)
    op = jnp.kron(eye, F) + jnp.kron(F, eye)
    # Row-major vec: vec(FΣ) = (F ⊗ I) vec Σ, vec(ΣFᵀ) = (I ⊗ F) vec Σ.
    sigma = jnp.linalg.solve(op, (2.0 * beta_inv * D).reshape(-1)).reshape(d, d)
    return 0.5 * (sigma + sigma.T)


def nonequilibrium_decomposition(F, D, beta_inv):
    """Potential and antisymmetric parts of a linear SGD model (Chaudhari & Soatto, §5).

    Σ from :func:`lyapunov_solve`, U = β⁻¹Σ⁻¹ (stationary law ∝ exp(−½βwᵀUw)), and
    Q = F U⁻¹ − D = βFΣ − D. Q + Qᵀ = β(FΣ + ΣFᵀ) − 2D = 0, so Q is antisymmetric; its
    computed symmetric part (round-off) is reported as ``asymmetry`` and removed.
    D ∝ I with F symmetric gives Q = 0 (equilibrium); F and D that do not commute give Q ≠ 0.

    Args:
      F: (d, d) stable drift matrix.
      D: (d, d) symmetric diffusion matrix.
      beta_inv: temperature β⁻¹ > 0.

    Returns:
      :class:`NonequilibriumDecomposition`.
    """
    F, D, beta_inv = _check_linear(F, D, beta_inv)
    sigma = lyapunov_solve(F, D, beta_inv)
    U = jnp.linalg.inv(sigma) * beta_inv
    Q = F @ sigma / beta_inv - D
    scale = 2.0 * jnp.linalg.norm(Q) + jnp.linalg.norm(D)
    asym = jnp.linalg.norm(Q + Q.T) / scale
    return NonequilibriumDecomposition(sigma, 0.5 * (U + U.T), 0.5 * (Q - Q.T), asym)


def top_eigenplane(D):
    """(d, 2) orthonormal top-2 eigenvectors (e₁, e₂) of symmetric D, signs fixed.

    Each vector's largest-magnitude component is made positive, so the orientation of the
    plane (and the sign of :func:`rotation_rate`) is reproducible.
    """
    _, vecs = jnp.linalg.eigh(jnp.asarray(D))
    e = vecs[:, ::-1][:, :2]
    pivot = jnp.take_along_axis(e, jnp.argmax(jnp.abs(e), axis=0)[None, :], axis=0)
    return e * jnp.where(pivot < 0, -1.0, 1.0)


def rotation_rate(F, D, beta_inv, plane=None):
    """Stationary rotation rate 2β⁻¹ (EᵀQE)₁₂ in a 2-D plane, by default the top-2 plane of D.

    What it measures: with x = Eᵀw the coordinates in the plane E = (e₁, e₂), the stationary
    mean angular momentum  ω = lim (1/t) ∫ (x₁ dx₂ − x₂ dx₁)  (twice the mean areal velocity;
    Itô and Stratonovich agree because the quadratic covariation of x₁, x₂ is symmetric).
    Derivation: the Fokker–Planck current is J = −F w p − β⁻¹D∇p = −Q U w p, since
    ∇p = −βUw p and F − DU = QU. With A = [[0, 1], [−1, 0]],
    ω = E[xᵀ A Eᵀ (J/p)] = −tr(E A Eᵀ Q U Σ) = −β⁻¹ tr(A EᵀQE) = 2β⁻¹ (EᵀQE)₁₂
    (using UΣ = β⁻¹I). Equivalently ω = −E[xᵀ A Eᵀ F w] from the drift alone. In d = 2 with
    E = I this is the 2β⁻¹Q₁₂ of Chaudhari & Soatto; it is zero iff the plane carries no
    current. The sign is relative to the orientation of E.

    Args:
      F: (d, d) stable drift matrix, d ≥ 2.
      D: (d, d) symmetric diffusion matrix.
      beta_inv: temperature β⁻¹ > 0.
      plane: optional (d, 2) orthonormal basis E; default :func:`top_eigenplane` of D.

    Returns:
      Scalar ω (radians·length² per unit time).
    """
    F, D, beta_inv = _check_linear(F, D, beta_inv)
    if F.shape[0] < 2:
        raise ValueError(f"`F` must be at least 2×2 for a rotation plane; got {F.shape}.")
    E = top_eigenplane(D) if plane is None else jnp.asarray(plane, F.dtype)
    if E.shape != (F.shape[0], 2):
        raise ValueError(f"`plane` must have shape ({F.shape[0]}, 2); got {E.shape}.")
    Q = nonequilibrium_decomposition(F, D, beta_inv).Q
    return 2.0 * beta_inv * (E[:, 0] @ Q @ E[:, 1])
