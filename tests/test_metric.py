"""Diffusion metric g = I + εD and its four inverses (theory §3), float64 oracles."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, random_like, tiny_mlp_problem

import grd


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, batch = tiny_mlp_problem()
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    return loss_fn, params, batch, D


def test_apply_matches_dense(problem):
    loss_fn, params, batch, D = problem
    v = random_like(params)
    metric = grd.DiffusionMetric(loss_fn, batch, 0.7)
    np.testing.assert_allclose(
        flat(metric.apply(params, v)), (np.eye(len(D)) + 0.7 * D) @ flat(v), atol=1e-12
    )
    np.testing.assert_allclose(
        np.asarray(metric.dense(params)), np.eye(len(D)) + 0.7 * D, atol=1e-12
    )


@pytest.mark.parametrize("method", ["cg", "woodbury"])
@pytest.mark.parametrize("eps", [0.0, 0.3, 30.0])
def test_exact_inverses(problem, method, eps):
    """CG and Woodbury are exact for every ε ≥ 0 (g is positive definite), even ε·λ_max ≫ 1."""
    loss_fn, params, batch, D = problem
    v = random_like(params)
    ref = np.linalg.inv(np.eye(len(D)) + eps * D) @ flat(v)
    out, info = grd.metric_inverse(
        loss_fn, params, batch, v, eps, method=method, rtol=1e-12, atol=1e-12, return_info=True
    )
    np.testing.assert_allclose(flat(out), ref, atol=1e-9)
    assert float(info.residual_norm) < 1e-9


def test_woodbury_from_per_example_grads(problem):
    loss_fn, params, batch, D = problem
    v = random_like(params)
    G = grd.per_example_grads(loss_fn, params, batch)
    out = grd.metric_inverse(loss_fn, params, batch, v, 0.5, method="woodbury", per_example_grads=G)
    np.testing.assert_allclose(
        flat(out), np.linalg.solve(np.eye(len(D)) + 0.5 * D, flat(v)), atol=1e-10
    )


def test_weak_field_and_neumann_error_shrinks(problem):
    """Weak field: error O(ε²‖D‖²) — halving ε divides the error by ≈ 4; Neumann with K
    terms has error O(ε^{K+1})."""
    loss_fn, params, batch, D = problem
    v = random_like(params)
    lam = np.linalg.eigvalsh(D).max()
    errs, errs_n = [], []
    for c in [0.2, 0.1, 0.05, 0.025]:
        eps = c / lam
        ref = np.linalg.solve(np.eye(len(D)) + eps * D, flat(v))
        wf = flat(grd.metric_inverse(loss_fn, params, batch, v, eps, method="weak_field"))
        nm = flat(grd.metric_inverse(loss_fn, params, batch, v, eps, method="neumann", num_terms=3))
        errs.append(np.linalg.norm(wf - ref))
        errs_n.append(np.linalg.norm(nm - ref))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.5) & (ratios < 4.5)), ratios  # second order
    ratios_n = np.array(errs_n[:-1]) / np.array(errs_n[1:])
    assert np.all((ratios_n > 14) & (ratios_n < 18)), ratios_n  # fourth order (K = 3 terms)


def test_weak_field_refuses_strong_field(problem):
    loss_fn, params, batch, D = problem
    v = random_like(params)
    eps = 2.0 / np.linalg.eigvalsh(D).max()
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(
            grd.metric_inverse(loss_fn, params, batch, v, eps, method="weak_field")
        )
    metric = grd.DiffusionMetric.relative(loss_fn, params, batch, c=2.0)
    np.testing.assert_allclose(metric.field_strength, 2.0, rtol=1e-6)
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(metric.inverse(params, v, method="neumann"))
    # inside jit too
    f = eqx.filter_jit(lambda p, u: metric.inverse(p, u, method="weak_field"))
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(f(params, v))


def test_relative_eps(problem):
    loss_fn, params, batch, D = problem
    metric = grd.DiffusionMetric.relative(loss_fn, params, batch, c=0.5)
    np.testing.assert_allclose(metric.eps * np.linalg.eigvalsh(D).max(), 0.5, rtol=1e-6)


def test_metric_is_pytree_and_jits(problem):
    loss_fn, params, batch, D = problem
    v = random_like(params)
    metric = grd.DiffusionMetric(loss_fn, batch, jnp.asarray(0.4))
    f = eqx.filter_jit(
        lambda m, p, u: m.inverse(p, m.apply(p, u), method="cg", rtol=1e-12, atol=1e-12)
    )
    np.testing.assert_allclose(flat(f(metric, params, v)), flat(v), atol=1e-9)

    # grad through the CG inverse w.r.t. ε
    def h(eps):
        m = grd.DiffusionMetric(loss_fn, batch, eps)
        return jnp.sum(flat_j(m.inverse(params, v, method="cg", rtol=1e-12, atol=1e-12)))

    dh = jax.grad(h)(0.4)
    gi = np.linalg.inv(np.eye(len(D)) + 0.4 * D)
    np.testing.assert_allclose(dh, np.sum(-gi @ D @ gi @ flat(v)), rtol=1e-6)


def flat_j(t):
    return jax.flatten_util.ravel_pytree(t)[0]


def test_bad_eps(problem):
    loss_fn, params, batch, D = problem
    v = random_like(params)
    with pytest.raises(ValueError, match="`eps`"):
        grd.metric_inverse(loss_fn, params, batch, v, -0.1)
    with pytest.raises(ValueError, match="`eps`"):
        grd.DiffusionMetric(loss_fn, batch, float("nan"))
    with pytest.raises(Exception, match="`eps`"):
        jax.block_until_ready(
            jax.jit(lambda e: grd.metric_apply(loss_fn, params, batch, v, e))(-1.0)
        )
    with pytest.raises(ValueError, match="`method`"):
        grd.metric_inverse(loss_fn, params, batch, v, 0.1, method="magic")
