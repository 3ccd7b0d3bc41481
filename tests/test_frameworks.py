"""Real models: any params pytree (equinox, flax.nnx, flax.linen variables), batch-coupled
losses (grd.batched), aux, per-example dropout keys, the constant-loss guard.

Every reference is dense float64 autodiff of the vector of losses w ↦ (f_a(w))_a over the
differentiated leaves only: D = CᵀC/N with C the centred Jacobian; Γ_first(v, v) =
(ε/N) Σ_a (g_a − ḡ) vᵀH_a v from per-example Hessians. Agreement is to round-off: tolerances
1e-12 (a few hundred flops per entry, float64 eps ≈ 2e-16).
"""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

import grd

TOL = 1e-12
N = 8


def data(n=N, d_in=3, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return {
        "x": jax.random.normal(kx, (n, d_in), jnp.float64),
        "y": jax.random.normal(ky, (n,), jnp.float64),
    }


def dense_reference(loss, model, diff, batch, v, eps=0.3):
    """``(D v, Γ_first(v, v))`` by dense autodiff over the leaves of ``diff`` (None elsewhere)."""
    w0, unravel = ravel_pytree(diff)
    full = lambda w: eqx.combine(unravel(w), model)
    f = lambda w, ex: loss(full(w), ex)
    G = jax.vmap(jax.grad(f), (None, 0))(w0, batch)
    H = jax.vmap(jax.hessian(f), (None, 0))(w0, batch)
    C = G - G.mean(0)
    vf = ravel_pytree(v)[0]
    q = jnp.einsum("i,aij,j->a", vf, H, vf)
    return C.T @ (C @ vf) / N, eps * C.T @ (q - q.mean()) / N, C


def check_products(loss, model, diff, batch, eps=0.3):
    v = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), diff)
    dv_ref, gamma_ref, _ = dense_reference(loss, model, diff, batch, v, eps)
    dv = grd.diffusion_matvec(loss, model, batch, v)
    gamma = grd.christoffel_contract(loss, model, batch, v, eps)
    # Outputs: the differentiated leaves, None elsewhere (equinox's filter_grad convention).
    assert jax.tree_util.tree_structure(dv) == jax.tree_util.tree_structure(diff)
    np.testing.assert_allclose(ravel_pytree(dv)[0], dv_ref, atol=TOL)
    np.testing.assert_allclose(ravel_pytree(gamma)[0], gamma_ref, atol=TOL)
    # v may also be given with the full structure (its held-fixed leaves are ignored).
    v_full = eqx.combine(v, model)
    np.testing.assert_allclose(
        ravel_pytree(grd.diffusion_matvec(loss, model, batch, v_full))[0], dv_ref, atol=TOL
    )
    return dv


# ------------------------------------------------------------------------------ equinox


def test_equinox_mlp():
    """eqx.nn.MLP holds its activation (a function) as a leaf: held fixed, not an error."""
    mlp = eqx.nn.MLP(3, 1, 5, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    mlp = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, mlp)
    loss = lambda m, ex: (m(ex["x"])[0] - ex["y"]) ** 2
    diff = eqx.filter(mlp, eqx.is_inexact_array)
    dv = check_products(loss, mlp, diff, data())
    assert dv.activation is None and isinstance(eqx.combine(dv, mlp), eqx.nn.MLP)


class _WithDropout(eqx.Module):
    lin: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __call__(self, x, key=None):
        return self.drop(jnp.tanh(self.lin(x)), key=key)


def _dropout_model(inference):
    lin = eqx.nn.Linear(3, 4, key=jax.random.PRNGKey(1), dtype=jnp.float64)
    return _WithDropout(lin, eqx.nn.Dropout(0.5, inference=inference))


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_equinox_dropout_module_in_inference_mode():
    """A bool leaf (Dropout.inference) is held fixed."""
    model = _dropout_model(inference=True)
    loss = lambda m, ex: jnp.sum((m(ex["x"]) - ex["y"]) ** 2)
    check_products(loss, model, eqx.filter(model, eqx.is_inexact_array), data())


def test_dropout_with_per_example_keys():
    """grd.example_keys: each example its own dropout mask; D is the covariance of the
    gradients of those fixed draws (reference: the same keys, dense)."""
    model = _dropout_model(inference=False)
    batch = grd.example_keys(jax.random.PRNGKey(5), data())
    assert batch["key"].shape[0] == N
    loss = lambda m, ex: jnp.sum((m(ex["x"], key=ex["key"]) - ex["y"]) ** 2)
    check_products(loss, model, eqx.filter(model, eqx.is_inexact_array), batch)
    # different keys per example really give different masks (a not-trivial check)
    masks = jax.vmap(lambda k: model.drop(jnp.ones(4), key=k))(batch["key"])
    assert len({tuple(np.asarray(m)) for m in masks}) > 1
    with pytest.raises(TypeError, match="dict"):
        grd.example_keys(jax.random.PRNGKey(0), (data()["x"],))


# ------------------------------------------------------------------------------ flax.nnx


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        kw = dict(rngs=rngs, param_dtype=jnp.float64)
        self.lin = nnx.Linear(3, 4, **kw)
        self.bn = nnx.BatchNorm(4, use_running_average=True, **kw)
        self.drop = nnx.Dropout(0.2, deterministic=True, rngs=rngs)
        self.out = nnx.Linear(4, 1, **kw)

    def __call__(self, x):
        return self.out(self.drop(jnp.tanh(self.bn(self.lin(x)))))[0]


def test_nnx_module_with_rngs_and_batch_stats():
    """Only nnx.Param is differentiated: BatchStat (float), RngKey and RngCount held fixed."""
    model = _NNXNet(nnx.Rngs(0))
    model.bn.mean[...] = jnp.full((4,), 0.3)  # non-trivial running statistics (used here)
    loss = lambda m, ex: (m(ex["x"]) - ex["y"]) ** 2
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    diff = nnx.merge(graphdef, params, jax.tree.map(lambda _: None, rest))  # Params, None else
    dv = check_products(loss, model, diff, data())
    assert dv.bn.mean.get_value() is None and dv.lin.kernel[...].shape == (3, 4)
    # The functional form, nnx.split + merge over the nnx.State of the Params, agrees.
    fn = lambda p, ex: loss(nnx.merge(graphdef, p, rest), ex)
    ones = jax.tree.map(jnp.ones_like, params)
    dv2 = grd.diffusion_matvec(fn, params, data(), ones)
    dv1 = grd.diffusion_matvec(loss, model, data(), nnx.merge(graphdef, ones, rest))
    np.testing.assert_allclose(ravel_pytree(dv2)[0], ravel_pytree(dv1)[0], atol=TOL)


# ------------------------------------------------------------------------------ flax.linen


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(4, param_dtype=jnp.float64)(x)
        x = nn.BatchNorm(use_running_average=not train, param_dtype=jnp.float64)(x)
        return nn.Dense(1, param_dtype=jnp.float64)(jnp.tanh(x))[..., 0]


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_flax_variables_dict():
    """A linen variables dict: the "params" collection is differentiated, "batch_stats" not."""
    net = _LinenNet()
    batch = data()
    variables = net.init(jax.random.PRNGKey(0), batch["x"], train=False)
    variables["batch_stats"]["BatchNorm_0"]["var"] = jnp.full((4,), 2.0)
    loss = lambda vs, ex: (net.apply(vs, ex["x"][None], train=False)[0] - ex["y"]) ** 2
    diff = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda _: None, variables["batch_stats"]),
    }
    dv = check_products(loss, variables, diff, batch)
    assert dv["batch_stats"]["BatchNorm_0"]["mean"] is None


def _batchnorm_losses(net, batch_stats):
    def losses_fn(p, b):
        out, updates = net.apply(
            {"params": p, "batch_stats": batch_stats}, b["x"], train=True, mutable=["batch_stats"]
        )
        return (out - b["y"]) ** 2, updates

    return losses_fn


def test_batchnorm_through_batched():
    """BatchNorm in training mode couples the examples: grd.batched(losses_fn) gives
    D = Jᵀ(I − 11ᵀ/N)J/N with J the Jacobian of the batched forward pass."""
    net, batch = _LinenNet(), data()
    variables = net.init(jax.random.PRNGKey(0), batch["x"], train=False)
    params = variables["params"]
    losses_fn = _batchnorm_losses(net, variables["batch_stats"])
    loss = grd.batched(losses_fn, has_aux=True)
    w0, unravel = ravel_pytree(params)
    J = jax.jacrev(lambda w: losses_fn(unravel(w), batch)[0])(w0)
    C = J - J.mean(0)
    D = C.T @ C / N
    v = jax.tree.map(lambda x: jnp.sin(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params)
    vf = ravel_pytree(v)[0]
    np.testing.assert_allclose(
        ravel_pytree(grd.diffusion_matvec(loss, params, batch, v))[0], D @ vf, atol=TOL
    )
    np.testing.assert_allclose(grd.diffusion_trace(loss, params, batch), np.trace(D), rtol=1e-12)
    lam = np.linalg.eigvalsh(D)[::-1]
    np.testing.assert_allclose(
        grd.diffusion_spectrum(loss, params, batch).eigenvalues, lam[: N - 1], atol=TOL
    )
    np.testing.assert_allclose(
        grd.lambda_max(loss, params, batch, num_matvecs=N), lam[0], rtol=1e-9
    )
    np.testing.assert_allclose(grd.diffusion_matrix(loss, params, batch), D, atol=TOL)
    # metric inverse, exact (CG and Woodbury) against the dense solve
    g = np.eye(D.shape[0]) + 0.3 * D
    for method in ("cg", "woodbury"):
        x = grd.metric_inverse(loss, params, batch, v, 0.3, method=method, rtol=1e-13, atol=0)
        np.testing.assert_allclose(ravel_pytree(x)[0], np.linalg.solve(g, vf), atol=1e-10)
    # aux comes back from per_example_losses only
    losses, aux = grd.per_example_losses(loss, params, batch)
    assert losses.shape == (N,) and "batch_stats" in aux
    # chunking would change a batch-coupled loss: rejected with the reason
    with pytest.raises(ValueError, match="batch-coupled"):
        grd.diffusion_matvec(loss, params, batch, v, chunk_size=4)
    with pytest.raises(ValueError, match=r"\(N,\) vector"):
        grd.diffusion_matvec(grd.batched(lambda p, b: losses_fn(p, b)[0].mean()), params, batch, v)


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_batched_gamma_and_flow_step():
    """Γ_first(v, v) of a batched loss against per-component Hessians of the batched map, and
    one Euler step of the NGD flow against the dense (I + εD)⁻¹∇f."""
    net, batch = _LinenNet(), data()
    variables = net.init(jax.random.PRNGKey(0), batch["x"], train=False)
    params = variables["params"]
    losses_fn = _batchnorm_losses(net, variables["batch_stats"])
    loss = grd.batched(losses_fn, has_aux=True)
    w0, unravel = ravel_pytree(params)
    F = lambda w: losses_fn(unravel(w), batch)[0]
    J, Hs = jax.jacrev(F)(w0), jax.jacfwd(jax.jacrev(F))(w0)
    C = J - J.mean(0)
    v = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params)
    vf = ravel_pytree(v)[0]
    q = jnp.einsum("i,aij,j->a", vf, Hs, vf)
    gamma = grd.christoffel_contract(loss, params, batch, v, 0.3)
    np.testing.assert_allclose(ravel_pytree(gamma)[0], 0.3 * C.T @ (q - q.mean()) / N, atol=TOL)
    import diffrax

    dt = 1e-3
    sol = grd.integrate(
        loss, params, batch, flow="ngd", eps=0.3, t1=dt, dt0=dt, solver=diffrax.Euler(),
        stepsize_controller=diffrax.ConstantStepSize(),
    )  # fmt: skip
    g = np.eye(w0.size) + 0.3 * C.T @ C / N
    step = np.linalg.solve(g, J.mean(0))
    np.testing.assert_allclose(ravel_pytree(sol.ys)[0], w0 - dt * step, atol=1e-12)


# ------------------------------------------------------------------------------ optax


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_optax_step_with_equinox_module():
    """scale_by_diffusion_metric with a Module as params: updates None at held-fixed leaves,
    equal to the dense (I + εD)⁻¹ g on the differentiated ones (CG to tolerance)."""
    mlp = eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=jax.random.PRNGKey(2))
    mlp = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, mlp)
    batch = data()
    loss = lambda m, ex: (m(ex["x"])[0] - ex["y"]) ** 2
    losses = lambda m: jax.vmap(loss, (None, 0))(m, batch)
    grads = eqx.filter_grad(lambda m: losses(m).mean())(mlp)
    tx = grd.scale_by_diffusion_metric(0.3, method="cg", cg_steps=50, cg_rtol=1e-13)
    state = tx.init(mlp)
    updates, state = tx.update(grads, state, mlp, per_example_loss_fn=losses)
    assert updates.activation is None
    diff = eqx.filter(mlp, eqx.is_inexact_array)
    _, _, C = dense_reference(loss, mlp, diff, batch, diff)
    g = np.eye(C.shape[1]) + 0.3 * C.T @ C / N
    ref = np.linalg.solve(g, ravel_pytree(grads)[0])
    np.testing.assert_allclose(ravel_pytree(updates)[0], ref, atol=1e-10)
    assert isinstance(eqx.apply_updates(mlp, updates), eqx.nn.MLP)


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_optax_masked_and_multi_transform():
    """Inside optax.masked the transform sees MaskedNode leaves: a clear error, and
    grd.fill_masked makes it work with D of the unmasked leaves."""
    params = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4), "b": jnp.zeros(4), "frozen": jnp.ones(32)}
    batch = data()
    losses = lambda p: jnp.sum(
        (batch["x"] @ p["w"] + p["b"] + p["frozen"][:4] - batch["y"][:, None]) ** 2, 1
    )
    grads = jax.grad(lambda p: losses(p).mean())(params)
    mask = {"w": True, "b": True, "frozen": False}
    tx = optax.masked(
        grd.scale_by_diffusion_metric(0.3, method="cg", cg_steps=50, cg_rtol=1e-13), mask
    )
    state = tx.init(params)
    with pytest.raises(TypeError, match="fill_masked"):
        tx.update(grads, state, params, per_example_loss_fn=losses)
    upd, _ = tx.update(grads, state, params, per_example_loss_fn=grd.fill_masked(losses, params))
    sub = {"w": params["w"], "b": params["b"]}
    w0, unravel = ravel_pytree(sub)
    Jm = jax.jacrev(lambda w: losses({**unravel(w), "frozen": params["frozen"]}))(w0)
    C = Jm - Jm.mean(0)
    ref = np.linalg.solve(
        np.eye(w0.size) + 0.3 * C.T @ C / N, ravel_pytree({"w": grads["w"], "b": grads["b"]})[0]
    )
    np.testing.assert_allclose(ravel_pytree({"w": upd["w"], "b": upd["b"]})[0], ref, atol=1e-10)
    np.testing.assert_array_equal(upd["frozen"], grads["frozen"])  # masked: passed through
    tx2 = optax.multi_transform(
        {"ngd": grd.diffusion_ngd(0.1, 0.5, relative=True), "sgd": optax.sgd(0.1)},
        {"w": "ngd", "b": "ngd", "frozen": "sgd"},
    )
    upd2, _ = tx2.update(
        grads, tx2.init(params), params, per_example_loss_fn=grd.fill_masked(losses, params)
    )
    assert jax.tree.map(jnp.shape, upd2) == jax.tree.map(jnp.shape, params)


# ------------------------------------------------------------------------------ errors, guard


def test_errors_name_the_leaf():
    batch = data()
    loss = lambda p, ex: jnp.sum(p["w"]) * ex["y"]
    with pytest.raises(TypeError, match=r"\['w'\]: int"):
        grd.diffusion_trace(loss, {"w": jnp.ones(3, jnp.int32)}, batch)
    with pytest.raises(TypeError, match=r"float32 \(e.g. \['b'\]\)"):
        grd.diffusion_trace(loss, {"w": jnp.ones(3), "b": jnp.ones(3, jnp.float32)}, batch)
    with pytest.raises(TypeError, match=r"\['w'\] is complex"):
        grd.diffusion_trace(loss, {"w": jnp.ones(3, jnp.complex128)}, batch)


def test_constant_loss_guard():
    """BatchNorm (train mode) on one example at a time: every loss and gradient equal → D ≡ 0
    by construction → an error naming the cause; equal losses with different gradients
    (zero-initialised output layer) and identical examples (D = 0 genuinely) pass."""
    net, batch = _LinenNet(), data()
    variables = net.init(jax.random.PRNGKey(0), batch["x"], train=False)
    bs = variables["batch_stats"]

    def per_example(p, ex):  # a constant target: the per-example BatchNorm output is constant
        out, _ = net.apply(
            {"params": p, "batch_stats": bs}, ex["x"][None], train=True, mutable=["batch_stats"]
        )
        return (out[0] - 1.0) ** 2

    with pytest.raises(ValueError, match="grd.batched"):  # (trace and spectrum: same check)
        grd.lambda_max(per_example, variables["params"], batch)
    # zero-initialised output layer, softmax cross-entropy: every loss is log K, gradients differ
    k = 3
    params = {"w1": jax.random.normal(jax.random.PRNGKey(1), (3, 5)), "w2": jnp.zeros((5, k))}
    labels = jnp.arange(N) % k

    def ce(p, ex):
        logits = jnp.tanh(ex["x"] @ p["w1"]) @ p["w2"]
        return -jax.nn.log_softmax(logits)[ex["label"]]

    b2 = {"x": batch["x"], "label": labels}
    assert np.ptp(np.asarray(grd.per_example_losses(ce, params, b2))) == 0
    assert grd.lambda_max(ce, params, b2) > 0
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), b2)
    assert grd.diffusion_trace(ce, params, same) < 1e-20


# ------------------------------------------------------------------------------ the guide


@pytest.mark.slow  # ≈ 10–60 s of CPU: the guide and the per-framework extras
def test_guide_examples():
    """Every ```python block of docs/your_model.md runs (in order, one namespace)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "your_model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 6
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/your_model.md", "exec"), namespace)
    assert np.isfinite(float(namespace["lam"])) and np.isfinite(float(namespace["tr"]))
    assert namespace["top"].shape == (3,)


# ------------------------------------------------------------------------------ recompiles


def test_repeated_eager_calls_do_not_retrace():
    """The Python body of loss_fn runs only while JAX traces it: a counter of its calls
    counts traces. Repeated eager calls with the same loss_fn (a plain dict, an eqx Module
    as params, a batched loss) trace nothing new."""
    traces = []

    def loss(m, ex):
        traces.append(1)
        return (m(ex["x"])[0] - ex["y"]) ** 2

    mlp = eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    batch = jax.tree.map(lambda x: x.astype(jnp.float32), data())
    v = jax.tree.map(jnp.ones_like, eqx.filter(mlp, eqx.is_inexact_array))
    for fn in (
        lambda: grd.diffusion_matvec(loss, mlp, batch, v),
        lambda: grd.metric_inverse(loss, mlp, batch, v, 0.1),
        lambda: grd.christoffel_contract(loss, mlp, batch, v, 0.1),
    ):
        jax.block_until_ready(fn())
        before = len(traces)
        for _ in range(2):
            jax.block_until_ready(fn())
        assert len(traces) == before, fn
