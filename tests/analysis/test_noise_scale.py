"""Tests for grd.analysis.noise_scale: B_simple, B_noise (exact and Hutchinson), temperature."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from grd.analysis import noise_scale_curvature, noise_scale_simple, sgd_temperature


@functools.cache
def _problem(n=9, seed=0):
    """Softmax regression with a tanh layer; d = 3·4 + 4 + 4·3 = 28."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "w1": jax.random.normal(k[0], (3, 4), jnp.float64) / np.sqrt(3),
        "b1": 0.1 * jax.random.normal(k[1], (4,), jnp.float64),
        "w2": jax.random.normal(k[2], (4, 3), jnp.float64) / 2,
    }
    batch = {"x": jax.random.normal(k[3], (n, 3), jnp.float64), "y": jnp.arange(n) % 3}

    def loss_fn(p, ex):
        logits = jnp.tanh(ex["x"] @ p["w1"] + p["b1"]) @ p["w2"]
        return jax.nn.logsumexp(logits) - logits[ex["y"]]

    return loss_fn, params, batch


def _dense(loss_fn, params, batch):
    """Oracle: per-example gradient matrix G, dense D, dense H of the mean loss, ḡ (numpy)."""
    w, unravel = ravel_pytree(params)

    def losses(u):
        return jax.vmap(loss_fn, (None, 0))(unravel(u), batch)

    G = np.asarray(jax.jit(jax.jacrev(losses))(w))
    H = np.asarray(jax.jit(jax.hessian(lambda u: jnp.mean(losses(u))))(w))
    gbar = G.mean(axis=0)
    C = G - gbar
    return C.T @ C / G.shape[0], H, gbar


def test_simple_matches_dense_oracle():
    loss_fn, params, batch = _problem()
    D, _, gbar = _dense(loss_fn, params, batch)
    res = noise_scale_simple(loss_fn, params, batch)
    np.testing.assert_allclose(res.trace, np.trace(D), rtol=1e-12)
    np.testing.assert_allclose(res.grad_norm_sq, gbar @ gbar, rtol=1e-12)
    np.testing.assert_allclose(res.value, np.trace(D) / (gbar @ gbar), rtol=1e-12)
    chunked = noise_scale_simple(loss_fn, params, batch, chunk_size=4)
    np.testing.assert_allclose(chunked.value, res.value, rtol=1e-12)


def test_curvature_exact_matches_dense_oracle():
    loss_fn, params, batch = _problem()
    D, H, gbar = _dense(loss_fn, params, batch)
    res = noise_scale_curvature(loss_fn, params, batch, method="exact")
    np.testing.assert_allclose(res.trace, np.trace(H @ D), rtol=1e-10)
    np.testing.assert_allclose(res.curvature, gbar @ H @ gbar, rtol=1e-10)
    np.testing.assert_allclose(res.value, np.trace(H @ D) / (gbar @ H @ gbar), rtol=1e-10)
    assert res.stderr == 0 and res.trace_stderr == 0
    # H is not ∝ I here, so the curvature-aware and the simple scale differ
    simple = noise_scale_simple(loss_fn, params, batch).value
    assert abs(float(res.value) / float(simple) - 1) > 0.05


def test_identity_hessian_gives_simple_scale():
    """f_a(w) = ½|w − x_a|²: H = I, D = Cov(x), so B_noise = B_simple = tr Cov(x)/|w − x̄|²."""
    x = jax.random.normal(jax.random.PRNGKey(3), (7, 5), jnp.float64)
    w = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64)

    def loss_fn(p, ex):
        return 0.5 * jnp.sum((p - ex) ** 2)

    xc = np.asarray(x) - np.asarray(x).mean(0)
    expected = np.sum(xc**2) / 7 / np.sum((np.asarray(w) - np.asarray(x).mean(0)) ** 2)
    exact = noise_scale_curvature(loss_fn, w, x, method="exact")
    np.testing.assert_allclose(exact.value, expected, rtol=1e-12)
    np.testing.assert_allclose(noise_scale_simple(loss_fn, w, x).value, expected, rtol=1e-12)


@pytest.mark.parametrize("sampler", ["rademacher", "normal"])
def test_hutchinson_within_four_standard_errors(sampler):
    loss_fn, params, batch = _problem()
    D, H, gbar = _dense(loss_fn, params, batch)
    exact = np.trace(H @ D)
    key = jax.random.PRNGKey(7)
    res = noise_scale_curvature(loss_fn, params, batch, key=key, num_samples=64, sampler=sampler)
    assert 0 < float(res.trace_stderr) < 0.5 * abs(exact)
    assert abs(float(res.trace) - exact) < 4 * float(res.trace_stderr)
    assert abs(float(res.value) - exact / (gbar @ H @ gbar)) < 4 * float(res.stderr)
    np.testing.assert_allclose(res.stderr, res.trace_stderr / abs(gbar @ H @ gbar), rtol=1e-12)
    if sampler == "normal":
        return
    # the standard error is that of the mean of the probes: quadruple the probes, halve it
    big = noise_scale_curvature(loss_fn, params, batch, key=key, num_samples=256, sampler=sampler)
    assert 0.3 < float(big.trace_stderr) / float(res.trace_stderr) < 0.7
    assert abs(float(big.trace) - exact) < 4 * float(big.trace_stderr)


def test_hutchinson_under_jit_and_chunked():
    loss_fn, params, batch = _problem()
    key = jax.random.PRNGKey(1)

    def f(p):
        return noise_scale_curvature(loss_fn, p, batch, key=key, num_samples=8).value

    chunked = noise_scale_curvature(loss_fn, params, batch, key=key, num_samples=8, chunk_size=4)
    np.testing.assert_allclose(jax.jit(f)(params), chunked.value, rtol=1e-10)


def test_sgd_temperature():
    assert float(sgd_temperature(0.1, 32)) == pytest.approx(0.1 / 64)
    np.testing.assert_allclose(sgd_temperature(jnp.array([0.1, 0.2]), 4), [0.0125, 0.025])
    assert float(jax.jit(sgd_temperature)(0.5, 5)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="learning_rate"):
        sgd_temperature(0.0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        sgd_temperature(0.1, 0)


def test_bad_inputs():
    loss_fn, params, batch = _problem()
    with pytest.raises(ValueError, match="key"):
        noise_scale_curvature(loss_fn, params, batch)
    with pytest.raises(ValueError, match="num_samples"):
        noise_scale_curvature(loss_fn, params, batch, key=jax.random.PRNGKey(0), num_samples=1)
    with pytest.raises(ValueError, match="method"):
        noise_scale_curvature(loss_fn, params, batch, method="dense")
    with pytest.raises(ValueError, match="sampler"):
        noise_scale_curvature(loss_fn, params, batch, key=jax.random.PRNGKey(0), sampler="x")
    one = jax.tree_util.tree_map(lambda a: a[:1], batch)
    with pytest.raises(ValueError, match="N ≥ 2"):
        noise_scale_simple(loss_fn, params, one)
