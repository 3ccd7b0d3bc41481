"""Lanczos of grd (full reorthogonalisation, hoisted forward): eigenpairs against the Gram
spectrum and dense references in float64, several k and m; no retracing on repeated calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_mlp_problem
from jax.flatten_util import ravel_pytree

import grd

# float64 round-off on these O(1) problems is ~1e-15; 1e-10 leaves room for d ~ 50 sums.
TOL64 = 1e-10


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, batch = tiny_mlp_problem(n=12, hidden=5)  # d = 3·5 + 5 + 5·2 = 30
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    return loss_fn, params, batch, D


@pytest.mark.parametrize(("k", "m"), [(1, 4), (3, 7), (6, 12)])
def test_lanczos_eigenpairs_against_gram(problem, k, m):
    """m = N = 12 ≥ rank D + 1 exhausts the Krylov space: exact to round-off. Below, the Ritz
    values obey the theory: θ_j ≤ λ_j (Cauchy interlacing) and each θ_j lies within the
    residual ‖D u_j − θ_j u_j‖ of an eigenvalue of D (Weyl / Bauer–Fike for symmetric D)."""
    loss_fn, params, batch, D = problem
    lam = np.linalg.eigvalsh(D)[::-1]
    gram = np.asarray(grd.diffusion_spectrum(loss_fn, params, batch).eigenvalues)
    np.testing.assert_allclose(gram, lam[:11], atol=TOL64)
    sp = grd.diffusion_spectrum(
        loss_fn, params, batch, k, method="lanczos", num_matvecs=m, return_eigenvectors=True
    )
    theta = np.asarray(sp.eigenvalues)
    U = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(sp.eigenvectors))
    assert theta.shape == (k,) and U.shape == (k, D.shape[0])
    assert np.all(np.diff(theta) <= 0)
    np.testing.assert_allclose(U @ U.T, np.eye(k), atol=TOL64)  # orthonormal Ritz vectors
    res = np.linalg.norm(U @ D - theta[:, None] * U, axis=1)
    assert np.all(theta <= gram[:k] + TOL64)
    for t, r in zip(theta, res, strict=True):
        assert np.min(np.abs(lam - t)) <= r + TOL64
    if m == 12:
        np.testing.assert_allclose(theta, gram[:k], atol=TOL64)
        assert np.all(res <= 1e-9)


@pytest.mark.slow
def test_lanczos_chunked_matches_unchunked(problem):
    loss_fn, params, batch, _ = problem
    a = grd.diffusion_spectrum(loss_fn, params, batch, 3, method="lanczos", num_matvecs=12)
    b = grd.diffusion_spectrum(
        loss_fn, params, batch, 3, method="lanczos", num_matvecs=12, chunk_size=5
    )
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, atol=TOL64)


def test_lanczos_under_jit_and_vmap_of_keys(problem):
    loss_fn, params, batch, D = problem
    top = np.linalg.eigvalsh(D)[::-1][:2]
    f = jax.jit(
        jax.vmap(
            lambda key: (
                grd.diffusion_spectrum(
                    loss_fn, params, batch, 2, method="lanczos", num_matvecs=12, key=key
                ).eigenvalues
            )
        )
    )
    out = f(jax.random.split(jax.random.PRNGKey(0), 3))
    np.testing.assert_allclose(out, np.broadcast_to(top, (3, 2)), atol=TOL64)


def test_repeated_eager_calls_do_not_retrace(problem):
    """Count the Python executions of loss_fn: the first call traces it (the input check's
    eval_shape plus the linearisation); later calls with the same loss_fn only run the
    eager input check, the same number of executions each time."""
    base, params, batch, _ = problem
    count = [0]

    def loss_fn(p, ex):
        count[0] += 1
        return base(p, ex)

    counts = [0]
    for _ in range(3):
        jax.block_until_ready(
            grd.diffusion_spectrum(loss_fn, params, batch, 3, method="lanczos").eigenvalues
        )
        counts.append(count[0])
    first, second, third = np.diff(counts)
    assert second == third < first, counts


@pytest.mark.slow
def test_lanczos_generic_operator_is_the_hessian(problem):
    """``lanczos_eigh`` on a linearised HVP: top Hessian eigenpairs against dense eigh."""
    loss_fn, params, batch, _ = problem
    flat, unravel = ravel_pytree(params)

    def mean_loss(w):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(unravel(w), batch))

    H = np.asarray(jax.hessian(mean_loss)(flat))
    ref = np.linalg.eigvalsh(H)[::-1]
    _, hvp = jax.linearize(jax.grad(mean_loss), flat)
    sp = grd.lanczos_eigh(hvp, jnp.ones_like(flat), H.shape[0], 3, which="magnitude")
    by_mag = ref[np.argsort(-np.abs(ref))][:3]
    np.testing.assert_allclose(sp.eigenvalues, by_mag, atol=TOL64)
    U = np.asarray(sp.eigenvectors)
    np.testing.assert_allclose(U @ H, np.asarray(sp.eigenvalues)[:, None] * U, atol=1e-9)
    hs = grd.hessian_spectrum(loss_fn, params, batch, 3, num_matvecs=H.shape[0])
    np.testing.assert_allclose(hs.eigenvalues, ref[:3], atol=TOL64)


@pytest.mark.parametrize("n", [12, 45])
def test_lanczos_examples_space_and_parameter_space_agree(n):
    """N < d runs the loop on the dual K = C Cᵀ/N (basis in R^N), N ≥ d and the chunked product
    on D itself (basis in R^d): both exhaust the Krylov space at m = min(N, d) and must give
    the Gram eigenpairs to float64 round-off (eigenvectors up to sign)."""
    loss_fn, params, batch = tiny_mlp_problem(n=n, hidden=5)  # d = 30
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    lam = np.linalg.eigvalsh(D)[::-1]
    m = min(n, D.shape[0])
    kw = dict(method="lanczos", num_matvecs=m, return_eigenvectors=True)
    for chunk in (None, 5):
        sp = grd.diffusion_spectrum(loss_fn, params, batch, 4, chunk_size=chunk, **kw)
        np.testing.assert_allclose(sp.eigenvalues, lam[:4], atol=TOL64)
        U = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(sp.eigenvectors))
        np.testing.assert_allclose(U @ D, lam[:4, None] * U, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, atol=1e-12)
