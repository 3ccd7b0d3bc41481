"""Tests for grd.models.rbm against float64 brute-force enumeration (theory §7)."""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import grd
from grd.models import rbm

jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------------------
# Helpers and independent numpy oracles
# --------------------------------------------------------------------------------------


def random_params(key, n_v, n_h, scale=1.0, dtype=jnp.float64):
    """RBM parameters with O(1) weights and biases, so the distribution is far from uniform."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "W": (scale * jax.random.normal(k1, (n_v, n_h))).astype(dtype),
        "a": (0.5 * jax.random.normal(k2, (n_v,))).astype(dtype),
        "b": (0.5 * jax.random.normal(k3, (n_h,))).astype(dtype),
    }


def random_binary(key, shape, p=0.5):
    return (jax.random.uniform(key, shape) < p).astype(jnp.float64)


def all_states(n):
    """All binary vectors of length n, shape (2^n, n), in itertools.product order."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def numpy_params(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def brute_force_joint(params):
    """Return (V, H, P) with P[i, j] = P(v = V[i], h = H[j]) from the energy definition."""
    p = numpy_params(params)
    n_v, n_h = p["W"].shape
    V, H = all_states(n_v), all_states(n_h)
    neg_e = (V @ p["a"])[:, None] + (H @ p["b"])[None, :] + V @ p["W"] @ H.T
    log_z = np.logaddexp.reduce(neg_e.ravel())
    return V, H, np.exp(neg_e - log_z), log_z


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cd_estimator(params, v, v_model):
    """Per-example CD gradients of the surrogate loss, written out by hand (Hinton 2002).

    grad_W = −(v p(h|v)ᵀ − ṽ p(h|ṽ)ᵀ), grad_a = −(v − ṽ), grad_b = −(p(h|v) − p(h|ṽ)).
    """
    p = numpy_params(params)
    v, vm = np.asarray(v), np.asarray(v_model)
    ph, phm = sigmoid(v @ p["W"] + p["b"]), sigmoid(vm @ p["W"] + p["b"])
    return {
        "W": -(v[:, :, None] * ph[:, None, :] - vm[:, :, None] * phm[:, None, :]),
        "a": -(v - vm),
        "b": -(ph - phm),
    }


def flat(tree):
    return np.concatenate([np.ravel(tree[k]) for k in ("W", "a", "b")])


def flat_rows(tree):
    """(N, d) matrix from a per-example pytree with leaves of leading axis N."""
    return np.concatenate([np.reshape(tree[k], (tree[k].shape[0], -1)) for k in ("W", "a", "b")], 1)


@pytest.fixture
def tiny():
    """6 visible, 4 hidden units: 2^10 joint states, the brute-force oracle is exact."""
    return random_params(jax.random.key(3), 6, 4)


# --------------------------------------------------------------------------------------
# Energies and the exact partition function
# --------------------------------------------------------------------------------------


def test_energy_and_free_energy_match_definitions(tiny):
    p = numpy_params(tiny)
    V, H = all_states(6), all_states(4)
    e = rbm.energy(tiny, V[:, None, :], H[None, :, :])
    e_ref = -(V @ p["a"])[:, None] - (H @ p["b"])[None, :] - V @ p["W"] @ H.T
    np.testing.assert_allclose(e, e_ref, rtol=0, atol=1e-12)
    # F(v) = −log Σ_h exp(−E(v, h))
    f_ref = -np.logaddexp.reduce(-e_ref, axis=1)
    np.testing.assert_allclose(rbm.free_energy(tiny, V), f_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 16, rbm.CHUNK_SIZE])
def test_log_partition_matches_brute_force(tiny, chunk_size):
    *_, log_z_ref = brute_force_joint(tiny)
    log_z = rbm.log_partition(tiny, chunk_size=chunk_size)
    assert log_z.dtype == jnp.float64
    assert abs(float(log_z) - log_z_ref) < 1e-10


def test_log_likelihood_and_marginals_match_brute_force(tiny):
    V, H, P, _ = brute_force_joint(tiny)
    p_v = P.sum(1)
    data = random_binary(jax.random.key(4), (9, 6))
    idx = (np.asarray(data) @ 2 ** np.arange(5, -1, -1)).astype(int)
    ll_ref = np.mean(np.log(p_v[idx]))
    assert abs(float(rbm.log_likelihood(tiny, data)) - ll_ref) < 1e-10
    np.testing.assert_allclose(rbm.model_marginals(tiny, chunk_size=4), p_v @ V, atol=1e-12)


def test_exact_kl_gradient_matches_enumeration(tiny):
    """∇(−mean log P) = −(⟨v p(h|v)ᵀ⟩_data − E_P[v hᵀ]) etc., by enumeration of all (v, h)."""
    V, H, P, _ = brute_force_joint(tiny)
    p = numpy_params(tiny)
    data = np.asarray(random_binary(jax.random.key(5), (15, 6)))
    ph = sigmoid(data @ p["W"] + p["b"])
    ref = {
        "W": -(data.T @ ph / len(data) - V.T @ P @ H),
        "a": -(data.mean(0) - P.sum(1) @ V),
        "b": -(ph.mean(0) - P.sum(0) @ H),
    }
    got = rbm.exact_kl_gradient(tiny, data, chunk_size=2)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)


def test_log_partition_18_hidden_is_chunked_and_bounded():
    """n_h = 18 (2.6e5 hidden states): correct, fast, and with memory independent of 2^n_h."""
    # Correctness: Z is symmetric in v and h, so with 10 visible units the sum over the
    # 2^10 visible states, logsumexp_v(−F(v)), is an independent exact oracle.
    params = random_params(jax.random.key(6), 10, 18, scale=0.3)
    q, V = numpy_params(params), all_states(10)
    log_z_vis = np.logaddexp.reduce(V @ q["a"] + np.logaddexp(0, V @ q["W"] + q["b"]).sum(1))
    start = time.perf_counter()
    log_z = jax.block_until_ready(jax.jit(rbm.log_partition)(params))
    elapsed = time.perf_counter() - start
    assert abs(float(log_z) - log_z_vis) < 1e-10
    assert elapsed < 5.0, f"log Z with n_h = 18 took {elapsed:.2f} s (compile + run)"
    # Memory: the compiled temporaries stay near chunk_size · n_v floats (a few MB), far
    # below the 2^18 · 64 · 8 B = 134 MB of materialising every hidden configuration.
    big = random_params(jax.random.key(7), 64, 18, scale=0.1)
    for fn in (rbm.log_partition, jax.grad(rbm.log_partition)):
        stats = jax.jit(fn).lower(big).compile().memory_analysis()
        if stats is None:
            pytest.skip("memory_analysis unavailable on this backend")
        assert stats.temp_size_in_bytes < 16 * 2**20, stats


# --------------------------------------------------------------------------------------
# Contrastive divergence
# --------------------------------------------------------------------------------------


def test_cd_loss_gradient_is_cd_estimator(tiny):
    data = random_binary(jax.random.key(8), (12, 6))
    batch = rbm.cd_batch(tiny, data, jax.random.key(9), k=3)
    assert set(batch) == {"v", "v_model"}
    assert batch["v_model"].shape == data.shape
    assert not np.array_equal(batch["v_model"], data)  # the chain moved
    mean_loss = lambda p: jnp.mean(jax.vmap(rbm.cd_loss, in_axes=(None, 0))(p, batch))
    got = jax.grad(mean_loss)(tiny)
    ref = cd_estimator(tiny, batch["v"], batch["v_model"])
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k].mean(0), rtol=0, atol=1e-13, err_msg=k)
    # Per-example gradients (what every grd function differentiates) match example by example.
    per_example = jax.vmap(jax.grad(rbm.cd_loss), in_axes=(None, 0))(tiny, batch)
    for k in ref:
        np.testing.assert_allclose(per_example[k], ref[k], rtol=0, atol=1e-13, err_msg=k)


def _cd_vs_exact_z(params, data, k, replicas, key):
    """Max over the 34 gradient components of |mean CD gradient − exact| / standard error.

    The data replicated ``replicas`` times makes the data term exact, so the only error is
    the Monte Carlo error of the model term ⟨∇F(ṽ)⟩ over ``replicas · N`` independent chains
    (plus the bias of a finite chain); the standard error comes from the samples' own spread.
    """
    v = jnp.tile(data, (replicas, 1))
    batch = rbm.cd_batch(params, v, key, k)
    mean_loss = lambda p: jnp.mean(jax.vmap(rbm.cd_loss, in_axes=(None, 0))(p, batch))
    cd = flat(jax.grad(mean_loss)(params))
    exact = flat(rbm.exact_kl_gradient(params, data))
    grad_f_model = flat_rows(
        jax.vmap(jax.grad(rbm.free_energy), in_axes=(None, 0))(params, batch["v_model"])
    )
    se = grad_f_model.std(0) / np.sqrt(len(grad_f_model))
    return np.max(np.abs(cd - exact) / se), np.max(np.abs(cd - exact))


def test_long_chain_cd_gradient_approaches_exact_gradient(tiny):
    """CD-k with k = 100 sweeps and 10 000 chains estimates the exact likelihood gradient.

    Tolerance: every one of the 34 components within 5 standard errors (SE ≤ 0.007 here,
    measured from the sampled ∇F(ṽ)). For an unbiased estimator the chance that any of 34
    Gaussian components exceeds 5σ is ≤ 34 · 5.7e-7 ≈ 2e-5; the burn-in bias after 100
    sweeps of a 10-unit RBM with O(1) weights is far below one SE (its Gibbs chain mixes in a
    few sweeps). Measured: max |z| ≈ 2.0 (max error 0.008) for k = 100; the same criterion
    rejects CD-1 (max |z| ≈ 29, error 0.096), so the test has power.
    """
    data = random_binary(jax.random.key(4), (20, 6))
    z_long, err_long = _cd_vs_exact_z(tiny, data, 100, 500, jax.random.key(5))
    assert z_long < 5.0, (z_long, err_long)
    assert err_long < 0.04
    z_cd1, _ = _cd_vs_exact_z(tiny, data, 1, 500, jax.random.key(5))
    assert z_cd1 > 10.0  # CD-1 is biased: the check distinguishes the two


def test_persistent_cd_continues_the_chain(tiny):
    data = random_binary(jax.random.key(10), (8, 6))
    chain = random_binary(jax.random.key(11), (8, 6))
    batch, new_chain = rbm.cd_batch(tiny, data, jax.random.key(12), 2, persistent_chain=chain)
    np.testing.assert_array_equal(new_chain, batch["v_model"])
    np.testing.assert_array_equal(batch["v"], data)
    np.testing.assert_array_equal(new_chain, rbm.gibbs_chain(tiny, chain, jax.random.key(12), 2))
    # k = 0: the negative sample is the stored chain itself, not the data.
    batch0, chain0 = rbm.cd_batch(tiny, data, jax.random.key(12), 0, persistent_chain=chain)
    np.testing.assert_array_equal(chain0, chain)
    assert not np.array_equal(chain, data)


def test_cd_loss_plugs_into_grd_diffusion_matvec(tiny):
    """The grd contract: D·v of (cd_loss, cd_batch) is the covariance of the CD estimators."""
    data = random_binary(jax.random.key(13), (10, 6))
    batch = rbm.cd_batch(tiny, data, jax.random.key(14), k=1)
    v = jax.tree.map(lambda x: jax.random.normal(jax.random.key(15), x.shape), tiny)
    dv = grd.diffusion_matvec(rbm.cd_loss, tiny, batch, v)
    g = flat_rows(cd_estimator(tiny, batch["v"], batch["v_model"]))
    c = g - g.mean(0)
    np.testing.assert_allclose(flat(dv), c.T @ (c @ flat(v)) / len(g), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# Gibbs sampling reproduces the exact distribution
# --------------------------------------------------------------------------------------


def test_gibbs_sampling_reproduces_exact_joint_distribution():
    """Chi-square test over the 16 joint visible states of a 4-visible, 3-hidden RBM.

    2000 independent chains from uniform random states, 100 burn-in sweeps, then 10 samples
    per chain thinned every 5 sweeps: 20 000 samples, smallest expected cell count ≈ 220.
    Significance 1e-3 (df = 15). Thinning is checked: the lag-one autocorrelation of F(v)
    between retained samples must be below 0.05. The same samples must reject a slightly
    different RBM (visible biases shifted by 0.1), so the test has power.
    """
    params = random_params(jax.random.key(7), 4, 3, scale=1.5)
    states = all_states(4)
    probs = np.exp(-np.asarray(rbm.free_energy(params, states)) - float(rbm.log_partition(params)))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-12)
    n_chains, burn_in, thin, n_keep = 2000, 100, 5, 10

    @jax.jit
    def sample(key):
        k0, k1 = jax.random.split(key)
        v = rbm.gibbs_chain(
            params, random_binary(k0, (n_chains, 4)), jax.random.fold_in(k1, 0), burn_in
        )

        def keep(v, i):
            v = rbm.gibbs_chain(params, v, jax.random.fold_in(k1, i + 1), thin)
            return v, v

        return jax.lax.scan(keep, v, jnp.arange(n_keep))[1]

    vs = np.asarray(sample(jax.random.key(8)))  # (n_keep, n_chains, 4)
    assert set(np.unique(vs)) <= {0.0, 1.0}
    f = np.asarray(rbm.free_energy(params, vs))
    f = f - f.mean()
    rho = np.mean(f[1:] * f[:-1]) / np.mean(f**2)
    assert abs(rho) < 0.05, rho
    counts = np.bincount((vs @ 2 ** np.arange(3, -1, -1)).astype(int).ravel(), minlength=16)
    expected = probs * counts.sum()
    assert expected.min() > 5
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3
    # Per-unit marginals agree with the exact model_marginals too.
    np.testing.assert_allclose(vs.reshape(-1, 4).mean(0), rbm.model_marginals(params), atol=0.02)
    # Power: a nearby model is rejected by the same samples.
    shifted = dict(params, a=params["a"] + 0.1)
    probs_shifted = np.exp(
        -np.asarray(rbm.free_energy(shifted, states)) - float(rbm.log_partition(shifted))
    )
    assert scipy.stats.chisquare(counts, probs_shifted * counts.sum()).pvalue < 1e-3


# --------------------------------------------------------------------------------------
# Initialisation and bad input
# --------------------------------------------------------------------------------------


def test_init_rbm_shapes_and_visible_bias_from_data():
    params = rbm.init_rbm(jax.random.key(0), 5, 3)
    assert {k: v.shape for k, v in params.items()} == {"W": (5, 3), "a": (5,), "b": (3,)}
    assert all(v.dtype == jnp.float32 for v in params.values())
    assert 0.0 < float(jnp.std(params["W"])) < 0.05
    mean = np.array([0.5, 0.25, 0.9, 0.0, 1.0])
    params = rbm.init_rbm(jax.random.key(0), 5, 3, data_mean=mean, dtype=jnp.float64)
    np.testing.assert_allclose(params["a"][:3], np.log(mean[:3] / (1 - mean[:3])), atol=1e-12)
    assert np.all(np.isfinite(params["a"])) and params["a"][3] < -6 and params["a"][4] > 6
    with pytest.raises(ValueError, match="data_mean"):
        rbm.init_rbm(jax.random.key(0), 5, 3, data_mean=np.ones(4))
    with pytest.raises(ValueError, match="data_mean"):
        rbm.init_rbm(jax.random.key(0), 5, 3, data_mean=np.full(5, 1.5))


def test_non_binary_visible_data_is_rejected(tiny):
    good = random_binary(jax.random.key(0), (4, 6))
    bad = good.at[2, 3].set(0.5)
    with pytest.raises(ValueError, match="`v_data` must be binary.*0.5.*index \\(2, 3\\)"):
        rbm.cd_batch(tiny, bad, jax.random.key(1))
    with pytest.raises(ValueError, match="`v_data` must be binary"):
        rbm.log_likelihood(tiny, bad)
    with pytest.raises(ValueError, match="`persistent_chain` must be binary"):
        rbm.cd_batch(tiny, good, jax.random.key(1), persistent_chain=bad)
    with pytest.raises(ValueError, match="`pixels` must be binary"):
        rbm.validate_binary(jnp.array([0.0, 1.0, 2.0]), "pixels")
    with pytest.raises(ValueError, match="`v` must be binary"):
        rbm.validate_binary(jnp.array([0.0, jnp.nan]))
    # Valid inputs pass through unchanged, including bool and int dtypes.
    np.testing.assert_array_equal(rbm.validate_binary(good), good)
    assert rbm.validate_binary(np.array([True, False])).dtype == jnp.bool_
    rbm.validate_binary(np.array([0, 1, 1]))
    # Inside jit the check is an equinox runtime error that still names the argument.
    checked = jax.jit(lambda v: rbm.validate_binary(v, "v_data"))
    np.testing.assert_array_equal(checked(good), good)
    with pytest.raises(Exception, match="`v_data` must be binary"):
        jax.block_until_ready(checked(bad))


def test_too_many_hidden_units_suggests_the_approximate_path():
    params = rbm.init_rbm(jax.random.key(0), 8, 21, dtype=jnp.float64)
    data = jnp.zeros((2, 8))
    for fn in (rbm.log_partition, rbm.model_marginals):
        with pytest.raises(ValueError, match=r"max_hidden = 20.*n_h = 21.*contrastive divergence"):
            fn(params)
    with pytest.raises(ValueError, match="annealed importance sampling\\) is not provided"):
        rbm.log_likelihood(params, data)
    with pytest.raises(ValueError, match="cd_loss with cd_batch"):
        rbm.exact_kl_gradient(params, data)
    small = rbm.init_rbm(jax.random.key(0), 8, 5, dtype=jnp.float64)
    with pytest.raises(ValueError, match="max_hidden = 4"):
        rbm.log_partition(small, max_hidden=4)
    with pytest.raises(ValueError, match="power of two"):
        rbm.log_partition(small, chunk_size=3)
    # The approximate path itself works for the large model.
    batch = rbm.cd_batch(params, data, jax.random.key(1))
    assert jax.grad(rbm.cd_loss)(params, jax.tree.map(lambda x: x[0], batch))["W"].shape == (8, 21)


def test_bad_shapes_are_rejected(tiny):
    with pytest.raises(ValueError, match="keys 'W'"):
        rbm.log_partition({"W": tiny["W"], "a": tiny["a"]})
    with pytest.raises(ValueError, match="shapes disagree"):
        rbm.free_energy(dict(tiny, a=jnp.zeros(5)), jnp.zeros(6))
    with pytest.raises(ValueError, match="`v` must have 6 visible units"):
        rbm.free_energy(tiny, jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="`v_data` must have shape \\(N, n_v\\)"):
        rbm.cd_batch(tiny, jnp.zeros(6), jax.random.key(0))
    with pytest.raises(ValueError, match="`persistent_chain` must have the shape"):
        rbm.cd_batch(tiny, jnp.zeros((4, 6)), jax.random.key(0), persistent_chain=jnp.zeros((3, 6)))
    with pytest.raises(ValueError, match="`k`"):
        rbm.gibbs_chain(tiny, jnp.zeros((4, 6)), jax.random.key(0), -1)


# --------------------------------------------------------------------------------------
# Transformations: jit, vmap, grad
# --------------------------------------------------------------------------------------


def test_jit_vmap_grad_compatibility(tiny):
    data = random_binary(jax.random.key(20), (6, 6))
    # jit gives the eager values.
    assert abs(float(jax.jit(rbm.log_partition)(tiny)) - float(rbm.log_partition(tiny))) < 1e-12
    np.testing.assert_allclose(
        jax.jit(rbm.exact_kl_gradient)(tiny, data)["W"], rbm.exact_kl_gradient(tiny, data)["W"]
    )
    # vmap over a stack of models equals a Python loop.
    stack = [random_params(jax.random.key(i), 6, 4) for i in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *stack)
    np.testing.assert_allclose(
        jax.vmap(rbm.log_partition)(stacked), [rbm.log_partition(p) for p in stack], atol=1e-12
    )
    # vmap of free_energy over examples equals the batched call.
    np.testing.assert_allclose(
        jax.vmap(rbm.free_energy, in_axes=(None, 0))(tiny, data), rbm.free_energy(tiny, data)
    )
    # grad of log Z w.r.t. a is the vector of exact visible marginals E[v].
    np.testing.assert_allclose(
        jax.grad(rbm.log_partition)(tiny)["a"], rbm.model_marginals(tiny), atol=1e-12
    )
    # cd_batch under jit with a traced k, the chain reproducible from the key.
    jitted = jax.jit(rbm.cd_batch)
    b1, b2 = (
        jitted(tiny, data, jax.random.key(21), 4),
        rbm.cd_batch(tiny, data, jax.random.key(21), 4),
    )
    np.testing.assert_array_equal(b1["v_model"], b2["v_model"])
    # vmap of gibbs_chain over keys gives independent chains.
    keys = jax.random.split(jax.random.key(22), 64)
    chains = jax.vmap(rbm.gibbs_chain, in_axes=(None, None, 0, None))(tiny, data[0], keys, 3)
    assert chains.shape == (64, 6) and len(np.unique(np.asarray(chains), axis=0)) > 4
    # jit(grad) of the CD surrogate equals eager grad.
    loss = lambda p: jnp.mean(jax.vmap(rbm.cd_loss, in_axes=(None, 0))(p, b2))
    np.testing.assert_allclose(
        flat(jax.jit(jax.grad(loss))(tiny)), flat(jax.grad(loss)(tiny)), atol=1e-13
    )
    # float32 parameters stay float32 end to end.
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), tiny)
    assert rbm.log_partition(p32).dtype == jnp.float32
    assert rbm.cd_batch(p32, data, jax.random.key(0))["v_model"].dtype == jnp.float32
    assert abs(float(rbm.log_partition(p32)) - float(rbm.log_partition(tiny))) < 1e-4
