"""Christoffel symbols of the diffusion metric (theory §4) against the explicit metric."""

import jax
import numpy as np
import pytest
from helpers import explicit_metric_christoffel, flat, random_like, tiny_mlp_problem

import grd

EPS = 0.37


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, batch = tiny_mlp_problem(n=8, d_in=2, hidden=3)
    ref_gamma, ref_g, ref_dg = explicit_metric_christoffel(loss_fn, params, batch, EPS)
    return loss_fn, params, batch, ref_gamma, ref_g, ref_dg


def test_dense_first_kind_matches_explicit_metric(problem):
    """Γ_{k,ij} from per-example Hessians = ½(∂_i g_jk + ∂_j g_ik − ∂_k g_ij) of I + εD(w)."""
    loss_fn, params, batch, ref_gamma, _, _ = problem
    gamma = np.asarray(grd.christoffel_symbols(loss_fn, params, batch, EPS))
    np.testing.assert_allclose(gamma, ref_gamma, atol=1e-12)
    np.testing.assert_allclose(gamma, np.swapaxes(gamma, 1, 2), atol=1e-14)  # symmetric in i, j


def test_dense_second_kind(problem):
    loss_fn, params, batch, ref_gamma, ref_g, _ = problem
    gamma2 = np.asarray(grd.christoffel_symbols(loss_fn, params, batch, EPS, kind="second"))
    np.testing.assert_allclose(
        gamma2, np.einsum("kl,lij->kij", np.linalg.inv(ref_g), ref_gamma), atol=1e-12
    )


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_contractions_match_dense(problem, chunk_size):
    loss_fn, params, batch, ref_gamma, ref_g, ref_dg = problem
    v = random_like(params, seed=5)
    vf = flat(v)
    first = flat(grd.christoffel_contract(loss_fn, params, batch, v, EPS, chunk_size=chunk_size))
    np.testing.assert_allclose(first, np.einsum("kij,i,j->k", ref_gamma, vf, vf), atol=1e-12)
    second = flat(
        grd.christoffel_contract(
            loss_fn,
            params,
            batch,
            v,
            EPS,
            kind="second",
            rtol=1e-13,
            atol=1e-13,
            chunk_size=chunk_size,
        )
    )
    np.testing.assert_allclose(
        second, np.linalg.solve(ref_g, np.einsum("kij,i,j->k", ref_gamma, vf, vf)), atol=1e-10
    )
    half = flat(
        grd.metric_derivative_contract(loss_fn, params, batch, v, EPS, chunk_size=chunk_size)
    )
    # ½ ∂_k g_ij vⁱ vʲ with ref_dg[i, j, k] = ∂_k g_ij
    np.testing.assert_allclose(half, 0.5 * np.einsum("ijk,i,j->k", ref_dg, vf, vf), atol=1e-12)


def test_christoffel_finite_differences(problem):
    """Γ_first(v,v) = vᵀ∂g v-terms: check ∂_t [g(w + t u) v]·v against central differences."""
    loss_fn, params, batch, *_ = problem
    v, u = random_like(params, seed=2), random_like(params, seed=3)
    h = 1e-5
    wp = jax.tree_util.tree_map(lambda p, x: p + h * x, params, u)
    wm = jax.tree_util.tree_map(lambda p, x: p - h * x, params, u)
    quad = lambda p: flat(v) @ flat(grd.metric_apply(loss_fn, p, batch, v, EPS))
    fd = (quad(wp) - quad(wm)) / (2 * h)  # = ∂_u (vᵀ g v) = 2 u·(½∂g(v,v))
    half = flat(grd.metric_derivative_contract(loss_fn, params, batch, v, EPS))
    np.testing.assert_allclose(fd, 2 * flat(u) @ half, rtol=1e-7)


def test_eps_zero_and_linearity(problem):
    loss_fn, params, batch, *_ = problem
    v = random_like(params, seed=4)
    assert np.all(flat(grd.christoffel_contract(loss_fn, params, batch, v, 0.0)) == 0)
    g1 = flat(grd.christoffel_contract(loss_fn, params, batch, v, EPS))
    g2 = flat(grd.christoffel_contract(loss_fn, params, batch, v, 2 * EPS))
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-12)
    v2 = jax.tree_util.tree_map(lambda x: 3 * x, v)
    np.testing.assert_allclose(
        flat(grd.christoffel_contract(loss_fn, params, batch, v2, EPS)), 9 * g1, rtol=1e-12
    )


def test_jit_vmap_grad(problem):
    loss_fn, params, batch, *_ = problem
    v = random_like(params, seed=6)
    ref = flat(grd.christoffel_contract(loss_fn, params, batch, v, EPS))
    jitted = jax.jit(lambda p, u, e: grd.christoffel_contract(loss_fn, p, batch, u, e))
    np.testing.assert_allclose(flat(jitted(params, v, EPS)), ref, atol=1e-13)
    vs = jax.tree_util.tree_map(lambda x: np.stack([x, -x]), v)
    out = jax.vmap(lambda u: grd.metric_derivative_contract(loss_fn, params, batch, u, EPS))(vs)
    np.testing.assert_allclose(
        flat(jax.tree_util.tree_map(lambda x: x[1], out)),
        flat(grd.metric_derivative_contract(loss_fn, params, batch, v, EPS)),
        atol=1e-13,
    )
    # d/dε of Γ(v, v) = Γ(v, v)/ε (linear in ε)
    dg = jax.jacfwd(lambda e: flat_j(grd.christoffel_contract(loss_fn, params, batch, v, e)))(EPS)
    np.testing.assert_allclose(dg, ref / EPS, rtol=1e-10)
    gsum = jax.grad(lambda p: flat_j(grd.christoffel_contract(loss_fn, p, batch, v, EPS)).sum())(
        params
    )
    assert np.all(np.isfinite(flat(gsum)))


def flat_j(t):
    return jax.flatten_util.ravel_pytree(t)[0]
