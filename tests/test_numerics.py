"""Issue 15, numerics: relative CG tolerances, the certified weak-field bound, scalars that
follow the params' dtype, and in-graph errors that read message first.

Oracles are dense float64 solves built from the same (possibly float32-rounded) inputs.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat, random_like, tiny_mlp_problem

import grd

SCALES = [10.0**k for k in range(-12, 7)]  # ‖v‖ over 18 orders of magnitude


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)


def _up(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _scaled(tree, s, dtype):
    return jax.tree_util.tree_map(lambda x: x * jnp.asarray(s, dtype), tree)


def _rel(x, ref):
    return np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref)


@pytest.fixture(scope="module", params=["float64", "float32"])
def problem(request):
    dtype = jnp.dtype(request.param)
    loss_fn, p64, b64 = tiny_mlp_problem()
    params, batch = _cast(p64, dtype), _cast(b64, dtype)
    # The reference D is built in float64 from the same rounded inputs.
    D = np.asarray(grd.diffusion_matrix(loss_fn, _up(params), _up(batch)))
    eps = 2.0 / np.linalg.eigvalsh(D).max()  # κ(g) = 3
    G = np.eye(len(D)) + eps * D
    # CG error ≤ κ·rtol plus round-off of the products: κ·1e-11 + O(N·eps64) in float64;
    # in float32 rtol = 8·eps32 = 9.5e-7, so κ·rtol ≈ 3e-6, with a ×4 margin for the
    # products' own float32 round-off (measured: 7e-12 and 2e-7).
    tol = 1e-10 if dtype == jnp.float64 else 1.2e-5
    return loss_fn, params, batch, float(eps), G, dtype, tol


def test_cg_relative_accuracy_over_18_orders(problem):
    """metric_inverse and DiffusionMetric.inverse (CG, default tolerances): the same
    relative error for ‖v‖ = 1e-12 … 1e6 (the old atol = 1e-6 returned 0 below ‖v‖ ≈ 1e-6)."""
    loss_fn, params, batch, eps, G, dtype, tol = problem
    u = random_like(params)
    metric = grd.DiffusionMetric(loss_fn, batch, eps)
    errs = []
    for s in SCALES:
        v = _scaled(u, s, dtype)
        ref = np.linalg.solve(G, flat(v).astype(np.float64))
        x = grd.metric_inverse(loss_fn, params, batch, v, eps)
        y = metric.inverse(params, v)
        assert flat(x).dtype == dtype
        errs.append(max(_rel(flat(x), ref), _rel(flat(y), ref)))
    assert max(errs) < tol, dict(zip(SCALES, errs, strict=True))
    # v = 0 → exactly 0 (no division by ‖v‖ = 0, no NaN), in zero CG iterations.
    zero = _scaled(u, 0.0, dtype)
    x, info = grd.metric_inverse(loss_fn, params, batch, zero, eps, return_info=True)
    assert np.all(flat(x) == 0) and int(info.num_steps) == 0


@pytest.mark.slow
def test_christoffel_second_and_flows_relative(problem):
    """Γ² = g⁻¹Γ_first and the NGD velocity −g⁻¹∇f stay accurate when their right-hand
    sides are tiny or huge (Γ_first(v, v) ∝ ‖v‖²; the loss scaled by c scales ∇f by c and
    D by c², so ε/c² keeps g)."""
    loss_fn, params, batch, eps, G, dtype, tol = problem
    u = random_like(params)
    errs = []
    for s in (1e-6, 1e-3, 1.0, 1e3):  # ‖Γ_first‖ from ≈ 1e-12 to 1e6
        v = _scaled(u, s, dtype)
        first = flat(grd.christoffel_contract(loss_fn, params, batch, v, eps))
        second = grd.christoffel_contract(loss_fn, params, batch, v, eps, kind="second")
        errs.append(_rel(flat(second), np.linalg.solve(G, first.astype(np.float64))))
    zero = _scaled(u, 0.0, dtype)
    assert np.all(
        flat(grd.christoffel_contract(loss_fn, params, batch, zero, eps, kind="second")) == 0
    )
    scaled = lambda p, ex: ex["c"] * loss_fn(p, ex)  # one compiled field for every scale c
    n = batch["x"].shape[0]
    for c in (1e-8, 1.0, 1e4):
        b = {**batch, "c": jnp.full((n,), c, dtype)}
        grad = jax.grad(lambda p, b=b: jnp.mean(jax.vmap(scaled, (None, 0))(p, b)))(params)
        vel = grd.ngd_velocity(scaled, params, b, eps / c**2)
        errs.append(_rel(flat(vel), -np.linalg.solve(G, flat(grad).astype(np.float64))))
    assert max(errs) < tol, errs


@pytest.mark.slow
def test_optax_cg_relative(problem):
    """diffusion_ngd(method='cg'): the default cg_rtol is relative (tiny gradients too)."""
    loss_fn, params, batch, eps, G, dtype, tol = problem
    grads_ex = grd.per_example_grads(loss_fn, params, batch)
    tx = grd.scale_by_diffusion_metric(eps, method="cg", cg_steps=50)
    state = tx.init(params)
    step = jax.jit(lambda g, s: tx.update(g, s, params, per_example_grads=grads_ex))
    u = random_like(params)
    errs = []
    for s in (1e-12, 1e-6, 1.0, 1e6):
        g = _scaled(u, s, dtype)
        out, _ = step(g, state)
        errs.append(_rel(flat(out), np.linalg.solve(G, flat(g).astype(np.float64))))
    assert max(errs) < tol, errs


# --------------------------------------------------------------------------------------------
# The weak-field bound.


@pytest.fixture(scope="module")
def dense_spectrum():
    """D with 60 eigenvalues spread evenly over [0.02, 1] (a linear per-example loss
    ``x_a·w``, so D = Cov(x) exactly): a 10-step Lanczos cannot resolve the top one."""
    d, n = 60, 61
    rng = np.random.default_rng(0)
    lams = np.linspace(0.02, 1.0, d)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, d))]))
    X = np.sqrt(n) * (Q[:, 1:] * np.sqrt(lams)) @ U.T  # centred columns: D = U Λ Uᵀ
    return (lambda w, ex: ex @ w), jnp.zeros(d), jnp.asarray(X), 1.0


def test_lanczos_underestimate_is_refused(dense_spectrum):
    """The old check (ε·θ < 1 with θ the 10-step Lanczos estimate) passes a field strength
    above 1; the certified bound refuses it, eagerly and under jax.jit."""
    loss_fn, w, batch, lam = dense_spectrum
    theta10 = float(grd.lambda_max(loss_fn, w, batch, num_matvecs=10))
    assert theta10 < 0.998 * lam  # the construction: Lanczos underestimates (measured 0.990)
    eps = 0.999 / theta10  # ε·θ₁₀ = 0.999 < 1, but ε·λ_max ≥ 1.001
    v = jnp.ones_like(w)
    old = grd.metric_inverse(loss_fn, w, batch, v, eps, method="weak_field", lam_max=theta10)
    assert np.all(np.isfinite(flat(old)))  # the old, lenient check lets it through
    bound = float(grd.lambda_max_upper_bound(loss_fn, w, batch))
    assert lam <= bound <= float(grd.diffusion_trace(loss_fn, w, batch)) * (1 + 1e-12)
    with pytest.raises(Exception, match="eps·λ_max < 1") as err:
        grd.metric_inverse(loss_fn, w, batch, v, eps, method="weak_field")
    assert str(err.value).splitlines()[0].startswith("`eps` is too large")
    f = jax.jit(
        lambda e: grd.christoffel_contract(
            loss_fn, w, batch, v, e, kind="second", inverse="neumann"
        )
    )
    with pytest.raises(Exception, match="eps·λ_max < 1"):  # under jax.jit, Neumann too
        jax.block_until_ready(f(eps))


@pytest.mark.slow
def test_upper_bound_is_tight_at_low_rank():
    """N ≤ num_matvecs: Lanczos spans the whole range of D and the bound is λ_max."""
    loss_fn, params, batch = tiny_mlp_problem()
    lam = np.linalg.eigvalsh(np.asarray(grd.diffusion_matrix(loss_fn, params, batch))).max()
    bound = jax.jit(lambda k: grd.lambda_max_upper_bound(loss_fn, params, batch, key=k))
    for seed in range(2):
        assert lam <= float(bound(jax.random.PRNGKey(seed))) <= lam * (1 + 1e-9)


def _growing_problem():
    """f_a(w) = b_a w₁ w₂ − w₂ with b = ±1: D = [w₂, w₁][w₂, w₁]ᵀ (λ_max = |w|²) and the
    weak-field NGD flow from (0, ½) is ẇ = (0, 1): ε·λ_max = (½ + t)² crosses 1 at t = ½."""
    loss_fn = lambda w, b: b * w[0] * w[1] - w[1]
    return loss_fn, jnp.array([0.0, 0.5]), jnp.array([1.0, -1.0, 1.0, -1.0])


def test_flow_checks_every_accepted_step():
    loss_fn, w0, batch = _growing_problem()
    kw = dict(flow="ngd", eps=1.0, inverse="weak_field", t1=2.0)
    with pytest.raises(Exception, match="along the path") as err:
        jax.block_until_ready(grd.integrate(loss_fn, w0, batch, **kw).ys)
    assert str(err.value).splitlines()[0].startswith("`eps` is too large")
    sol = grd.integrate(loss_fn, w0, batch, throw=False, **kw)
    assert bool(sol.event_mask)
    # Stopped at the first accepted step past t = ½ (the exact path is w = (0, ½ + t)).
    t_stop, w_stop = float(sol.ts[-1]), np.asarray(sol.ys[-1])
    assert 0.5 <= t_stop < 2.0
    np.testing.assert_allclose(w_stop, [0.0, 0.5 + t_stop], atol=1e-7)


@pytest.mark.slow
def test_optax_certified_with_per_example_grads():
    """With per_example_grads the optax check uses λ_max of the Gram matrix, not the
    one-product power estimate (a lower bound that lets ε·λ_max > 1 through)."""
    loss_fn, params, batch = tiny_mlp_problem()
    grads_ex = grd.per_example_grads(loss_fn, params, batch)
    lam = np.linalg.eigvalsh(np.asarray(grd.diffusion_matrix(loss_fn, params, batch))).max()
    g = random_like(params)
    tx = grd.scale_by_diffusion_metric(1.2 / lam, method="weak_field", warmup_power_iters=1)
    state = tx.init(params)
    power = grd.diffusion_matvec(loss_fn, params, batch, state.power_vector)
    assert 1.2 / lam * np.linalg.norm(flat(power)) < 1  # the power estimate alone would pass
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(tx.update(g, state, params, per_example_grads=grads_ex))


# --------------------------------------------------------------------------------------------
# Scalars follow the params' dtype.


def _public_calls(loss_fn, p, b, v, eps, key):
    """Every public function of grd that takes a float scalar (ε, λ_max, tolerances, times,
    learning rates), called with scalars of the kind of ``eps``: name → thunk."""
    sc = (lambda x: jnp.asarray(x, eps.dtype)) if isinstance(eps, jax.Array) else type(eps)
    out = {
        "metric_apply": lambda: grd.metric_apply(loss_fn, p, b, v, eps),
        "metric_inverse_cg": lambda: grd.metric_inverse(
            loss_fn, p, b, v, eps, method="cg", rtol=sc(1e-5), atol=sc(0.0)
        ),
        "metric_inverse_weak": lambda: grd.metric_inverse(
            loss_fn, p, b, v, eps, method="weak_field", lam_max=sc(0.1)
        ),
        "DiffusionMetric": lambda: grd.DiffusionMetric(loss_fn, b, eps).inverse(
            p, v, method="neumann"
        ),
        "christoffel_first": lambda: grd.christoffel_contract(loss_fn, p, b, v, eps),
        "christoffel_second": lambda: grd.christoffel_contract(
            loss_fn, p, b, v, eps, kind="second"
        ),
        "metric_derivative": lambda: grd.metric_derivative_contract(loss_fn, p, b, v, eps),
        "christoffel_symbols": lambda: grd.christoffel_symbols(loss_fn, p, b, eps, kind="second"),
        "grd_residual": lambda: grd.grd_residual(loss_fn, p, b, v, eps),
        "ngd_velocity": lambda: grd.ngd_velocity(loss_fn, p, b, eps),
        "flow_field": lambda: grd.flow_field(loss_fn, b, flow="grd", eps=eps)(0.0, (p, v), None),
        "integrate": lambda: grd.integrate(
            loss_fn, p, b, flow="ngd", eps=eps, t0=sc(0.0), t1=sc(0.02), dt0=sc(0.01),
            stepsize_controller=diffrax.ConstantStepSize(),
        ).ys,
        "integrate_sde": lambda: grd.integrate(
            loss_fn, p, b, flow="sgd_sde", t1=sc(0.02), lr=sc(0.01), batch_size=2, key=key
        ).ys,
        "conjugate_gradients": lambda: grd.conjugate_gradients(
            lambda x: jax.tree_util.tree_map(lambda a: 2 * a, x), v, rtol=sc(1e-5)
        )[0],
    }  # fmt: skip
    losses = lambda q: jax.vmap(loss_fn, (None, 0))(q, b)
    tx = grd.diffusion_ngd(sc(0.1), eps, method="cg", cg_rtol=sc(1e-5))
    out["diffusion_ngd"] = lambda: tx.update(v, tx.init(p), p, per_example_loss_fn=losses)[0]
    return out


# The calls that crashed in issue 15 (while_loop carry / jvp dtype clash), and optax.
ISSUE_CALLS = (
    "metric_inverse_cg", "ngd_velocity", "christoffel_second", "grd_residual", "flow_field",
    "diffusion_ngd",
)  # fmt: skip


def _check_scalars_follow_params(kinds, reference: bool, names=None):
    loss_fn, p64, b64 = tiny_mlp_problem(n=4, d_in=2, hidden=2, out=1)
    p, b = _cast(p64, jnp.float32), _cast(b64, jnp.float32)
    v = random_like(p)
    D = np.asarray(grd.diffusion_matrix(loss_fn, _up(p), _up(b)))
    eps64 = 0.5 / np.linalg.eigvalsh(D).max()  # a NumPy float64, as in the issue
    key = jax.random.PRNGKey(0)
    ref = _public_calls(loss_fn, p, b, v, float(eps64), key) if reference else None
    for kind in kinds:
        got = _public_calls(loss_fn, p, b, v, kind(eps64), key)
        for name, thunk in got.items():
            if names is not None and name not in names:
                continue
            tree = thunk()
            ref_leaves = jax.tree_util.tree_leaves(ref[name]()) if ref is not None else None
            for i, a in enumerate(jax.tree_util.tree_leaves(tree)):
                assert a.dtype == jnp.float32, (name, kind, a.dtype)
                assert np.all(np.isfinite(np.asarray(a))), (name, kind)
                if ref is not None:  # the same float32 computation, ε rounded to float32
                    r = ref_leaves[i]
                    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6, err_msg=name)


def test_scalars_follow_params_x64_on():
    """x64 on, float32 params, NumPy float64 scalars: the calls that crashed run and return
    float32 (every public function, every scalar kind, x64 off: the slow test below)."""
    assert jax.config.jax_enable_x64
    _check_scalars_follow_params([np.float64], reference=False, names=ISSUE_CALLS)


@pytest.mark.slow
def test_scalars_follow_params_every_kind_x64_on_and_off():
    """Python / NumPy float32 / NumPy float64 / JAX float64 scalars give the float32 result
    of a Python float, with x64 on and off."""
    kinds = [np.float64, np.float32, lambda x: jnp.asarray(x, jnp.float64)]
    _check_scalars_follow_params(kinds, reference=True)
    with jax.enable_x64(False):
        _check_scalars_follow_params([np.float64, np.float32], reference=True)


# --------------------------------------------------------------------------------------------
# Errors raised inside compiled code.


def test_errors_read_message_first():
    """Eager calls: the first line of the error is grd's message naming the argument and
    the fix. Under the user's jax.jit / eqx.filter_jit the wrapping is JAX's / equinox's
    (raised after grd has returned): grd's message is the whole first line after it."""
    loss_fn, params, batch = tiny_mlp_problem()
    v = random_like(params)
    bad = jax.tree_util.tree_map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), params)
    expected = "`params` contains NaN or inf; clean or mask the input."
    with pytest.raises(eqx.EquinoxRuntimeError) as err:
        grd.metric_inverse(loss_fn, bad, batch, v, 0.1)
    assert str(err.value).splitlines()[0] == expected
    with pytest.raises(eqx.EquinoxRuntimeError) as err:
        grd.metric_inverse(loss_fn, params, batch, v, 0.1, max_steps=1)
    assert str(err.value).splitlines()[0].startswith("conjugate gradients did not converge")
    assert "raise `max_steps`" in str(err.value).splitlines()[0]
    with pytest.raises(ValueError) as err:
        grd.metric_apply(loss_fn, params, batch, v, jnp.asarray(-1.0))
    assert str(err.value).splitlines()[0].startswith("`eps` must be a finite number ≥ 0")

    f = lambda p: grd.christoffel_contract(loss_fn, p, batch, v, 0.1)
    with pytest.raises(jax.errors.JaxRuntimeError) as err:
        jax.block_until_ready(jax.jit(f)(bad))
    lines = str(err.value).splitlines()
    first = next(x for x in lines if "RuntimeError: " in x)
    assert first.split("RuntimeError: ", 1)[1] == expected
    with pytest.raises(eqx.EquinoxRuntimeError) as err:
        jax.block_until_ready(eqx.filter_jit(f)(bad))
    lines = str(err.value).splitlines()
    assert next(x for x in lines if "RuntimeError: " in x).endswith(expected)
