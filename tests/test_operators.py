"""D and g as lineax operators; the scipy bridge; lineax's CG breakdown in float32.

Oracles: the dense float64 D = CᵀC/N of tests/helpers (per-example jacrev), and
grd.diffusion_spectrum(method="gram") (exact). Tolerances: 1e-12 for round-off-level
agreement of float64 products; eigsh (ARPACK) converges to its tol=1e-12 relative.
"""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.sparse.linalg as sla
from helpers import flat, random_like, tiny_mlp_problem

import grd


@pytest.fixture(scope="module")
def problem():
    return tiny_mlp_problem(n=12)


def test_operators_match_dense(problem):
    loss_fn, params, batch = problem
    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    op = grd.diffusion_operator(loss_fn, params, batch)
    g = grd.metric_operator(loss_fn, params, batch, 0.5)
    assert lx.is_symmetric(op) and lx.is_positive_semidefinite(op)
    assert lx.is_symmetric(g) and lx.is_positive_semidefinite(g)
    v = random_like(params)
    np.testing.assert_allclose(flat(op.mv(v)), D @ flat(v), atol=1e-12)
    np.testing.assert_allclose(np.asarray(g.as_matrix()), np.eye(D.shape[0]) + 0.5 * D, atol=1e-12)
    # Solves: lineax CG (float64), lineax Cholesky on the materialised matrix, grd's CG.
    ref = np.linalg.solve(np.eye(D.shape[0]) + 0.5 * D, flat(v))
    x = lx.linear_solve(g, v, lx.CG(rtol=1e-12, atol=1e-12)).value
    np.testing.assert_allclose(flat(x), ref, atol=1e-10)
    x2, _ = grd.conjugate_gradients(g, v, rtol=1e-13, atol=0.0)
    np.testing.assert_allclose(flat(x2), ref, atol=1e-10)


def test_scipy_eigsh_agrees_with_spectrum(problem):
    loss_fn, params, batch = problem
    op = grd.to_scipy(grd.diffusion_operator(loss_fn, params, batch))
    d = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert op.shape == (d, d) and op.dtype == np.float64
    lam = sla.eigsh(op, k=4, which="LA", tol=1e-12, return_eigenvectors=False)[::-1]
    ref = grd.diffusion_spectrum(loss_fn, params, batch, 4).eigenvalues
    np.testing.assert_allclose(lam, ref, rtol=1e-9)
    x, info = sla.cg(
        grd.to_scipy(grd.metric_operator(loss_fn, params, batch, 0.5)), np.ones(d), rtol=1e-12
    )
    assert info == 0
    with pytest.raises(TypeError, match="lineax operator"):
        grd.to_scipy(lambda v: v)


def test_lineax_cg_breaks_down_in_float32_where_grd_cg_does_not():
    """The documented failure (module note of grd._operators): lineax's dimension-scaled
    breakdown test gives NaN for g = I + εD at d = 2·10⁵ in float32; grd's CG converges.
    A linear least-squares model (D·v costs 2 N d flops) keeps this fast."""
    d, n = 200_000, 4
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    batch = {
        "x": jax.random.normal(kx, (n, d), jnp.float32) / np.sqrt(d),
        "y": jax.random.normal(ky, (n,), jnp.float32),
    }
    params = {"w": jnp.zeros((d,), jnp.float32)}
    loss_fn = lambda p, ex: 0.5 * (ex["x"] @ p["w"] - ex["y"]) ** 2
    g = grd.metric_operator(loss_fn, params, batch, 1.0)
    b = {"w": jnp.ones((d,), jnp.float32)}
    sol = lx.linear_solve(g, b, lx.CG(rtol=1e-5, atol=1e-5), throw=False)
    assert bool(jnp.any(jnp.isnan(sol.value["w"])))
    x, steps = grd.conjugate_gradients(g, b, rtol=1e-5, atol=0.0)
    resid = b["w"] - g.mv(x)["w"]
    assert float(jnp.linalg.norm(resid)) <= 1e-5 * float(jnp.linalg.norm(b["w"])) * 1.01
