"""Tests of grd._optim: diffusion-metric preconditioning as an optax transformation.

Oracles are dense float64 numpy: per-example gradients of a tanh regression written out by
hand, ``D = CᵀC/N``, ``g = I + εD`` and ``numpy.linalg.solve`` / ``eigvalsh``.
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from grd._optim import (
    ScaleByDiffusionMetricState,
    diffusion_ngd,
    scale_by_diffusion_metric,
)

METHODS = ["weak_field", "neumann", "cg", "woodbury"]
N, DIM = 12, 5


# ---------------------------------------------------------------------------------------------
# A small float64 problem with hand-written per-example gradients.


def make_problem(seed=0, n=N, dim=DIM):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim))
    y = rng.normal(size=n)
    params = {"w": jnp.asarray(rng.normal(size=dim) * 0.7), "b": jnp.asarray(0.1)}
    return X, y, params


def losses_fn(X, y):
    X, y = jnp.asarray(X), jnp.asarray(y)

    def losses(p):
        return 0.5 * (jnp.tanh(X @ p["w"] + p["b"]) - y) ** 2

    return losses


def numpy_per_example_grads(X, y, params):
    """``g_a`` of ``f_a = ½ (tanh(x_a·w + b) − y_a)²`` by hand, as a pytree with leading N."""
    w, b = np.asarray(params["w"]), float(params["b"])
    t = np.tanh(X @ w + b)
    r = (t - y) * (1 - t**2)
    return {"w": r[:, None] * X, "b": r}


def dense(X, y, params):
    """(G flat (N, d), mean gradient flat, D, unravel) in ravel_pytree order."""
    pg = numpy_per_example_grads(X, y, params)
    G = np.stack(
        [np.asarray(ravel_pytree({"w": pg["w"][a], "b": pg["b"][a]})[0]) for a in range(len(y))]
    )
    C = G - G.mean(0)
    D = C.T @ C / len(y)
    _, unravel = ravel_pytree(params)
    return G, G.mean(0), D, unravel


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def one_step(tx, params, grads, **extra):
    state = tx.init(params)
    return jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))(grads, state, params)


# ---------------------------------------------------------------------------------------------
# ε = 0 is SGD.


@pytest.mark.parametrize(
    "method,relative", [(m, False) for m in METHODS] + [("weak_field", True), ("cg", True)]
)
def test_eps_zero_is_sgd_step_for_step(method, relative):
    X, y, params = make_problem(1)
    tx = optax.chain(
        scale_by_diffusion_metric(0.0, method=method, relative=relative), optax.sgd(0.3)
    )
    sgd = optax.sgd(0.3)
    p1, p2 = params, params
    s1, s2 = tx.init(p1), sgd.init(p2)

    @jax.jit
    def step(p1, s1, p2, s2, Xb, yb):
        losses = losses_fn(Xb, yb)
        g1 = jax.grad(lambda p: losses(p).mean())(p1)
        g2 = jax.grad(lambda p: losses(p).mean())(p2)
        u1, s1 = tx.update(g1, s1, p1, per_example_loss_fn=losses)
        u2, s2 = sgd.update(g2, s2, p2)
        return optax.apply_updates(p1, u1), s1, optax.apply_updates(p2, u2), s2

    for k in range(4):
        idx = np.random.default_rng(k).choice(N, size=8, replace=False)
        p1, s1, p2, s2 = step(p1, s1, p2, s2, X[idx], y[idx])
        np.testing.assert_allclose(flat(p1), flat(p2), rtol=0, atol=1e-14)
    assert float(jnp.linalg.norm(flat(p1) - flat(params))) > 1e-2  # the runs did move


# ---------------------------------------------------------------------------------------------
# One step against dense numpy.


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("form", ["loss_fn", "grads"])
def test_one_step_matches_dense(method, form):
    X, y, params = make_problem(2)
    G, gbar, D, unravel = dense(X, y, params)
    lam = np.linalg.eigvalsh(D).max()
    eps, lr, K = 0.3 / lam, 0.2, 3
    d = len(gbar)
    I = np.eye(d)
    exact = np.linalg.solve(I + eps * D, gbar)
    series = {
        "weak_field": (I - eps * D) @ gbar,
        "neumann": sum(np.linalg.matrix_power(-eps * D, j) @ gbar for j in range(K + 1)),
        "cg": exact,
        "woodbury": exact,
    }[method]
    grads = unravel(jnp.asarray(gbar))
    extra = (
        {"per_example_loss_fn": losses_fn(X, y)}
        if form == "loss_fn"
        else {"per_example_grads": jax.tree.map(jnp.asarray, numpy_per_example_grads(X, y, params))}
    )
    tx = diffusion_ngd(lr, eps, method=method, num_terms=K, cg_steps=d + 2, cg_rtol=1e-12)
    updates, _ = one_step(tx, params, grads, **extra)
    got = flat(updates)
    np.testing.assert_allclose(got, -lr * series, rtol=1e-9, atol=1e-12)
    # Truncated series against the exact inverse: error ≤ (ελ)^(K+1) ‖∇f‖ (K = 1 weak field).
    order = {"weak_field": 1, "neumann": K}.get(method)
    if order is not None:
        err = np.linalg.norm(got / -lr - exact)
        bound = (eps * lam) ** (order + 1) * np.linalg.norm(gbar)
        assert err <= bound * (1 + 1e-9)
        assert err > 1e-3 * bound  # and the truncation is really there


def test_weak_field_error_is_second_order_in_eps():
    X, y, params = make_problem(3)
    _, gbar, D, unravel = dense(X, y, params)
    lam = np.linalg.eigvalsh(D).max()
    errs = []
    for c in (0.2, 0.1, 0.05):
        eps = c / lam
        exact = np.linalg.solve(np.eye(len(gbar)) + eps * D, gbar)
        upd, _ = one_step(
            scale_by_diffusion_metric(eps),
            params,
            unravel(jnp.asarray(gbar)),
            per_example_loss_fn=losses_fn(X, y),
        )
        errs.append(np.linalg.norm(flat(upd) - exact))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(3.5 < r < 4.5 for r in ratios), ratios


def test_relative_eps_uses_tracked_lambda():
    X, y, params = make_problem(4)
    _, gbar, D, unravel = dense(X, y, params)
    lam = np.linalg.eigvalsh(D).max()
    tx = scale_by_diffusion_metric(
        0.5, relative=True, method="cg", warmup_power_iters=200, cg_rtol=1e-12
    )
    upd, state = one_step(
        tx, params, unravel(jnp.asarray(gbar)), per_example_loss_fn=losses_fn(X, y)
    )
    np.testing.assert_allclose(float(state.eps), 0.5 / lam, rtol=1e-6)
    exact = np.linalg.solve(np.eye(len(gbar)) + (0.5 / lam) * D, gbar)
    np.testing.assert_allclose(flat(upd), exact, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Power iteration.


@pytest.mark.parametrize("ema_decay", [None, 0.8])
@pytest.mark.parametrize("form", ["loss_fn", "grads"])
def test_power_iteration_converges_to_eigvalsh(ema_decay, form):
    X, y, params = make_problem(5)
    _, gbar, D, unravel = dense(X, y, params)
    evals = np.linalg.eigvalsh(D)
    lam = evals.max()
    assert evals[-2] / lam < 0.9  # a spectral gap: convergence is geometric
    extra = (
        {"per_example_loss_fn": losses_fn(X, y)}
        if form == "loss_fn"
        else {"per_example_grads": jax.tree.map(jnp.asarray, numpy_per_example_grads(X, y, params))}
    )
    tx = scale_by_diffusion_metric(0.1, relative=True, warmup_power_iters=1, ema_decay=ema_decay)
    state = tx.init(params)
    grads = unravel(jnp.asarray(gbar))
    step = jax.jit(lambda s: tx.update(grads, s, params, **extra)[1])
    history = []
    for _ in range(150):
        state = step(state)
        history.append(float(state.lam_max))
    assert abs(history[0] - lam) / lam > 1e-3  # one product is not enough: the warm start is
    np.testing.assert_allclose(history[-1], lam, rtol=1e-6)
    assert all(h <= lam * (1 + 1e-9) for h in history)  # ‖D u‖ never overestimates λ_max


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_missing_extra_args():
    X, y, params = make_problem()
    tx = diffusion_ngd(0.1, 0.1)
    grads = jax.tree.map(jnp.zeros_like, params)
    with pytest.raises(ValueError, match="per_example_loss_fn.*per_example_grads"):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(ValueError, match="needs `params`"):
        tx.update(grads, tx.init(params), None, per_example_loss_fn=losses_fn(X, y))


def test_wrong_leading_axis():
    X, y, params = make_problem()
    tx = diffusion_ngd(0.1, 0.1, method="woodbury")
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    pg = jax.tree.map(jnp.asarray, numpy_per_example_grads(X, y, params))
    with pytest.raises(ValueError, match="mismatched leading axes"):
        tx.update(grads, state, params, per_example_grads={"w": pg["w"], "b": pg["b"][:-1]})
    with pytest.raises(ValueError, match=r"leaf \['w'\] has shape"):
        tx.update(grads, state, params, per_example_grads={"w": pg["w"].T, "b": pg["b"][:DIM]})
    with pytest.raises(ValueError, match="scalar"):  # the mean gradient passed by mistake
        tx.update(grads, state, params, per_example_grads=grads)
    with pytest.raises(ValueError, match=r"\(N,\) vector of per-example losses"):
        tx.update(grads, state, params, per_example_loss_fn=lambda p: losses_fn(X, y)(p).mean())
    with pytest.raises(ValueError, match="N ≥ 2"):
        tx.update(grads, state, params, per_example_loss_fn=lambda p: losses_fn(X, y)(p)[:1])


@pytest.mark.parametrize("method", ["weak_field", "neumann"])
def test_weak_field_refuses_strong_field_inside_jit(method):
    X, y, params = make_problem(6)
    _, gbar, D, unravel = dense(X, y, params)
    lam = np.linalg.eigvalsh(D).max()
    grads = unravel(jnp.asarray(gbar))
    extra = {"per_example_loss_fn": losses_fn(X, y)}
    ok = scale_by_diffusion_metric(0.5 / lam, method=method)
    upd, _ = one_step(ok, params, grads, **extra)
    assert np.all(np.isfinite(flat(upd)))
    bad = scale_by_diffusion_metric(1.5 / lam, method=method)
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(one_step(bad, params, grads, **extra))
    with pytest.raises(ValueError, match="relative eps"):
        scale_by_diffusion_metric(1.0, relative=True, method=method)
    # the exact inverses accept any ε
    upd, _ = one_step(scale_by_diffusion_metric(1.5 / lam, method="cg"), params, grads, **extra)
    assert np.all(np.isfinite(flat(upd)))


def test_bad_options():
    with pytest.raises(ValueError, match="method"):
        scale_by_diffusion_metric(0.1, method="lbfgs")
    with pytest.raises(ValueError, match="eps"):
        scale_by_diffusion_metric(-0.1)
    with pytest.raises(ValueError, match="ema_decay"):
        scale_by_diffusion_metric(0.1, ema_decay=1.0)


# ---------------------------------------------------------------------------------------------
# State, jit, inject_hyperparams, flax.


def test_state_is_arrays_and_pickles():
    X, y, params = make_problem()
    tx = diffusion_ngd(0.1, 0.5, relative=True, ema_decay=0.9)
    state = tx.init(params)
    grads = jax.grad(lambda p: losses_fn(X, y)(p).mean())(params)
    _, state = jax.jit(lambda s: tx.update(grads, s, params, per_example_loss_fn=losses_fn(X, y)))(
        state
    )
    inner = state[0]
    assert isinstance(inner, ScaleByDiffusionMetricState)
    leaves = jax.tree.leaves(state)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    back = pickle.loads(pickle.dumps(state))
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(back), leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(inner.count) == 1 and float(inner.lam_max) > 0


@pytest.mark.parametrize("method", ["weak_field", "neumann", "cg"])
def test_inject_hyperparams(method):
    X, y, params = make_problem(7)
    losses = losses_fn(X, y)
    grads = jax.grad(lambda p: losses(p).mean())(params)
    tx = optax.inject_hyperparams(diffusion_ngd)(learning_rate=0.1, eps=0.05, method=method)
    state = tx.init(params)
    step = jax.jit(lambda s, p: tx.update(grads, s, p, per_example_loss_fn=losses))
    upd, _ = step(state, params)
    ref, _ = one_step(
        diffusion_ngd(0.1, 0.05, method=method), params, grads, per_example_loss_fn=losses
    )
    np.testing.assert_allclose(flat(upd), flat(ref), rtol=1e-12)
    # change the injected values: ε = 0 and lr = 0.2 give the SGD step
    state.hyperparams["eps"] = jnp.asarray(0.0)
    state.hyperparams["learning_rate"] = jnp.asarray(0.2)
    upd, _ = step(state, params)
    np.testing.assert_allclose(flat(upd), -0.2 * flat(grads), rtol=1e-12)


def digits_setup(n_train=512):
    from grd.data import load_digits
    from grd.models.mlp import accuracy, init_mlp, mlp_classifier

    train = load_digits(n_train)
    model, loss_fn = mlp_classifier(hidden=(32,))
    params = init_mlp(model, jax.random.PRNGKey(0), 64)
    data = jax.tree.map(jnp.asarray, train)
    return model, loss_fn, params, data, accuracy


@pytest.mark.parametrize("method,eps", [("weak_field", 0.5), ("cg", 5.0)])
def test_flax_mlp_digits_scan_training(method, eps):
    model, loss_fn, params, data, accuracy = digits_setup()
    batch, steps = 64, 100
    tx = diffusion_ngd(0.3, eps, relative=True, method=method, cg_steps=5)
    per_ex = jax.vmap(loss_fn, in_axes=(None, 0))

    def full_loss(p):
        return per_ex(p, data).mean()

    @jax.jit
    def train(params, key):
        def body(carry, k):
            p, s = carry
            idx = jax.random.choice(k, data["y"].shape[0], (batch,), replace=False)
            mb = jax.tree.map(lambda x: x[idx], data)
            losses = lambda q: per_ex(q, mb)
            g = jax.grad(lambda q: losses(q).mean())(p)
            u, s = tx.update(g, s, p, per_example_loss_fn=losses)
            return (optax.apply_updates(p, u), s), (losses(p).mean(), s[0].lam_max)

        (p, s), (curve, lams) = jax.lax.scan(
            body, (params, tx.init(params)), jax.random.split(key, steps)
        )
        return p, s, curve, lams

    p, s, curve, lams = train(params, jax.random.PRNGKey(1))
    before, after = float(full_loss(params)), float(full_loss(p))
    assert after < 0.5 * before, (before, after)
    assert float(accuracy(model, p, data)) > 0.8
    assert np.all(np.isfinite(np.asarray(curve))) and np.all(np.asarray(lams) > 0)
    assert int(s[0].count) == steps


def test_nnx_optimizer_forwards_extra_args():
    from flax import nnx

    X, y, _ = make_problem(8)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(DIM, 1, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return jnp.tanh(self.lin(x))[..., 0]

    model = Net(nnx.Rngs(0))
    graphdef, state0 = nnx.split(model, nnx.Param)
    tx = diffusion_ngd(0.1, 0.5, relative=True)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def per_example_loss_fn(param_state):  # receives the pure State of the `wrt` variables
        m = nnx.merge(graphdef, param_state)
        return 0.5 * (m(Xj) - yj) ** 2

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: (0.5 * (m(Xj) - yj) ** 2).mean())(model)
        opt.update(model, grads, per_example_loss_fn=per_example_loss_fn)

    # reference: the same transformation on the pure parameter pytree
    p = nnx.as_pure(state0)
    ref_state = tx.init(p)
    g = jax.grad(lambda q: per_example_loss_fn(q).mean())(p)
    u, _ = tx.update(g, ref_state, p, per_example_loss_fn=per_example_loss_fn)
    expected = optax.apply_updates(p, u)
    step(model, opt)
    got = nnx.as_pure(nnx.state(model, nnx.Param))
    np.testing.assert_allclose(flat(got), flat(expected), rtol=1e-10)
    assert float(jnp.linalg.norm(flat(got) - flat(p))) > 1e-4


def test_train_state_pattern():
    """TrainState.apply_gradients cannot forward extra args: call tx.update and replace."""
    from flax.training import train_state

    X, y, params = make_problem(9)
    losses = losses_fn(X, y)
    tx = diffusion_ngd(0.1, 0.2, relative=True, method="woodbury")
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    with pytest.raises(ValueError, match="per_example_loss_fn"):
        ts.apply_gradients(grads=jax.grad(lambda p: losses(p).mean())(params))

    @jax.jit
    def step(ts):
        g = jax.grad(lambda p: losses(p).mean())(ts.params)
        u, opt_state = ts.tx.update(g, ts.opt_state, ts.params, per_example_loss_fn=losses)
        return ts.replace(
            step=ts.step + 1, params=optax.apply_updates(ts.params, u), opt_state=opt_state
        )

    for _ in range(20):
        ts = step(ts)
    assert float(losses(ts.params).mean()) < float(losses(params).mean())
    assert int(ts.step) == 20


def test_cg_float32_large_d_matches_woodbury():
    """CG stays finite and exact in float32 for d = 10⁵ (lineax's CG returns NaN there)."""
    rng = np.random.default_rng(10)
    n, d = 8, 100_000
    X = jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d), jnp.float32)
    y = jnp.asarray(rng.normal(size=n), jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=d), jnp.float32)}
    losses = lambda p: 0.5 * (X @ p["w"] - y) ** 2  # noqa: E731
    grads = jax.grad(lambda p: losses(p).mean())(params)
    pg = {"w": (X @ params["w"] - y)[:, None] * X}
    outs = {}
    for method, extra in (
        ("cg", {"per_example_loss_fn": losses}),
        ("woodbury", {"per_example_grads": pg}),
    ):
        tx = scale_by_diffusion_metric(
            10.0, relative=True, method=method, cg_steps=20, cg_rtol=1e-6
        )
        outs[method], state = one_step(tx, params, grads, **extra)
    a, b = flat(outs["cg"]), flat(outs["woodbury"])
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    assert np.linalg.norm(a - flat(grads)) > 0.1 * np.linalg.norm(flat(grads))  # not the identity
