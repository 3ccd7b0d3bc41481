"""Tests of grd.analysis.nonequilibrium: float64 oracles from linear processes (theory §8).

Oracles: the brute-force Kronecker solve of the phase-space discrete Lyapunov equation, the
closed form (η/2)[H, Σ], the lagged covariances AᵗΣ of a linear process simulated here with
``lax.scan`` (non-normal A, heavy-ball momentum, a reversible case), and the continuous-time
quantities of grd.analysis.limit_cycles in the η → 0 limit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.linalg import solve_discrete_lyapunov

from grd.analysis import (
    areal_velocity,
    areal_velocity_batches,
    compare_rates,
    continuous_areal_velocity,
    eigen_basis,
    integrated_autocorrelation_time,
    lyapunov_solve,
    pca_basis,
    plane_pairs,
    predicted_areal_velocity,
    predicted_lagged_covariance,
    reversible_surrogate,
    rotation_rate,
    sde_temperature,
    sgd_stationary_covariance,
    sgd_temperature,
    stationarity,
    time_reversal_asymmetry,
)


def _model(d=5, seed=0):
    """A positive-definite H and a D that does not commute with it."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    h = q @ np.diag(np.linspace(0.5, 3.0, d)) @ q.T
    g = rng.normal(size=(d, d))
    return h, g @ g.T / d + 0.1 * np.eye(d)


def _phase_space_bruteforce(h, dm, eta, b, mu, c=1.0):
    """Σ_z = MΣ_zMᵀ + BcDBᵀ/b by the dense d²-Kronecker system; returns (Σ_xx, (MΣ_z)_xx)."""
    d = h.shape[0]
    eye = np.eye(d)
    m = np.block([[eye - eta * h, -eta * mu * eye], [h, mu * eye]])
    bm = np.vstack([-eta * eye, eye])
    q = bm @ (c * dm / b) @ bm.T
    n2 = (2 * d) ** 2
    # Row-major vec: vec(M S Mᵀ) = (M ⊗ M) vec S.
    sz = np.linalg.solve(np.eye(n2) - np.kron(m, m), q.reshape(-1)).reshape(2 * d, 2 * d)
    return sz[:d, :d], (m @ sz)[:d, :d]


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("n", [None, 40])
def test_prediction_matches_bruteforce_lyapunov(mu, n):
    h, dm = _model()
    eta, b = 0.3, 4
    c = 1.0 if n is None else (n - b) / (n - 1)
    sig, c1 = _phase_space_bruteforce(h, dm, eta, b, mu, c)
    got = sgd_stationary_covariance(h, dm, eta, b, momentum=mu, n=n)
    # Both are direct float64 solves of well-conditioned systems: agreement to ~1e-13 relative.
    np.testing.assert_allclose(got.sigma, sig, rtol=1e-10, atol=1e-12 * np.abs(sig).max())
    np.testing.assert_allclose(got.lag_one, c1, rtol=1e-10, atol=1e-12 * np.abs(c1).max())
    rate = predicted_areal_velocity(h, dm, eta, b, momentum=mu, n=n)
    np.testing.assert_allclose(rate, 0.5 * (c1.T - c1), atol=1e-12 * np.abs(c1).max())
    np.testing.assert_allclose(rate, -rate.T, atol=0)
    # Also against scipy's Bartels–Stewart solver (a second, independent method), and the
    # scalar fast path (momentum=0.0) against the 2 × 2-block path (an array momentum).
    if mu == 0.0:
        blk = sgd_stationary_covariance(h, dm, eta, b, momentum=jnp.asarray(0.0), n=n)
        np.testing.assert_allclose(blk.lag_one, got.lag_one, atol=1e-12 * np.abs(c1).max())
        a = np.eye(h.shape[0]) - eta * h
        sig2 = solve_discrete_lyapunov(a, c * eta**2 * dm / b)
        np.testing.assert_allclose(got.sigma, sig2, rtol=1e-9, atol=1e-12 * np.abs(sig2).max())


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_lagged_covariance_matches_bruteforce_matrix_power(mu):
    """C_τ = (M^τ Σ_z)_xx from the dense (2d)² Kronecker solve; τ = 1 is the lag-one output."""
    h, dm = _model(d=4, seed=2)
    eta, b = 0.3, 3
    d = h.shape[0]
    eye = np.eye(d)
    m = np.block([[eye - eta * h, -eta * mu * eye], [h, mu * eye]])
    bm = np.vstack([-eta * eye, eye])
    q = bm @ (dm / b) @ bm.T
    n2 = (2 * d) ** 2
    sz = np.linalg.solve(np.eye(n2) - np.kron(m, m), q.reshape(-1)).reshape(2 * d, 2 * d)
    lags = (0, 1, 2, 7)
    got = np.asarray(predicted_lagged_covariance(h, dm, eta, b, lags, momentum=mu))
    for k, lag in enumerate(lags):
        want = (np.linalg.matrix_power(m, lag) @ sz)[:d, :d]
        # Eigenbasis solve against a dense solve: float64 round-off of a 64 × 64 system.
        np.testing.assert_allclose(got[k], want, rtol=1e-9, atol=1e-12 * np.abs(sz).max())
    sig, c1 = sgd_stationary_covariance(h, dm, eta, b, momentum=mu)
    np.testing.assert_allclose(got[0], sig, atol=1e-13)
    np.testing.assert_allclose(got[1], c1, atol=1e-13)
    basis = eigen_basis(dm, 2)
    pb = predicted_lagged_covariance(h, dm, eta, b, (1,), momentum=mu, basis=basis)[0]
    rate = predicted_areal_velocity(h, dm, eta, b, momentum=mu, basis=basis)
    np.testing.assert_allclose(0.5 * (pb.T - pb), rate, atol=1e-14)
    with pytest.raises(ValueError, match="lags"):
        predicted_lagged_covariance(h, dm, eta, b, (-1,))


def test_prediction_closed_form_commutator_and_basis():
    h, dm = _model(d=6, seed=1)
    eta, b = 0.2, 8
    sig = sgd_stationary_covariance(h, dm, eta, b).sigma
    full = predicted_areal_velocity(h, dm, eta, b)
    np.testing.assert_allclose(full, 0.5 * eta * (h @ sig - sig @ h), atol=1e-14)
    basis = eigen_basis(dm, 3)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    got = predicted_areal_velocity(h, dm, eta, b, basis=basis)
    np.testing.assert_allclose(got, basis.T @ full @ basis, atol=1e-14)
    assert np.abs(full).max() > 1e-4  # the model is genuinely non-equilibrium


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_equilibrium_models_have_zero_predicted_current(mu):
    h, _ = _model()
    for dm in (h, 0.3 * h, np.eye(h.shape[0]), h @ h):  # every D that commutes with H
        rate = predicted_areal_velocity(h, dm, 0.1, 16, momentum=mu)
        scale = np.abs(sgd_stationary_covariance(h, dm, 0.1, 16, momentum=mu).sigma).max()
        assert np.abs(rate).max() < 1e-12 * scale


def test_continuous_limit_agrees_with_discrete():
    h, dm = _model()
    b = 4
    errs = []
    for eta in (1e-2, 1e-3, 1e-4):
        disc = predicted_areal_velocity(h, dm, eta, b)
        cont = continuous_areal_velocity(h, dm, eta, b)
        errs.append(np.abs(disc - cont).max() / np.abs(cont).max())
    # The discrete Lyapunov equation differs from the continuous one by an O(η) term, so the
    # relative error falls tenfold per decade of η (ratio ≈ 0.1; 0.2 leaves slack).
    assert errs[-1] < 1e-3
    assert errs[1] / errs[0] < 0.2 and errs[2] / errs[1] < 0.2
    # With momentum the limit is SGD with η/(1 − μ) (and the same temperature rule).
    mu = 0.5
    disc = predicted_areal_velocity(h, dm, 1e-4, b, momentum=mu)
    cont = continuous_areal_velocity(h, dm, 1e-4, b, momentum=mu)
    np.testing.assert_allclose(disc, cont, atol=2e-3 * np.abs(cont).max())


def test_continuous_rate_is_limit_cycles_rotation_rate():
    """Per-step areal velocity = (η/2)·ω, ω from grd.analysis.rotation_rate (continuous time)."""
    h, dm = _model(d=4)
    eta, b, n = 0.05, 8, 100
    beta_inv = sde_temperature(eta, b, n=n)
    assert beta_inv == pytest.approx(float(sgd_temperature(eta, b)) * (n - b) / (n - 1))
    plane = eigen_basis(dm, 2)
    got = continuous_areal_velocity(h, dm, eta, b, basis=plane, n=n)
    omega = rotation_rate(h, dm, beta_inv, plane)
    np.testing.assert_allclose(got[0, 1], 0.5 * eta * omega, rtol=1e-10)
    sigma_c = lyapunov_solve(h, dm, beta_inv)
    full = continuous_areal_velocity(h, dm, eta, b, n=n)
    np.testing.assert_allclose(full, 0.5 * eta * (h @ sigma_c - sigma_c @ h), atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Simulated linear processes


def _simulate(a, noise_cov, steps, reps, key, *, momentum=None):
    """(steps, reps, d) float64 paths of x ← Ax + ε (or heavy ball if momentum=(H, η, μ)).

    The Gaussian noise is drawn in one call and scanned over (a PRNG call per step is several
    times slower than the recursion itself).
    """
    d = noise_cov.shape[0]
    chol = jnp.asarray(np.linalg.cholesky(noise_cov))
    noise = jax.random.normal(key, (steps, reps, d)) @ chol.T

    if momentum is None:
        a = jnp.asarray(a)

        def step(x, e):
            x = x @ a.T + e
            return x, x

        init = jnp.zeros((reps, d))
    else:
        h, eta, mu = momentum
        h = jnp.asarray(h)

        def step(z, e):
            x, m = z
            m = mu * m + x @ h + e
            x = x - eta * m
            return (x, m), x

        init = (jnp.zeros((reps, d)), jnp.zeros((reps, d)))
    _, xs = jax.lax.scan(step, init, noise)
    return xs


def _nonnormal():
    # Non-normal stable A (AAᵀ ≠ AᵀA): a sheared contraction, isotropic noise.
    a = np.array([[0.8, 0.5], [0.0, 0.7]])
    return a, np.eye(2), solve_discrete_lyapunov(a, np.eye(2))


def test_areal_velocity_nonnormal_process_and_calibration():
    """Measured rate against ½(C₁ᵀ − C₁), C₁ = AΣ; z-scores calibrated over replicates."""
    a, q, sig = _nonnormal()
    c1 = a @ sig
    truth = 0.5 * (c1.T - c1)[0, 1]
    reps, steps, burn = 200, 32 * 128 + 200, 200
    xs = _simulate(a, q, steps, reps, jax.random.key(1))[burn:]
    res = jax.vmap(lambda x: areal_velocity(x, n_batches=32), in_axes=1)(xs)
    z = np.asarray((res.rate[:, 0, 1] - truth) / res.stderr[:, 0, 1])
    # Batch means with 32 batches: z ~ t₃₁ (sd 1.03) up to an O(1/T) centring bias. With 200
    # replicates the sample mean has sd 0.07 and the sample sd 0.05: 4-sigma bounds.
    assert abs(z.mean()) < 0.3
    assert 0.8 < z.std() < 1.25
    pooled = float(jnp.mean(res.rate[:, 0, 1]))
    assert abs(pooled - truth) < 4 * float(jnp.std(res.rate[:, 0, 1])) / np.sqrt(reps)
    assert abs(truth) > 0.1  # non-normal A with isotropic noise circulates


def test_areal_velocity_reversible_process_zscores_standard_normal():
    """Symmetric A with isotropic noise is reversible: z = rate/stderr ≈ N(0, 1)."""
    rng = np.random.default_rng(3)
    qm, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = qm @ np.diag([0.9, 0.6, 0.2]) @ qm.T
    reps, steps = 200, 32 * 128
    xs = _simulate(a, 0.5 * np.eye(3), steps + 100, reps, jax.random.key(2))[100:]
    rate, se = jax.vmap(lambda x: areal_velocity(x, n_batches=32), in_axes=1)(xs)
    i, j = plane_pairs(3)
    z = np.asarray(rate[:, i, j] / se[:, i, j]).ravel()  # 600 z-scores (3 planes)
    # t₃₁ has sd 1.03; with 600 draws the sample sd has sd ≈ 0.03 and the mean 0.04.
    assert abs(z.mean()) < 0.2
    assert 0.85 < z.std() < 1.2
    assert stats.kstest(z, stats.t(31).cdf).pvalue > 1e-3
    assert np.mean(np.abs(z) > 3) < 0.02


def test_areal_velocity_momentum_matches_prediction():
    h, dm = _model(d=3, seed=4)
    eta, b, mu = 0.1, 2, 0.9
    pred = predicted_areal_velocity(h, dm, eta, b, momentum=mu)
    xs = _simulate(None, dm / b, 60_000, 4, jax.random.key(5), momentum=(h, eta, mu))
    rates, ses = jax.vmap(lambda x: areal_velocity(x[2000:], n_batches=20), in_axes=1)(xs)
    rate = np.asarray(jnp.mean(rates, axis=0))
    se = np.asarray(jnp.sqrt(jnp.sum(ses**2, axis=0))) / 4
    i, j = plane_pairs(3)
    z = (rate - np.asarray(pred))[i, j] / se[i, j]
    # 3 planes, a 5-sigma bound each keeps the false-failure rate < 1e-5.
    assert np.all(np.abs(z) < 5), z
    assert np.max(np.abs(np.asarray(pred)[i, j] / se[i, j])) > 5  # the current is resolved


def test_time_reversal_asymmetry_lags_and_reversed_is_an_identity():
    a, q, sig = _nonnormal()
    xs = _simulate(a, q, 100_000, 1, jax.random.key(6))[500:, 0]
    lags = (1, 2, 5)
    res = time_reversal_asymmetry(xs, lags=lags, n_batches=25)
    rate, _ = areal_velocity(xs, n_batches=25)
    np.testing.assert_allclose(res.asymmetry[0], 2 * rate, rtol=1e-12, atol=1e-14)
    for k, lag in enumerate(lags):
        ct = np.linalg.matrix_power(a, lag) @ sig  # E[x_{t+τ} x_tᵀ]
        truth = (ct.T - ct)[0, 1]
        assert abs(float(res.asymmetry[k, 0, 1]) - truth) < 5 * float(res.stderr[k, 0, 1])
        # Reversal transposes C(τ) for ANY series: `reversed` = −asymmetry up to the 2τ edge
        # terms (O(τ/T)) — an identity (a sign check), not a null.
        np.testing.assert_allclose(res.reversed[k], -res.asymmetry[k], atol=1e-3)


def test_shuffled_series_has_no_current():
    a, q, _ = _nonnormal()
    xs = _simulate(a, q, 40_000, 1, jax.random.key(7))[:, 0]
    rate, se = areal_velocity(xs)
    assert abs(rate[0, 1] / se[0, 1]) > 10
    shuffled = xs[jax.random.permutation(jax.random.key(8), xs.shape[0])]
    rate_s, se_s = areal_velocity(shuffled)
    assert abs(rate_s[0, 1] / se_s[0, 1]) < 4  # i.i.d. rows: zero current, 4-sigma bound


def test_stationarity_diagnostic():
    a, q, _ = _nonnormal()
    xs = _simulate(a, q, 40_000, 1, jax.random.key(9))[200:, 0]
    ok = stationarity(xs)
    assert bool(ok.stationary) and float(ok.max_abs_z) < float(ok.threshold)
    np.testing.assert_allclose(ok.variance_ratio, 1.0, atol=0.15)
    drifting = xs + jnp.linspace(0.0, 1.0, xs.shape[0])[:, None]
    bad = stationarity(drifting)
    assert not bool(bad.stationary) and float(bad.max_abs_z) > 5


def test_bases_and_projection():
    a, q, sig = _nonnormal()
    rng = np.random.default_rng(10)
    xs = np.asarray(_simulate(a, q, 20_000, 1, jax.random.key(11))[:, 0])
    emb, _ = np.linalg.qr(rng.normal(size=(6, 2)))  # embed the plane in d = 6
    big = xs @ emb.T + 1e-3 * rng.normal(size=(xs.shape[0], 6))
    basis = pca_basis(big, 2)
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-12)
    # The top-2 PCs span the embedded plane (up to the small isotropic noise).
    np.testing.assert_allclose(np.linalg.svd(emb.T @ basis)[1], 1.0, atol=1e-5)
    # A rotation of the basis within the plane leaves the scalar current invariant up to sign.
    r_plane, _ = areal_velocity(big, np.asarray(emb))
    r_pca, _ = areal_velocity(big, basis)
    assert (
        abs(abs(float(r_plane[0, 1])) - abs(float(r_pca[0, 1])))
        < 1e-3 * abs(float(r_plane[0, 1])) + 1e-6
    )
    # jit: the same numbers.
    jitted = jax.jit(areal_velocity, static_argnames=("n_batches", "center"))(big, basis)
    np.testing.assert_allclose(jitted.rate, r_pca, rtol=1e-10, atol=1e-14)


def test_prediction_grad_matches_finite_difference():
    h, dm = _model(d=3)

    @jax.jit
    def f(eta):
        return predicted_areal_velocity(h, dm, eta, 4, momentum=0.5)[0, 1]

    g = jax.jit(jax.grad(f))(0.2)
    fd = (f(0.2 + 1e-6) - f(0.2 - 1e-6)) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-6)  # central difference: O(h²) + round-off


def test_input_errors_are_clear():
    h, dm = _model(d=3)
    with pytest.raises(ValueError, match="lr"):
        predicted_areal_velocity(h, dm, 10.0, 4)  # ηλ_max ≥ 2: not stationary
    with pytest.raises(ValueError, match="strict minimum"):
        predicted_areal_velocity(-h, dm, 0.1, 4)
    with pytest.raises(ValueError, match="symmetric"):
        predicted_areal_velocity(h + np.triu(np.ones((3, 3)), 1), dm, 0.1, 4)
    with pytest.raises(ValueError, match="momentum"):
        predicted_areal_velocity(h, dm, 0.1, 4, momentum=1.0)
    with pytest.raises(ValueError, match="`n`"):
        predicted_areal_velocity(h, dm, 0.1, 4, n=2)
    with pytest.raises(ValueError, match="basis"):
        areal_velocity(np.zeros((100, 3)), np.eye(4)[:, :2])
    with pytest.raises(ValueError, match="n_batches"):
        areal_velocity(np.zeros((10, 3)), n_batches=32)
    with pytest.raises(ValueError, match="NaN"):
        areal_velocity(np.full((100, 2), np.nan))
    with pytest.raises(ValueError, match="lags"):
        time_reversal_asymmetry(np.zeros((1000, 2)), lags=(0,))


def test_accepts_a_recorded_trajectory_store(tmp_path):
    from grd.analysis import TrajectoryRecorder, load_trajectory

    a, q, _ = _nonnormal()
    xs = np.asarray(_simulate(a, q, 640, 1, jax.random.key(12))[:, 0])
    with TrajectoryRecorder(tmp_path, every=1, chunk=100) as rec:
        for t, x in enumerate(xs):
            rec.record(t, jnp.asarray(x))
    store = load_trajectory(tmp_path)
    got = areal_velocity(store, n_batches=8, check_batches=False)  # 80-step batches: short
    want = areal_velocity(xs, n_batches=8, check_batches=False)
    np.testing.assert_allclose(got.rate, want.rate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.stderr, want.stderr, rtol=1e-12, atol=1e-15)


def test_reversed_is_minus_forward_even_for_a_reversible_series():
    """The time-reversed statistic is −forward whatever the dynamics: it cannot discriminate."""
    rng = np.random.default_rng(11)
    qm, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = qm @ np.diag([0.9, 0.6, 0.2]) @ qm.T  # symmetric A, isotropic noise: reversible
    xs = _simulate(a, np.eye(3), 20_000, 1, jax.random.key(12))[:, 0]
    res = time_reversal_asymmetry(xs, lags=(1, 3), n_batches=20)
    # Edge terms: 2τ products of O(var) over T = 20 000 steps, var ≈ 5 → < 1e-2.
    np.testing.assert_allclose(res.reversed, -res.asymmetry, atol=1e-2)


def test_reversible_surrogate_kills_the_current_and_keeps_covariances():
    """Irreversible (non-normal) process: surrogates have zero-mean rates, same covariances."""
    a, q, sig = _nonnormal()
    # 8 192 steps, 40 surrogates (was 16 384 and 50: 11 s of CPU, now ≈ half).
    xs = _simulate(a, q, 8_192 + 500, 1, jax.random.key(13))[500:, 0]
    rate, se = areal_velocity(xs, n_batches=16)  # 512-step batches > 20 τ_int
    assert abs(float(rate[0, 1] / se[0, 1])) > 10  # the original circulates (|z| ≈ 30)
    keys = jax.random.split(jax.random.key(14), 40)
    surr = jax.vmap(lambda k: reversible_surrogate(xs, k))(keys)  # (40, T, 2)
    rates, ses = jax.vmap(lambda y: areal_velocity(y, n_batches=32))(surr)
    z = np.asarray(rates[:, 0, 1] / ses[:, 0, 1])
    # 40 surrogates: the mean z has sd ≈ 0.16 if rates are zero-mean; 4-sigma bound 0.65. The
    # original sits > 10 se away, so a surrogate that kept the current would fail by far.
    assert abs(z.mean()) < 0.65, z.mean()
    assert 0.6 < z.std() < 1.5
    # Covariances: the ensemble mean of the surrogates' Σ equals the series' Σ (circular
    # estimator, exact in expectation; 40 draws of a ~T/2-frequency average: ~1 % noise).
    yc = np.asarray(xs - xs.mean(0))
    s0 = yc.T @ yc / yc.shape[0]
    ss = np.einsum("rti,rtj->ij", np.asarray(surr), np.asarray(surr)) / surr.shape[0] / yc.shape[0]
    np.testing.assert_allclose(ss, s0, rtol=0.05, atol=0.05 * np.abs(s0).max())
    # Lag-one: the surrogate's C₁ is the symmetric part of the original's (±5 % of scale).
    c1 = yc[1:].T @ yc[:-1] / yc.shape[0]
    sa = np.asarray(surr)
    c1s = np.einsum("rti,rtj->ij", sa[:, 1:], sa[:, :-1]) / sa.shape[0] / yc.shape[0]
    np.testing.assert_allclose(c1s, 0.5 * (c1 + c1.T), atol=0.05 * np.abs(c1).max())


def _ar1(phi, n, seed):
    from scipy.signal import lfilter

    e = np.random.default_rng(seed).normal(size=n)
    return lfilter([1.0], [1.0, -phi], e)[1000:]


def test_integrated_autocorrelation_time_ar1_and_short_batch_warning():
    # φ = 0.95 over 4·10⁴ steps (was 0.98 over 10⁵: 10 s of CPU); same relative precision.
    phi = 0.95  # τ_int = (1 + φ)/(1 − φ) = 39 steps
    x = _ar1(phi, 41_000, 15)
    tau = float(integrated_autocorrelation_time(x[:, None])[0])
    # Sokal window M ≈ 5τ ≈ 200 over T = 4e4: relative sd ≈ √(2(2M + 1)/T) ≈ 0.14; 3 sd.
    assert abs(tau / 39.0 - 1) < 0.42, tau
    fast = float(integrated_autocorrelation_time(_ar1(0.0, 21_000, 16)[:, None])[0])
    assert abs(fast - 1) < 0.2, fast  # white noise: τ_int = 1
    y = np.stack([x, np.roll(x, 7)], axis=1)  # two slow coordinates, 4e4 steps
    with pytest.warns(UserWarning, match="integrated autocorrelation time"):
        areal_velocity(y, n_batches=100)  # batches of 400 < 20 × 39
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        areal_velocity(y, n_batches=16)  # batches of 2 500 > 20 × 39 · 1.42 (up to τ error)
        areal_velocity(y, n_batches=100, check_batches=False)


def test_compare_rates_known_answer_and_calibration():
    """measured = predicted + correlated noise of known covariance: slope 1, F ≈ 1, p uniform."""
    rng = np.random.default_rng(17)
    npl, nb, reps = 10, 50, 300
    pred = rng.normal(size=npl)
    g = rng.normal(size=(npl, npl))
    cov = g @ g.T / npl + 0.2 * np.eye(npl)  # strongly correlated planes
    chol = np.linalg.cholesky(cov)
    slopes, ses, fs, ps = [], [], [], []
    for _ in range(reps):
        batches = pred + rng.normal(size=(nb, npl)) @ chol.T
        r = compare_rates(batches, pred)
        slopes.append(float(r.slope))
        ses.append(float(r.slope_se))
        fs.append(float(r.f_stat))
        ps.append(float(r.p_value))
    zs = (np.array(slopes) - 1) / np.array(ses)
    # Jackknife error of a linear statistic is exact: z ~ t₄₉ (sd 1.02); 300 reps → sd of the
    # sample sd ≈ 0.04, of the mean 0.06: 4-5 sigma bounds.
    assert abs(zs.mean()) < 0.25 and 0.85 < zs.std() < 1.2
    # F(10, 40) has mean 40/38 = 1.05 and sd ≈ 0.5; mean of 300 draws ± 0.03.
    assert abs(np.mean(fs) - 40 / 38) < 0.12
    assert stats.kstest(ps, "uniform").pvalue > 1e-3
    # A 20 % miscalibrated prediction is detected and its slope recovered.
    big = 5 * pred  # well resolved against unit noise
    r = compare_rates(1.2 * big + rng.normal(size=(nb, npl)) @ chol.T, big)
    assert abs(float(r.slope) - 1.2) < 4 * float(r.slope_se)
    assert float(r.p_value) < 1e-6
    # (B, k, k) input with plane selection agrees with the (B, P) form.
    k = 5
    i, j = plane_pairs(k)
    full = np.zeros((nb, k, k))
    full[:, i, j] = batches
    full[:, j, i] = -batches
    pk = np.zeros((k, k))
    pk[i, j], pk[j, i] = pred, -pred
    np.testing.assert_allclose(compare_rates(full, pk).chi2, compare_rates(batches, pred).chi2)
    with pytest.raises(ValueError, match="batches cannot estimate"):
        compare_rates(batches[:10], pred)


def test_areal_velocity_batches_mean_is_the_rate():
    a, q, _ = _nonnormal()
    xs = _simulate(a, q, 8_000, 1, jax.random.key(18))[:, 0]
    bat = areal_velocity_batches(xs, n_batches=20)
    rate, se = areal_velocity(xs, n_batches=20)
    np.testing.assert_allclose(np.mean(bat, 0), rate, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.std(bat, 0, ddof=1) / np.sqrt(20), se, rtol=1e-12, atol=1e-15)
