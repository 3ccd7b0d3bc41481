"""Tests for grd.analysis.directional: A_p, vMF concentration, baselines, stochasticity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import ive
from scipy.stats import vonmises_fisher

from grd.analysis import (
    gradient_norm_stochasticity,
    gradient_stochasticity,
    mean_resultant_length,
    minibatch_gradients,
    uniform_concentration_baseline,
    vmf_concentration,
    vmf_mean_resultant_length,
)

try:  # SciPy's own stable Bessel-ratio routine (private, used only as an oracle)
    from scipy.special._ufuncs import _iv_ratio
except ImportError:  # pragma: no cover
    _iv_ratio = None


def _vmf_samples(p, kappa, n, seed):
    mu = np.zeros(p)
    mu[0] = 1.0
    return vonmises_fisher(mu, kappa).rvs(n, random_state=np.random.default_rng(seed))


@pytest.mark.parametrize("p", [2, 3, 10, 50])
def test_ap_matches_bessel_ratio_small_order(p):
    kappa = np.logspace(-4, 3, 60)
    ref = ive(p / 2, kappa) / ive(p / 2 - 1, kappa)
    got = np.asarray(vmf_mean_resultant_length(kappa, p))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.skipif(_iv_ratio is None, reason="scipy.special._ufuncs._iv_ratio not available")
@pytest.mark.parametrize("p", [100, 10_000, 10_000_000])
def test_ap_matches_scipy_ratio_large_order(p):
    kappa = p * np.logspace(-6, 5, 45)
    got = np.asarray(vmf_mean_resultant_length(kappa, p))
    np.testing.assert_allclose(got, _iv_ratio(p / 2, kappa), rtol=1e-13)


def test_ap_recurrence_large_order():
    # I_{ν-1} − I_{ν+1} = (2ν/κ) I_ν  ⇒  A_p(κ) = 1 / (p/κ + A_{p+2}(κ)), any p.
    p = 2_000_000
    kappa = np.array([1.0, 1e3, 1e6, 2e6, 1e7, 1e9])
    lhs = np.asarray(vmf_mean_resultant_length(kappa, p))
    rhs = 1.0 / (p / kappa + np.asarray(vmf_mean_resultant_length(kappa, p + 2)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-13)


@settings(max_examples=30, deadline=None)
@given(
    p=st.integers(2, 10**7),
    log_k=st.floats(-3, 8),
    factor=st.floats(1.001, 10.0),
)
def test_ap_in_unit_interval_and_increasing(p, log_k, factor):
    k = 10.0**log_k
    a1, a2 = np.asarray(vmf_mean_resultant_length(np.array([k, k * factor]), p))
    assert 0.0 < a1 < a2 < 1.0


@settings(max_examples=25, deadline=None)
@given(p=st.integers(2, 10**7), rbar=st.floats(1e-4, 0.9999))
def test_mle_inverts_ap(p, rbar):
    from grd.analysis.directional import _vmf_kappa_mle

    kappa = _vmf_kappa_mle(jnp.asarray(rbar), float(p))
    back = float(vmf_mean_resultant_length(kappa, p))
    assert back == pytest.approx(rbar, rel=1e-11)
    # and inside the Amos bracket
    assert (p - 1) * rbar / (1 - rbar**2) * (1 - 1e-12) <= float(kappa)
    assert float(kappa) <= p * rbar / (1 - rbar**2) * (1 + 1e-12)


@pytest.mark.parametrize(
    "p, kappa, n",
    [
        (3, 10.0, 4000),
        (10, 50.0, 4000),
        (100, 100.0, 2000),
        (100, 1000.0, 2000),
        (500, 2500.0, 400),
    ],
)
def test_vmf_recovers_kappa(p, kappa, n):
    x = _vmf_samples(p, kappa, n, seed=p)
    k_mle = float(vmf_concentration(x, "mle"))
    k_ban = float(vmf_concentration(x, "banerjee"))
    # Relative sampling error of κ̂ is ≈ √(p/ (2n))/R̄ … for these settings < 4 %; allow 6 %.
    assert k_mle == pytest.approx(kappa, rel=0.06)
    if p >= 100:
        assert k_ban == pytest.approx(k_mle, rel=2.0 / p)


def test_scipy_fit_fails_where_we_do_not():
    # The documented SciPy failure: κ = 1e-8 returned for p = 100 (only a RuntimeWarning).
    x = _vmf_samples(100, 1000.0, 500, seed=0)
    with np.errstate(all="ignore"):
        _, k_scipy = vonmises_fisher.fit(x)
    assert k_scipy < 1e-6
    assert float(vmf_concentration(x)) == pytest.approx(1000.0, rel=0.06)


@pytest.mark.parametrize("p, n", [(1000, 100), (20_000, 50)])
def test_uniform_directions_give_baseline(p, n):
    x = np.random.default_rng(p).standard_normal((n, p))
    base = float(uniform_concentration_baseline(p, n))
    assert base == pytest.approx(p / np.sqrt(n), rel=2.0 / n)
    # R̄√n has relative spread ≈ 1/√(2p): 2.2 % at p = 1000; allow 4 sigma.
    assert float(vmf_concentration(x)) == pytest.approx(base, rel=4 / np.sqrt(2 * p))
    assert float(uniform_concentration_baseline(p, n, "mle")) == pytest.approx(base, rel=1 / p)


def test_normalises_rows_and_jit():
    x = _vmf_samples(20, 30.0, 300, seed=1)
    scales = np.random.default_rng(2).uniform(0.1, 10.0, size=(300, 1))
    a = float(vmf_concentration(x))
    b = float(vmf_concentration(x * scales))
    c = float(jax.jit(vmf_concentration, static_argnames="method")(x * scales))
    assert a == pytest.approx(b, rel=1e-10) and b == pytest.approx(c, rel=1e-10)
    assert float(mean_resultant_length(x)) == pytest.approx(np.linalg.norm(x.mean(0)), rel=1e-12)


def test_bad_directions():
    x = np.random.default_rng(0).standard_normal((10, 5))
    with pytest.raises(ValueError, match="directions.*row"):
        vmf_concentration(np.where(np.arange(10)[:, None] == 3, np.nan, x))
    with pytest.raises(ValueError, match="directions.*zero row"):
        vmf_concentration(np.where(np.arange(10)[:, None] == 4, 0.0, x))
    with pytest.raises(ValueError, match="directions.*at least 2"):
        vmf_concentration(x[:1])
    with pytest.raises(ValueError, match="directions.*2-D"):
        vmf_concentration(x[0])
    with pytest.raises(ValueError, match="method"):
        vmf_concentration(x, method="scipy")
    with pytest.raises(ValueError, match="`n`"):
        uniform_concentration_baseline(10, 1)


def test_value_checks_inside_jit():
    x = np.random.default_rng(0).standard_normal((10, 5))
    x[3] = np.nan
    with pytest.raises(Exception, match="directions"):
        jax.block_until_ready(jax.jit(vmf_concentration)(x))
    x[3] = 0.0
    with pytest.raises(Exception, match="directions"):
        jax.block_until_ready(jax.jit(vmf_concentration)(x))


def test_stochasticities_against_numpy():
    g = np.random.default_rng(3).standard_normal((40, 7)) + np.arange(7)
    norms = np.linalg.norm(g, axis=1)
    assert float(gradient_norm_stochasticity(g)) == pytest.approx(norms.std() / norms.mean())
    ref = np.sqrt(g.var(0).sum()) / np.linalg.norm(g.mean(0))
    assert float(gradient_stochasticity(g)) == pytest.approx(ref)
    with pytest.raises(ValueError, match="grads"):
        gradient_stochasticity(np.concatenate([g, -g]))  # zero mean gradient
    with pytest.raises(ValueError, match="grads.*row"):
        gradient_norm_stochasticity(np.where(np.arange(40)[:, None] == 0, np.inf, g))
    with pytest.raises(ValueError, match="grads"):
        gradient_norm_stochasticity(np.zeros((5, 3)))


def _linear_problem(big_n=64, d_in=3):
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((big_n, d_in)), "y": rng.standard_normal(big_n)}
    params = {"w": jnp.asarray(rng.standard_normal(d_in)), "b": jnp.asarray(0.3)}

    def loss_fn(p, ex):
        return 0.5 * (ex["x"] @ p["w"] + p["b"] - ex["y"]) ** 2

    return loss_fn, params, batch


def test_minibatch_gradients_shape_order_and_values():
    loss_fn, params, batch = _linear_problem()
    key = jax.random.PRNGKey(0)
    g = minibatch_gradients(loss_fn, params, batch, key, n=50, batch_size=8)
    assert g.shape == (50, 4)
    # Reproduce draw 7 by hand: same key split and index draw; ravel order is (b, w).
    k7 = jax.random.split(key, 50)[7]
    idx = np.asarray(jax.random.choice(k7, 64, (8,), replace=False))
    assert len(set(idx.tolist())) == 8
    r = batch["x"][idx] @ np.asarray(params["w"]) + 0.3 - batch["y"][idx]
    ref = np.concatenate([[r.mean()], (r[:, None] * batch["x"][idx]).mean(0)])
    np.testing.assert_allclose(np.asarray(g[7]), ref, rtol=1e-12)
    # Same function object and shapes: the compiled draw is reused, and draws differ.
    again = minibatch_gradients(loss_fn, params, batch, jax.random.PRNGKey(1), n=50, batch_size=8)
    assert not np.allclose(np.asarray(again), np.asarray(g))


def test_minibatch_gradients_covariance_is_D_over_b():
    loss_fn, params, batch = _linear_problem(big_n=32, d_in=2)
    g = np.asarray(
        minibatch_gradients(
            loss_fn, params, batch, jax.random.PRNGKey(1), n=4000, batch_size=4, replace=True
        )
    )
    per_ex = np.asarray(
        jax.vmap(lambda ex: jax.flatten_util.ravel_pytree(jax.grad(loss_fn)(params, ex))[0])(batch)
    )
    D = np.cov(per_ex.T, bias=True)
    np.testing.assert_allclose(np.cov(g.T, bias=True), D / 4, rtol=0.1, atol=0.02 * np.abs(D).max())


def test_minibatch_gradients_bad_input():
    loss_fn, params, batch = _linear_problem()
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_gradients(loss_fn, params, batch, key, n=4, batch_size=65)
    with pytest.raises(ValueError, match="`n`"):
        minibatch_gradients(loss_fn, params, batch, key, n=1, batch_size=4)
