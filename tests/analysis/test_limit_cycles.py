"""Tests for grd.analysis.limit_cycles: white-noise spectra, ACF, surrogates, OU currents."""

import jax
import numpy as np
import pytest
from scipy.linalg import solve_continuous_lyapunov

from grd.analysis import (
    autocorrelation,
    increment_spectrum,
    lyapunov_solve,
    nonequilibrium_decomposition,
    rotation_rate,
    shuffled_surrogate,
    top_eigenplane,
)


def test_white_noise_spectrum_is_flat():
    rng = np.random.default_rng(0)
    traj = np.cumsum(rng.standard_normal((513, 2000)) * 0.1 + 0.05, axis=0)
    spec = increment_spectrum(traj)
    mean = np.asarray(spec.mean)
    assert mean.shape == (256,) and spec.frequencies[-1] == pytest.approx(0.5)
    # Per-bin relative noise of the mean over d = 2000 weights is 0.52/√2000 ≈ 1.2 %, so the
    # max of 256 bins sits ≈ 3.5σ ≈ 4 % above the mean; measured 1.04. Tolerance 1.10.
    assert mean.max() / mean.mean() < 1.10
    assert mean.mean() == pytest.approx(0.1 * np.sqrt(np.pi) / 2, rel=0.02)


def test_oscillation_gives_peak_surrogate_does_not():
    rng = np.random.default_rng(1)
    t = np.arange(1025)[:, None]
    traj = np.sin(2 * np.pi * 0.125 * t + rng.uniform(0, 6.3, 50)) + np.cumsum(
        0.05 * rng.standard_normal((1025, 50)), axis=0
    )
    spec = increment_spectrum(traj)
    f_peak = float(spec.frequencies[int(np.argmax(spec.mean))])
    assert f_peak == pytest.approx(0.125, abs=1e-3)
    sur = shuffled_surrogate(traj, jax.random.PRNGKey(0))
    m = np.asarray(increment_spectrum(sur).mean)
    # Measured: peak/mean 180 for the run, 2.2 for the surrogate (whose shared permutation
    # keeps the weights' increments correlated, so averaging over weights does not smooth it).
    assert float(spec.mean.max() / spec.mean.mean()) > 20.0
    assert m.max() / m.mean() < 4.0
    assert 0.5 < m[int(np.argmax(spec.mean))] / m.mean() < 1.5


def test_surrogate_keeps_increments_and_endpoints():
    traj = np.cumsum(np.random.default_rng(2).standard_normal((50, 3)), axis=0)
    sur = np.asarray(shuffled_surrogate(traj, jax.random.PRNGKey(3)))
    np.testing.assert_allclose(sur[0], traj[0])
    np.testing.assert_allclose(sur[-1], traj[-1], rtol=1e-12)
    a, b = np.diff(traj, axis=0), np.diff(sur, axis=0)
    np.testing.assert_allclose(np.sort(a[:, 0]), np.sort(b[:, 0]), rtol=1e-10)
    assert not np.allclose(a, b)
    # one permutation shared by all weights: rows of increments are permuted as a whole
    rows_a = {tuple(np.round(r, 8)) for r in a}
    assert {tuple(np.round(r, 8)) for r in b} == rows_a


def test_autocorrelation_matches_direct_and_band():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4000, 3))
    res = autocorrelation(x, 20)
    c = x - x.mean(0)
    direct = np.stack([(c[: len(c) - k] * c[k:]).sum(0) for k in range(21)]) / (c**2).sum(0)
    np.testing.assert_allclose(np.asarray(res.acf), direct, atol=1e-12)
    assert float(res.band) == pytest.approx(1.96 / np.sqrt(4000))
    # white noise: ~95 % of the lags 1..20 (60 values) inside the band
    assert np.mean(np.abs(np.asarray(res.acf[1:])) < float(res.band)) > 0.85
    # AR(1) with φ = 0.8: r_1 ≈ 0.8, far outside
    e = rng.standard_normal(4000)
    ar = np.zeros(4000)
    for i in range(1, 4000):
        ar[i] = 0.8 * ar[i - 1] + e[i]
    r = autocorrelation(ar, 3)
    assert r.acf.shape == (4,) and float(r.acf[1]) == pytest.approx(0.8, abs=0.04)


def _ou_setup(d=3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    F = a @ a.T / d + 0.5 * np.eye(d)  # symmetric, stable
    s = rng.standard_normal((d, d))
    D = s @ s.T / d + 0.1 * np.eye(d)  # does not commute with F
    return F, D


def test_lyapunov_matches_scipy():
    rng = np.random.default_rng(5)
    F = rng.standard_normal((5, 5)) + 4 * np.eye(5)  # non-symmetric, stable
    s = rng.standard_normal((5, 5))
    D = s @ s.T
    sig = np.asarray(lyapunov_solve(F, D, 0.3))
    np.testing.assert_allclose(sig, solve_continuous_lyapunov(F, 0.6 * D), rtol=1e-10)
    np.testing.assert_allclose(F @ sig + sig @ F.T, 0.6 * D, atol=1e-10)


def test_equilibrium_gives_zero_Q():
    F, _ = _ou_setup()
    dec = nonequilibrium_decomposition(F, 0.7 * np.eye(3), 0.05)
    np.testing.assert_allclose(np.asarray(dec.Q), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dec.U), F / 0.7, rtol=1e-10)
    assert float(rotation_rate(F, 0.7 * np.eye(3), 0.05, plane=np.eye(3)[:, :2])) == pytest.approx(
        0.0, abs=1e-13
    )


def test_noncommuting_gives_antisymmetric_nonzero_Q():
    F, D = _ou_setup()
    assert np.linalg.norm(F @ D - D @ F) > 0.1
    dec = nonequilibrium_decomposition(F, D, 0.05)
    Q = np.asarray(dec.Q)
    assert float(dec.asymmetry) < 1e-12
    np.testing.assert_allclose(Q, -Q.T, atol=1e-14)
    assert np.linalg.norm(Q) > 0.05 * np.linalg.norm(D)
    # F = (D + Q) U
    np.testing.assert_allclose((D + Q) @ np.asarray(dec.U), F, atol=1e-10)


def test_ou_rotation_rate_matches_simulation():
    """Euler–Maruyama OU chains: mean of (x₁Δx₂ − x₂Δx₁)/Δt in the top-2 plane of D."""
    F, D = _ou_setup()
    beta_inv = 0.5
    predicted = float(rotation_rate(F, D, beta_inv))
    assert abs(predicted) > 0.05
    E = np.asarray(top_eigenplane(D))
    sigma = np.asarray(lyapunov_solve(F, D, beta_inv))
    rng = np.random.default_rng(7)
    chains, steps, dt = 4000, 1500, 0.005
    L = np.linalg.cholesky(D)
    w = rng.standard_normal((chains, 3)) @ np.linalg.cholesky(sigma).T  # start stationary
    acc = np.zeros(chains)
    for _ in range(steps):
        dw = -w @ F.T * dt + np.sqrt(2 * beta_inv * dt) * rng.standard_normal((chains, 3)) @ L.T
        x, dx = w @ E, dw @ E
        acc += x[:, 0] * dx[:, 1] - x[:, 1] * dx[:, 0]
        w = w + dw
    per_chain = acc / (steps * dt)
    est, err = per_chain.mean(), per_chain.std() / np.sqrt(chains)
    # Measured: predicted −0.1322, simulated −0.1319 ± 0.0071; allow 4 SE plus 2 % (O(dt) bias).
    assert abs(est - predicted) < 4 * err + 0.02 * abs(predicted)
    assert err < 0.25 * abs(predicted)  # the test can tell Q ≠ 0 from Q = 0


def test_bad_linear_inputs():
    F, D = _ou_setup()
    with pytest.raises(ValueError, match="`F` must be stable"):
        lyapunov_solve(-F, D, 0.1)
    with pytest.raises(ValueError, match="`D` must be symmetric"):
        nonequilibrium_decomposition(F, D + np.triu(np.ones((3, 3)), 1), 0.1)
    with pytest.raises(ValueError, match="`D` must have the shape"):
        rotation_rate(F, D[:2, :2], 0.1)
    with pytest.raises(ValueError, match="beta_inv"):
        lyapunov_solve(F, D, 0.0)


def test_bad_trajectories():
    with pytest.raises(ValueError, match="trajectory.*at least 4"):
        increment_spectrum(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="trajectory.*row"):
        shuffled_surrogate(
            np.where(np.arange(6)[:, None] == 1, np.nan, np.ones((6, 2))), jax.random.PRNGKey(0)
        )
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(np.ones(10), 10)
