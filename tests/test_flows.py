"""Tests of grd._flows and grd._residual (theory §5) against closed forms and dense float64 oracles.

Compiles dominate the run time, so the ODE tests share one tiny MLP, one ``loss_fn`` object,
one set of saved times and one tolerance: diffrax's compiled solves are then reused
(ε, t0, t1 are passed to diffrax as arrays, so their values do not recompile).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import grd
from grd._flows import GRDField, NGD2Field, NGDField, SGDDiffusion, integrate
from grd._residual import compare_flows, grd_residual

TS = jnp.array([0.02, 0.04, 0.5, 1.0])
TOL = dict(rtol=1e-10, atol=1e-10)


def _mlp_problem(n=24, d_in=4, hidden=5, out=3, seed=0):
    """tanh MLP, d = 40 parameters, squared-error per-example loss, N = 24 examples."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "w1": jax.random.normal(k[0], (d_in, hidden), jnp.float64) / 2,
        "b1": jnp.zeros((hidden,), jnp.float64),
        "w2": jax.random.normal(k[1], (hidden, out), jnp.float64) / 2,
    }
    batch = {
        "x": jax.random.normal(k[2], (n, d_in), jnp.float64),
        "y": jax.random.normal(k[3], (n, out), jnp.float64),
    }
    return params, batch


def mlp_loss(p, ex):
    z = jnp.tanh(ex["x"] @ p["w1"] + p["b1"]) @ p["w2"]
    return 0.5 * jnp.sum((z - ex["y"]) ** 2)


PARAMS, BATCH = _mlp_problem()
EPS = jnp.asarray(1.0 / grd.lambda_max(mlp_loss, PARAMS, BATCH))  # ε·λ_max(w₀) ≈ 1


def quad_loss(w, ex):
    """Per-example ``½(w − μ_a)ᵀ A (w − μ_a)``: H = A, D = A Cov(μ) A (constant)."""
    r = w - ex["mu"]
    return 0.5 * r @ (ex["A"] @ r)


def _quad_problem(d=3, n=6, seed=0, A=None):
    rng = np.random.default_rng(seed)
    if A is None:
        M = rng.normal(size=(d, d))
        A = M @ M.T / d + 0.5 * np.eye(d)
    mu = rng.normal(size=(n, d))
    batch = {"mu": jnp.asarray(mu), "A": jnp.broadcast_to(jnp.asarray(A), (n, d, d))}
    cov = np.cov(mu.T, bias=True)
    return np.asarray(A), mu, A @ cov @ A, batch


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def vflat(tree):
    """Flatten a pytree with a leading time axis into ``(T, d)``."""
    return np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(tree))


# Jitted entry points (eager op-by-op dispatch of these graphs is slow on 2 cores).
residual = jax.jit(grd_residual, static_argnums=0, static_argnames=("form", "inverse"))
accel = eqx.filter_jit(lambda field, y: field(0.0, y, None))


def maxdiff(a, b):
    return float(np.max(np.abs(flat(a) - flat(b))))


def dense(loss_fn, params, batch):
    """Dense float64 oracles: H, D(w) and w ↦ D(w), all by plain autodiff."""
    w0, unravel = ravel_pytree(params)

    def losses(w):
        return jax.vmap(loss_fn, in_axes=(None, 0))(unravel(w), batch)

    def D_of(w):
        G = jax.jacrev(losses)(w)
        C = G - G.mean(0)
        return C.T @ C / G.shape[0]

    H = jax.jit(jax.hessian(lambda w: jnp.mean(losses(w))))(w0)
    return w0, H, D_of


# ----------------------------------------------------------------------------- ODE flows


def test_ngd2_on_ngd_velocity_reproduces_the_ngd_path():
    ngd = integrate(mlp_loss, PARAMS, BATCH, flow="ngd", t1=1.0, eps=EPS, inverse="woodbury",
                    saveat=diffrax.SaveAt(ts=TS), **TOL)  # fmt: skip
    ngd2 = integrate(mlp_loss, PARAMS, BATCH, flow="ngd2", t1=1.0, eps=EPS, inverse="woodbury",
                     saveat=diffrax.SaveAt(ts=TS), **TOL)  # fmt: skip
    assert ngd.result == diffrax.RESULTS.successful
    assert ngd2.result == diffrax.RESULTS.successful
    w2, v2 = ngd2.ys
    assert maxdiff(w2, ngd.ys) < 1e-7
    assert maxdiff(jax.tree.map(lambda x: x[-1], ngd.ys), PARAMS) > 1e-2  # it moved
    # The velocity stays on the NGD velocity field: v(t) = −g⁻¹∇f(w(t)).
    w_end, v_end = (jax.tree.map(lambda x: x[-1], t) for t in (w2, v2))
    v_ngd = accel(NGDField(mlp_loss, BATCH, EPS, "woodbury"), w_end)
    assert maxdiff(v_end, v_ngd) < 1e-7


def test_grd_at_eps_zero_is_the_time_derivative_of_gd():
    w0, unravel = ravel_pytree(PARAMS)
    v = unravel(jax.random.normal(jax.random.PRNGKey(3), w0.shape, w0.dtype))
    grad = jax.grad(lambda w: jnp.mean(jax.vmap(mlp_loss, (None, 0))(unravel(w), BATCH)))
    _, minus_hv = jax.jvp(lambda w: -grad(w), (w0,), (flat(v),))  # d/dt(−∇f) along ẇ = v
    field = GRDField(mlp_loss, BATCH, jnp.asarray(0.0), "woodbury")
    dw, a = accel(field, (PARAMS, v))
    assert maxdiff(dw, v) == 0.0
    np.testing.assert_allclose(flat(a), minus_hv, rtol=1e-12, atol=1e-12)
    # Path: GRD at ε = 0 started on −∇f(w₀) (the default NGD velocity at ε = 0) is GD.
    zero = jnp.asarray(0.0)
    sol = integrate(mlp_loss, PARAMS, BATCH, flow="grd", t1=1.0, eps=zero, inverse="woodbury",
                    saveat=diffrax.SaveAt(ts=TS), **TOL)  # fmt: skip
    gd = integrate(mlp_loss, PARAMS, BATCH, flow="gd", t1=1.0, saveat=diffrax.SaveAt(ts=TS), **TOL)
    np.testing.assert_allclose(flat(sol.ys[0]), flat(gd.ys), atol=1e-8)
    # and its velocity is GD's velocity −∇f(w(t)) at every saved time.
    gd_v = -np.asarray(jax.jit(jax.vmap(grad))(vflat(gd.ys)))
    np.testing.assert_allclose(vflat(sol.ys[1]), gd_v, atol=1e-8)


def test_quadratic_model_against_closed_forms():
    A, mu, D, batch = _quad_problem()
    mbar = mu.mean(0)
    w0 = jnp.asarray(mbar + np.array([1.0, -2.0, 0.5]))
    eps = 0.7 / np.linalg.eigvalsh(D).max()
    g = np.eye(3) + eps * D
    ts = np.array([0.5, 1.0, 2.0])
    save = diffrax.SaveAt(ts=jnp.asarray(ts))
    save_dense = diffrax.SaveAt(ts=jnp.asarray(ts), dense=True)
    x0 = np.asarray(w0) - mbar
    gd_exact = np.stack([mbar + scipy.linalg.expm(-A * t) @ x0 for t in ts])
    ngd_exact = np.stack([mbar + scipy.linalg.expm(-np.linalg.solve(g, A) * t) @ x0 for t in ts])
    # GRD: H_a = A for all a, so Γ = 0 and ∂g = 0: ẅ = −Aẇ, ẇ₀ = −g⁻¹A(w₀ − μ̄).
    v0 = -np.linalg.solve(g, A @ x0)
    grd_exact = np.stack(
        [np.asarray(w0) + np.linalg.solve(A, (np.eye(3) - scipy.linalg.expm(-A * t)) @ v0)
         for t in ts]
    )  # fmt: skip
    gd = integrate(quad_loss, w0, batch, flow="gd", t1=2.0, saveat=save_dense, **TOL)
    ngd = integrate(quad_loss, w0, batch, flow="ngd", t1=2.0, eps=eps, inverse="cg", saveat=save,
                    **TOL)  # fmt: skip
    grd_sol = integrate(quad_loss, w0, batch, flow="grd", t1=2.0, eps=eps, inverse="woodbury",
                        saveat=save, **TOL)  # fmt: skip
    np.testing.assert_allclose(np.asarray(gd.ys), gd_exact, atol=1e-8)
    np.testing.assert_allclose(np.asarray(ngd.ys), ngd_exact, atol=1e-8)
    np.testing.assert_allclose(np.asarray(grd_sol.ys[0]), grd_exact, atol=1e-8)
    assert np.abs(grd_exact - ngd_exact).max() > 1e-2  # GRD ≠ NGD here (R ≠ 0)
    # Dense output (SaveAt(dense=True)) between the saved times.
    exact_07 = mbar + scipy.linalg.expm(-A * 0.7) @ x0
    np.testing.assert_allclose(np.asarray(gd.evaluate(0.7)), exact_07, atol=1e-6)


# ----------------------------------------------------------------------------- residual R


def test_residual_against_dense_oracle_and_flow_accelerations():
    w0, unravel = ravel_pytree(PARAMS)
    v = unravel(0.3 * jax.random.normal(jax.random.PRNGKey(5), w0.shape, w0.dtype))
    _, H, D_of = dense(mlp_loss, PARAMS, BATCH)
    eps = float(EPS)
    vf = flat(v)
    D = np.asarray(jax.jit(D_of)(w0))
    g = np.eye(D.shape[0]) + eps * D
    dg_half = 0.5 * eps * np.asarray(jax.jit(jax.grad(lambda w: vf @ D_of(w) @ vf))(w0))  # ½∂g
    Hv = np.asarray(H) @ vf
    R_dense = np.linalg.solve(g, Hv + dg_half) - Hv
    R = residual(mlp_loss, PARAMS, BATCH, v, eps)  # CG
    np.testing.assert_allclose(flat(R), R_dense, rtol=1e-8, atol=1e-10)
    R1 = residual(mlp_loss, PARAMS, BATCH, v, eps, form="first_order")
    np.testing.assert_allclose(flat(R1), -eps * D @ Hv + dg_half, rtol=1e-8, atol=1e-10)
    # R is the gap between the GRD and the second-order NGD accelerations at the same state.
    a_grd = accel(GRDField(mlp_loss, BATCH, EPS, "woodbury"), (PARAMS, v))[1]
    a_ngd = accel(NGD2Field(mlp_loss, BATCH, EPS, "woodbury"), (PARAMS, v))[1]
    np.testing.assert_allclose(flat(a_grd) - flat(a_ngd), R_dense, rtol=1e-8, atol=1e-10)


def test_first_order_residual_error_shrinks_like_eps_squared():
    w0, unravel = ravel_pytree(PARAMS)
    v = unravel(jax.random.normal(jax.random.PRNGKey(7), w0.shape, w0.dtype))
    cs = np.array([0.4, 0.2, 0.1, 0.05, 0.025])
    errs, norms = [], []
    for c in cs:
        eps = c * float(EPS)
        R = flat(residual(mlp_loss, PARAMS, BATCH, v, eps, inverse="woodbury"))
        R1 = flat(residual(mlp_loss, PARAMS, BATCH, v, eps, form="first_order"))
        errs.append(np.linalg.norm(R - R1))
        norms.append(np.linalg.norm(R))
    slope_err = np.polyfit(np.log(cs), np.log(errs), 1)[0]
    slope_R = np.polyfit(np.log(cs), np.log(norms), 1)[0]
    assert 1.85 < slope_err < 2.15, slope_err
    assert 0.9 < slope_R < 1.1, slope_R
    assert errs[-1] < 1e-2 * norms[-1]


def test_shared_hessian_counterexample_has_zero_christoffel_but_nonzero_residual():
    rng = np.random.default_rng(1)
    d, n = 4, 10
    M = rng.normal(size=(d, d))
    B = M @ M.T / d + 0.3 * np.eye(d)
    r = rng.normal(size=(n, d))
    batch = {"r": jnp.asarray(r)}
    loss = lambda w, ex: 0.5 * w @ (jnp.asarray(B) @ w) + ex["r"] @ w
    D = np.cov(r.T, bias=True)  # C = r_a − r̄ for every w
    w = jnp.asarray(rng.normal(size=d))
    v = jnp.asarray(rng.normal(size=d))
    eps = 0.5 / np.linalg.eigvalsh(D).max()
    gamma = grd.christoffel_contract(loss, w, batch, v, eps, kind="first")
    dg = grd.metric_derivative_contract(loss, w, batch, v, eps)
    assert float(jnp.max(jnp.abs(gamma))) < 1e-12
    assert float(jnp.max(jnp.abs(dg))) < 1e-12
    DBv = D @ B @ np.asarray(v)
    R = np.asarray(grd_residual(loss, w, batch, v, eps))
    np.testing.assert_allclose(R, -eps * np.linalg.solve(np.eye(d) + eps * D, DBv), rtol=1e-8)
    R1 = np.asarray(grd_residual(loss, w, batch, v, eps, form="first_order"))
    np.testing.assert_allclose(R1, -eps * DBv, rtol=1e-10)
    ratio = np.linalg.norm(R) / (eps * np.linalg.norm(DBv))
    assert 1 - eps * np.linalg.eigvalsh(D).max() <= ratio <= 1.0  # |g⁻¹x| ∈ [|x|/(1+ελ), |x|]
    assert np.linalg.norm(R) > 0.1 * eps * np.linalg.norm(DBv)  # R is not zero
    small = 1e-3 * eps
    R_small = np.asarray(grd_residual(loss, w, batch, v, small))
    np.testing.assert_allclose(
        np.linalg.norm(R_small) / (small * np.linalg.norm(DBv)), 1, atol=1e-3
    )


def test_compare_flows_matches_separate_solves_and_short_time_expansion():
    comp = compare_flows(mlp_loss, PARAMS, BATCH, eps=EPS, ts=TS, inverse="woodbury", **TOL)
    assert comp.result_grd == diffrax.RESULTS.successful
    save = diffrax.SaveAt(ts=TS)
    g = integrate(mlp_loss, PARAMS, BATCH, flow="grd", t1=1.0, eps=EPS, inverse="woodbury",
                  saveat=save, **TOL)  # fmt: skip
    nd = integrate(mlp_loss, PARAMS, BATCH, flow="ngd", t1=1.0, eps=EPS, inverse="woodbury",
                   saveat=save, **TOL)  # fmt: skip
    dist = np.linalg.norm(vflat(g.ys[0]) - vflat(nd.ys), axis=1)
    np.testing.assert_allclose(np.asarray(comp.distance), dist, rtol=1e-10, atol=1e-14)
    w_end, v_end = (jax.tree.map(lambda x: x[-1], t) for t in g.ys)
    R_end = residual(mlp_loss, w_end, BATCH, v_end, EPS, inverse="woodbury")
    np.testing.assert_allclose(
        float(comp.residual_norm[-1]), np.linalg.norm(flat(R_end)), rtol=1e-8
    )
    _, _, D_of = dense(mlp_loss, w_end, BATCH)
    lam = np.linalg.eigvalsh(np.asarray(jax.jit(D_of)(ravel_pytree(w_end)[0]))).max()
    np.testing.assert_allclose(float(comp.field_strength[-1]), float(EPS) * lam, rtol=1e-6)
    losses = lambda p: float(jnp.mean(jax.vmap(mlp_loss, (None, 0))(p, BATCH)))
    np.testing.assert_allclose(
        float(comp.loss_ngd[-1]), losses(jax.tree.map(lambda x: x[-1], nd.ys))
    )
    # Same w₀ and ẇ₀, accelerations differing by R₀: ‖w_GRD − w_NGD‖ = ½|R₀|t² + O(t³).
    R0 = float(comp.residual_norm[0])  # |R| at t = 0.02 ≈ |R(w₀, ẇ₀)|
    for i in (0, 1):
        t = float(TS[i])
        np.testing.assert_allclose(float(comp.distance[i]), 0.5 * R0 * t**2, rtol=0.1)


# ----------------------------------------------------------------------------- SGD as an SDE


def test_sde_diffusion_is_an_exact_square_root_of_two_over_beta_D():
    lr, b = 0.1, 4
    temp = lr / (2 * b)  # β⁻¹
    op = eqx.filter_jit(lambda f, w: f(0.0, w, None).as_matrix())(
        SGDDiffusion(mlp_loss, BATCH, temperature=jnp.asarray(temp)), PARAMS
    )  # (d, N): only materialised here, for the test
    C = np.asarray(grd.centred_grad_matrix(mlp_loss, PARAMS, BATCH))
    n = C.shape[0]
    np.testing.assert_allclose(np.asarray(op), np.sqrt(2 * temp / n) * C.T, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(op @ op.T), 2 * temp * C.T @ C / n, atol=1e-12)


def _sde_endpoints(batch, w0, keys, *, t1, dt0, lr, b):
    def one(k):
        sol = integrate(quad_loss, w0, batch, flow="sgd_sde", t1=t1, dt0=dt0, key=k, lr=lr,
                        batch_size=b)  # fmt: skip
        return sol.ys[-1], sol.result

    return jax.jit(jax.vmap(one))(keys)


def test_sde_one_step_noise_covariance_is_two_over_beta_D_dt():
    A, mu, D, batch = _quad_problem(d=3, n=8, seed=2)
    w0 = jnp.asarray(mu.mean(0) + np.array([0.5, -0.3, 0.2]))
    lr, b, h, m = 0.2, 2, 0.05, 4000
    temp = lr / (2 * b)
    ends, results = _sde_endpoints(batch, w0, jax.random.split(jax.random.PRNGKey(0), m),
                                   t1=h, dt0=h, lr=lr, b=b)  # fmt: skip
    assert bool(jnp.all(results == diffrax.RESULTS.successful))
    # One Euler–Maruyama step: Δw = −∇f(w₀) h + σ ΔW, so the noise is Δw + A(w₀ − μ̄) h.
    noise = np.asarray(ends) - np.asarray(w0) + h * A @ (np.asarray(w0) - mu.mean(0))
    target = 2 * temp * D * h
    emp = np.cov(noise.T)
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / m)
    assert np.all(np.abs(emp - target) < 5 * se), (emp, target, se)
    assert np.all(np.abs(noise.mean(0)) < 5 * np.sqrt(np.diag(target) / m))


def test_sde_stationary_covariance_matches_lyapunov():
    A0 = np.array([[2.0, 0.6], [0.6, 1.0]])
    A, mu, D, batch = _quad_problem(d=2, n=8, seed=3, A=A0)
    lr, b, h, t1, m = 0.2, 2, 0.025, 5.0, 2000  # relaxation e^{-2 λ_min(A) t1} ≈ 1e-3
    temp = lr / (2 * b)
    Q = 2 * temp * D
    sigma = scipy.linalg.solve_continuous_lyapunov(A, Q)  # AΣ + ΣA = 2β⁻¹D
    # Euler–Maruyama's own stationary covariance: Σ_h = (I − hA)Σ_h(I − hA)ᵀ + hQ (bias O(h)).
    sigma_h = scipy.linalg.solve_discrete_lyapunov(np.eye(2) - h * A, h * Q)
    w0 = jnp.asarray(mu.mean(0))
    ends, results = _sde_endpoints(batch, w0, jax.random.split(jax.random.PRNGKey(1), m),
                                   t1=t1, dt0=h, lr=lr, b=b)  # fmt: skip
    assert bool(jnp.all(results == diffrax.RESULTS.successful))
    emp = np.cov(np.asarray(ends).T)
    # Tolerance: 5 Monte Carlo standard errors of a Gaussian covariance estimate from m
    # independent paths, plus the exact O(h) discretisation bias |Σ_h − Σ|.
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / m)
    tol = 5 * se + np.abs(sigma_h - sigma)
    assert np.all(np.abs(emp - sigma) < tol), (emp, sigma, tol)
    # The test has power: isotropic noise of the same temperature gives a different answer.
    iso = temp * np.trace(D) / 2 * np.linalg.inv(A)
    assert np.any(np.abs(iso - sigma) > 3 * tol)


# ----------------------------------------------------------------------------- jit and errors


def test_integrate_compiles_once_under_jit():
    A, mu, D, batch = _quad_problem()
    traces = []

    @jax.jit
    def run(w0, batch):
        traces.append(1)  # Python side effect: runs once per trace
        sol = integrate(quad_loss, w0, batch, flow="ngd", t1=1.0, eps=0.3, inverse="woodbury",
                        **TOL)  # fmt: skip
        return sol.ys[-1]

    for shift in (1.0, -0.5, 2.0):
        w0 = jnp.asarray(mu.mean(0) + shift)
        batch2 = {"mu": batch["mu"] + shift, "A": batch["A"]}
        out = run(w0, batch2)
        g = np.eye(3) + 0.3 * D
        exact = (
            mu.mean(0)
            + shift
            + scipy.linalg.expm(-np.linalg.solve(g, A)) @ (np.asarray(w0) - mu.mean(0) - shift)
        )
        np.testing.assert_allclose(np.asarray(out), exact, atol=1e-8)
    assert len(traces) == 1
    assert run._cache_size() == 1


def test_bad_times_and_non_finite_state_raise():
    A, mu, D, batch = _quad_problem()
    w0 = jnp.asarray(mu.mean(0) + 1.0)
    with pytest.raises(ValueError, match="t1"):
        integrate(quad_loss, w0, batch, flow="gd", t1=0.0)
    with pytest.raises(ValueError, match="t1"):
        integrate(quad_loss, w0, batch, flow="gd", t0=1.0, t1=0.5)
    with pytest.raises(Exception, match="params"):
        integrate(quad_loss, w0.at[0].set(jnp.nan), batch, flow="gd", t1=1.0)
    with pytest.raises(Exception, match="v0"):
        integrate(
            quad_loss, w0, batch, flow="grd", t1=1.0, eps=0.1, v0=jnp.array([1.0, jnp.inf, 0])
        )
    with pytest.raises(ValueError, match="flow"):
        integrate(quad_loss, w0, batch, flow="adam", t1=1.0)
    with pytest.raises(ValueError, match="eps"):
        integrate(quad_loss, w0, batch, flow="grd", t1=1.0)
    with pytest.raises(ValueError, match="key"):
        integrate(quad_loss, w0, batch, flow="sgd_sde", t1=1.0, lr=0.1, batch_size=1)
    with pytest.raises(ValueError, match="v0"):
        integrate(quad_loss, w0, batch, flow="gd", t1=1.0, v0=w0)
    lam = np.linalg.eigvalsh(D).max()
    with pytest.raises(Exception, match="weak-field"):
        integrate(quad_loss, w0, batch, flow="ngd", t1=1.0, eps=2.0 / lam, inverse="weak_field")


def test_max_steps_exhausted_is_flagged_or_raised():
    A, mu, D, batch = _quad_problem()
    w0 = jnp.asarray(mu.mean(0) + 1.0)
    sol = integrate(quad_loss, w0, batch, flow="gd", t1=50.0, max_steps=3, throw=False)
    assert sol.result == diffrax.RESULTS.max_steps_reached
    with pytest.raises(Exception, match="maximum number of solver steps"):
        integrate(quad_loss, w0, batch, flow="gd", t1=50.0, max_steps=3)


def test_step_size_controller_failure_is_flagged_or_raised():
    # ẇ = w³ blows up at t = 1/(2w₀²) = 0.5: the step size collapses before t1 = 1.
    batch = {"c": jnp.ones((2,))}
    blowup = lambda w, ex: -0.25 * ex["c"] * jnp.sum(w**4)
    w0 = jnp.ones((1,))
    ctrl = diffrax.PIDController(rtol=1e-6, atol=1e-6, dtmin=1e-4, force_dtmin=False)
    sol = integrate(blowup, w0, batch, flow="gd", t1=1.0, stepsize_controller=ctrl, dt0=0.01,
                    throw=False)  # fmt: skip
    assert sol.result != diffrax.RESULTS.successful
    with pytest.raises(Exception, match="minimum step size|maximum number"):
        integrate(blowup, w0, batch, flow="gd", t1=1.0, stepsize_controller=ctrl, dt0=0.01)
