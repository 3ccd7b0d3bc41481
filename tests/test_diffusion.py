"""Diffusion matrix D(w): oracles of theory §2 in float64, chunking, transforms, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, pair_form_diffusion, random_like, tiny_mlp_problem
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

import grd

# float64 round-off on these O(1) problems is ~1e-15; 1e-10 leaves room for d ~ 50 sums.
TOL64 = 1e-10


@pytest.fixture(scope="module")
def problem():
    return tiny_mlp_problem()


def test_dense_matches_pair_form(problem):
    loss_fn, params, batch = problem
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    np.testing.assert_allclose(D, pair_form_diffusion(loss_fn, params, batch), atol=TOL64)
    assert np.all(np.linalg.eigvalsh(D) > -TOL64)  # positive semi-definite


def test_matvec_matches_dense(problem):
    loss_fn, params, batch = problem
    v = random_like(params)
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    np.testing.assert_allclose(
        flat(grd.diffusion_matvec(loss_fn, params, batch, v)), D @ flat(v), atol=TOL64
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 12, 50])
def test_chunked_equals_unchunked(problem, chunk_size):
    loss_fn, params, batch = problem
    v = random_like(params)
    ref = flat(grd.diffusion_matvec(loss_fn, params, batch, v))
    out = flat(grd.diffusion_matvec(loss_fn, params, batch, v, chunk_size=chunk_size))
    np.testing.assert_allclose(out, ref, atol=TOL64)
    t_ref = grd.diffusion_trace(loss_fn, params, batch)
    t = grd.diffusion_trace(loss_fn, params, batch, chunk_size=chunk_size)
    np.testing.assert_allclose(t, t_ref, rtol=1e-12)
    np.testing.assert_allclose(
        grd.per_example_losses(loss_fn, params, batch, chunk_size=chunk_size),
        grd.per_example_losses(loss_fn, params, batch),
        rtol=1e-12,
    )


def test_per_example_grads(problem):
    loss_fn, params, batch = problem
    G = grd.per_example_grads(loss_fn, params, batch)
    ex = jax.tree_util.tree_map(lambda x: x[3], batch)
    np.testing.assert_allclose(
        flat(jax.tree_util.tree_map(lambda g: g[3], G)),
        flat(jax.grad(loss_fn)(params, ex)),
        atol=TOL64,
    )


def test_spectrum_gram_and_lanczos_match_eigh(problem):
    loss_fn, params, batch = problem
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    ref = np.linalg.eigh(D)[0][::-1]
    n = batch["x"].shape[0]
    sp = grd.diffusion_spectrum(loss_fn, params, batch, return_eigenvectors=True)
    d = D.shape[0]
    np.testing.assert_allclose(sp.eigenvalues, ref[: min(n - 1, d)], atol=TOL64)
    full = grd.diffusion_spectrum(loss_fn, params, batch, d).eigenvalues
    np.testing.assert_allclose(full, ref, atol=TOL64)  # zeros past N − 1
    # eigenvectors: D u = λ u for the non-zero part
    U = jax.vmap(lambda t: ravel_pytree(t)[0])(sp.eigenvectors)
    for lam, u in zip(sp.eigenvalues[:5], U[:5], strict=True):
        np.testing.assert_allclose(D @ u, lam * u, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-9)
    top = grd.diffusion_spectrum(loss_fn, params, batch, 4, method="lanczos")
    np.testing.assert_allclose(top.eigenvalues, ref[:4], rtol=1e-8)


def test_rank_at_most_n_minus_one():
    loss_fn, params, batch = tiny_mlp_problem(n=5, hidden=6)
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    assert D.shape[0] > 5
    lam = grd.diffusion_spectrum(loss_fn, params, batch).eigenvalues
    d = D.shape[0]
    assert int(grd.diffusion_rank(lam, d)) <= 4
    assert np.linalg.matrix_rank(D, tol=1e-10) == int(
        grd.diffusion_rank(lam, d, threshold="absolute", atol=1e-10)
    )


def test_trace_exact_and_hutchinson(problem):
    loss_fn, params, batch = problem
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    np.testing.assert_allclose(grd.diffusion_trace(loss_fn, params, batch), np.trace(D), rtol=1e-12)
    est = grd.diffusion_trace(
        loss_fn, params, batch, method="hutchinson", num_samples=400, key=jax.random.PRNGKey(3)
    )
    # Rademacher Hutchinson: Var = 2(‖D‖_F² − Σ D_ii²)/m; allow 4 standard errors.
    se = np.sqrt(2 * (np.sum(D**2) - np.sum(np.diag(D) ** 2)) / 400)
    assert abs(est - np.trace(D)) < 4 * se


def test_jit_vmap_grad(problem):
    loss_fn, params, batch = problem
    v = random_like(params)
    f = jax.jit(grd.diffusion_matvec, static_argnums=0)
    np.testing.assert_allclose(
        flat(f(loss_fn, params, batch, v)),
        flat(grd.diffusion_matvec(loss_fn, params, batch, v)),
        atol=TOL64,
    )
    vs = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), v)
    out = jax.vmap(lambda u: grd.diffusion_matvec(loss_fn, params, batch, u))(vs)
    np.testing.assert_allclose(
        flat(jax.tree_util.tree_map(lambda x: x[1], out)),
        2 * flat(grd.diffusion_matvec(loss_fn, params, batch, v)),
        atol=TOL64,
    )
    # grad of the quadratic form vᵀ D v w.r.t. params against the dense derivative of D
    quad = lambda p: jnp.vdot(flat_j(v), flat_j(grd.diffusion_matvec(loss_fn, p, batch, v)))
    g = flat(jax.grad(quad)(params))
    w0, unravel = ravel_pytree(params)
    dense = lambda w: flat_j(v) @ grd.diffusion_matrix(loss_fn, unravel(w), batch) @ flat_j(v)
    np.testing.assert_allclose(g, jax.grad(dense)(w0), atol=1e-9)
    tr = jax.jit(lambda p: grd.diffusion_trace(loss_fn, p, batch))(params)
    np.testing.assert_allclose(tr, grd.diffusion_trace(loss_fn, params, batch), rtol=1e-12)


def flat_j(tree):
    return ravel_pytree(tree)[0]


@settings(max_examples=8)
@given(
    n=st.integers(2, 9),
    widths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    dtype=st.sampled_from([jnp.float32, jnp.float64]),
    seed=st.integers(0, 2**16),
)
def test_property_matvec_dense_pair(n, widths, dtype, seed):
    """Random N, pytree shapes (a list of leaves) and dtypes: D·v = dense D v = pair form."""
    k = jax.random.split(jax.random.PRNGKey(seed), 3 + len(widths))
    params = [jax.random.normal(k[i], (w,), dtype) for i, w in enumerate(widths)]
    batch = jax.random.normal(k[-1], (n, max(widths)), dtype)

    def loss_fn(p, x):
        return sum(jnp.sum(jnp.sin(pi * x[: pi.shape[0]])) ** 2 for pi in p)

    v = [jax.random.normal(k[-2], (w,), dtype) for w in widths]
    Dv = flat(grd.diffusion_matvec(loss_fn, params, batch, v, chunk_size=3))
    assert Dv.dtype == np.dtype(dtype)
    p64 = [p.astype(jnp.float64) for p in params]
    b64 = batch.astype(jnp.float64)
    D = pair_form_diffusion(loss_fn, p64, b64)
    tol = 1e-10 if dtype == jnp.float64 else 2e-4 * max(1.0, np.abs(D).max())
    np.testing.assert_allclose(
        Dv, D @ flat(v).astype(np.float64), atol=tol * max(1, np.abs(flat(v)).max())
    )


def test_float32_digits_matches_float64():
    """Matrix-free float32 on a 2-layer MLP on real digits vs float64: rel. error < 1e-4."""
    from grd.data import load_digits
    from grd.models.mlp import init_mlp, mlp_classifier

    batch64 = load_digits(256, dtype=np.float64)
    model, loss_fn = mlp_classifier((32,))
    p64 = init_mlp(model, jax.random.PRNGKey(0), 64, jnp.float64)
    p32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), p64)
    batch32 = {"x": batch64["x"].astype(np.float32), "y": batch64["y"]}
    v64 = random_like(p64)
    v32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), v64)
    ref = flat(grd.diffusion_matvec(loss_fn, p64, batch64, v64))
    for fn, tol in [
        (grd.diffusion_matvec, 1e-4),
        (lambda *a: grd.christoffel_contract(*a, 0.3), 1e-4),
        (lambda *a: grd.metric_derivative_contract(*a, 0.3), 1e-4),
    ]:
        r64 = flat(fn(loss_fn, p64, batch64, v64)) if fn is not grd.diffusion_matvec else ref
        r32 = flat(fn(loss_fn, p32, batch32, v32))
        assert r32.dtype == np.float32
        # float32 eps 1.2e-7 times O(d)=2410-term sums with cancellation: 1e-4 relative in norm.
        assert np.linalg.norm(r32 - r64) <= tol * np.linalg.norm(r64)


def test_centred_weights_avoid_cancellation():
    """Gradients with a large common mean: the centred two-pass product keeps float32 accuracy
    where the one-pass E[g gᵀv] − ḡ(ḡ·v) loses every digit."""
    rng = np.random.default_rng(0)
    d, n = 20, 400
    mean = 1e3 * np.ones(d)
    X = (mean + rng.normal(size=(n, d))).astype(np.float64)
    loss_fn = lambda w, x: jnp.dot(w, x)  # g_a = x_a, D = Cov(x)
    w = np.zeros(d)
    v = rng.normal(size=d)
    ref = np.cov(X.T, bias=True) @ v
    out32 = grd.diffusion_matvec(
        loss_fn,
        jnp.asarray(w, jnp.float32),
        jnp.asarray(X, jnp.float32),
        jnp.asarray(v, jnp.float32),
    )
    err = np.linalg.norm(np.asarray(out32) - ref) / np.linalg.norm(ref)
    X32, v32 = X.astype(np.float32), v.astype(np.float32)
    naive = (X32.T @ (X32 @ v32)) / n - X32.mean(0) * (X32.mean(0) @ v32)
    err_naive = np.linalg.norm(naive - ref) / np.linalg.norm(ref)
    # float32 eps (1.2e-7) × |mean gradient| (4.5e3) / |Dv| (≈5): ~1e-4; allow 2e-3.
    assert err < 2e-3, err
    assert err_naive > 100 * err, (err_naive, err)
