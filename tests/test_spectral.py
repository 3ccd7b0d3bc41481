"""Spectral density (stochastic Lanczos quadrature) and diagonal of D against dense float64
references (theory §2, §6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, tiny_mlp_problem

import grd
from grd._spectral import _probes

TOL64 = 1e-10


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, batch = tiny_mlp_problem(n=12, hidden=5)  # d = 30, rank D ≤ 11
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    return loss_fn, params, batch, D


def wasserstein1(x, wx, y, wy):
    """W1 between two discrete measures on the line: ∫ |F_x − F_y| dt."""
    pts = np.concatenate([x, y])
    order = np.argsort(pts)
    mass = np.concatenate([wx, -np.asarray(wy)])[order]
    cdf_diff = np.cumsum(mass)[:-1]
    return float(np.sum(np.abs(cdf_diff) * np.diff(pts[order])))


@pytest.fixture(scope="module")
def slq(problem):
    loss_fn, params, batch, D = problem
    P, m, key = 6, 4, jax.random.PRNGKey(5)
    sd = grd.diffusion_spectral_density(
        loss_fn, params, batch, num_probes=P, num_matvecs=m, key=key
    )
    return sd, np.asarray(_probes(key, P, D.shape[0], jnp.float64)), m


def test_slq_quadrature_matches_moments(problem, slq):
    """Each probe's m-node Gauss quadrature reproduces vᵀ D^p v for p ≤ 2m − 1 (exactness of
    Gauss quadrature; round-off ≈ 1e-15 relative to λ_max^p)."""
    D = problem[3]
    sd, V, m = slq
    lmax = np.linalg.eigvalsh(D)[-1]
    for p in range(2 * m):
        ref = np.einsum("pi,ij,pj->p", V, np.linalg.matrix_power(D, p), V)
        got = np.sum(np.asarray(sd.weights) * np.asarray(sd.nodes) ** p, axis=1)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * lmax**p)
    np.testing.assert_allclose(np.sum(sd.weights, axis=1), 1.0, atol=TOL64)


def test_slq_density_wasserstein_bound(problem, slq):
    """W1(SLQ, μ) ≤ W1(μ̂_P, μ) + π λ_max / (4m), μ = (1/d) Σ δ_λi the exact spectral measure:
    the probe average μ̂_P = (1/P) Σ_p Σ_i (v_p·u_i)² δ_λi is computed from the dense
    eigenvectors with the same probes, and each probe's Gauss quadrature, matching 2m − 1
    moments on [0, λ_max], is within π λ_max/(4m) of μ_v (Jackson's theorem, degree 2m − 1,
    doubled for the two measures; W1 is convex in mixtures)."""
    D = problem[3]
    sd, V, m = slq
    P = V.shape[0]
    lam, U = np.linalg.eigh(D)
    lam = np.clip(lam, 0, None)
    d = lam.size
    w_probe = np.mean((V @ U) ** 2, axis=0)
    slq_x = np.asarray(sd.nodes).ravel()
    slq_w = np.asarray(sd.weights).ravel() / P
    exact_w = np.full(d, 1.0 / d)
    w1 = wasserstein1(slq_x, slq_w, lam, exact_w)
    bound = wasserstein1(lam, w_probe, lam, exact_w) + np.pi * lam[-1] / (4 * m)
    assert w1 <= bound + TOL64, (w1, bound)
    # the smoothed density is a probability density with non-negative error bars
    dens, grid = np.asarray(sd.density), np.asarray(sd.grid)
    assert np.all(dens >= 0) and np.all(np.asarray(sd.stderr) >= 0)
    np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, atol=1e-2)  # tails beyond 3σ


def test_slq_exhausted_krylov_space_is_exact(problem):
    """m = N ≥ rank D + 1: μ_v has ≤ N atoms and the quadrature equals μ_v exactly, so
    W1(SLQ, μ̂_P) is round-off."""
    loss_fn, params, batch, D = problem
    P, key = 3, jax.random.PRNGKey(1)
    sd = grd.diffusion_spectral_density(
        loss_fn, params, batch, num_probes=P, num_matvecs=12, key=key
    )
    lam, U = np.linalg.eigh(D)
    V = np.asarray(_probes(key, P, lam.size, jnp.float64))
    w_probe = np.mean((V @ U) ** 2, axis=0)
    w1 = wasserstein1(np.asarray(sd.nodes).ravel(), np.asarray(sd.weights).ravel() / P,
                      lam, w_probe)  # fmt: skip
    assert w1 <= 1e-8 * lam[-1]


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_diagonal_exact_against_dense(problem, chunk_size):
    loss_fn, params, batch, D = problem
    diag = grd.diffusion_diagonal(loss_fn, params, batch, chunk_size=chunk_size)
    assert jax.tree_util.tree_structure(diag) == jax.tree_util.tree_structure(params)
    np.testing.assert_allclose(flat(diag), np.diag(D), rtol=0, atol=TOL64)
    np.testing.assert_allclose(np.sum(flat(diag)), grd.diffusion_trace(loss_fn, params, batch),
                               rtol=1e-12)  # fmt: skip


def test_diagonal_hutchinson_within_its_standard_error(problem):
    """Entry i of the estimate has variance Σ_{j≠i} D_ij² / S (a Rademacher sum, sub-Gaussian):
    every entry within 5 standard errors (probability of failure per entry ≤ 2e^{−12.5})."""
    loss_fn, params, batch, D = problem
    S = 64
    est = flat(grd.diffusion_diagonal(loss_fn, params, batch, method="hutchinson",
                                      num_samples=S, key=jax.random.PRNGKey(2)))  # fmt: skip
    off = D - np.diag(np.diag(D))
    se = np.sqrt(np.sum(off**2, axis=1) / S)
    assert np.all(np.abs(est - np.diag(D)) <= 5 * se + TOL64)


def test_spectral_input_errors(problem):
    loss_fn, params, batch, _ = problem
    with pytest.raises(ValueError, match="num_probes"):
        grd.diffusion_spectral_density(loss_fn, params, batch, num_probes=0)
    with pytest.raises(ValueError, match="num_matvecs"):
        grd.diffusion_spectral_density(loss_fn, params, batch, num_matvecs=31)
    with pytest.raises(ValueError, match="key"):
        grd.diffusion_diagonal(loss_fn, params, batch, method="hutchinson")
    with pytest.raises(ValueError, match="method"):
        grd.diffusion_diagonal(loss_fn, params, batch, method="dense")
