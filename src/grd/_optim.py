"""Natural-gradient descent in the diffusion metric, as optax gradient transformations.

``scale_by_diffusion_metric`` preconditions the incoming updates (a mean minibatch gradient)
by the inverse of the diffusion metric ``g = I + ε D`` of the current minibatch (theory §3);
``diffusion_ngd`` chains it with a learning-rate scale. The per-example information arrives
as an optax *extra argument* of ``update``:

* ``per_example_loss_fn``: ``params ↦ (f_1(w), …, f_N(w))``, the ``(N,)`` vector of
  per-example losses of the current minibatch (matrix-free path). Then
  ``D v = Cov_a(g_a, g_a·v) = ∇_w [(1/N) Σ_a (s_a − s̄) f_a(w)]`` with ``s = J v`` (one JVP)
  and the centred weights held fixed (one VJP); the map is linearised once per step and every
  product of the step reuses the linearisation.
* ``per_example_grads``: the per-example gradients, a pytree with the structure of ``params``
  and a leading axis N (the Woodbury path; ``D v = Cᵀ(C v)/N`` from the centred matrix C).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optax.tree as otu

from . import _validation as val
from ._metric import (
    centred_matrix_from_grads,
    conjugate_gradients,
    neumann_inverse,
    woodbury_inverse,
)
from ._params import optax_inputs, optax_loss_shape, split_params
from ._primitives import centred
from ._tree import tree_ravel

InverseMethod = Literal["weak_field", "neumann", "cg", "woodbury"]
_METHODS = ("weak_field", "neumann", "cg", "woodbury")
_EXTRA_ARGS = "`per_example_loss_fn` (params ↦ (N,) per-example losses) or `per_example_grads`"


class ScaleByDiffusionMetricState(NamedTuple):
    """State of :func:`scale_by_diffusion_metric` (arrays only: checkpointable, shardable).

    Attributes:
      count: number of updates done (int32 scalar).
      power_vector: unit vector of the warm-started power iteration (structure of params).
      dv_average: the (bias-uncorrected) exponential moving average of the power-iteration
        products ``D_t u_t`` (the last product itself when ``ema_decay`` is None).
      lam_max: the current estimate of λ_max(D).
      eps: the ε used at the last step (``c / λ̂_max`` when relative).
      inverse_steps: iterations of the last inverse (CG steps; Neumann terms; 1 otherwise).
    """

    count: jax.Array
    power_vector: optax.Updates
    dv_average: optax.Updates
    lam_max: jax.Array
    eps: jax.Array
    inverse_steps: jax.Array


# --------------------------------------------------------------------------------------------
# The diffusion product from the extra arguments.


def _check_loss_fn_output(per_example_loss_fn, params):
    out = optax_loss_shape(per_example_loss_fn, params)
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(
            "`per_example_loss_fn(params)` must return the (N,) vector of per-example losses "
            f"of the minibatch (leading axis N, no other axis); got shape {shape}. Do not "
            "average the losses: the metric needs each example's loss."
        )
    if shape[0] < 2:
        raise ValueError(
            f"`per_example_loss_fn(params)` returned N = {shape[0]} losses; the diffusion "
            "matrix is a covariance over examples and needs N ≥ 2."
        )
    return shape[0]


def _check_per_example_grads(per_example_grads, params):
    n = val.batch_size(per_example_grads, name="per_example_grads", min_size=2)
    sg, sp = jax.tree_util.tree_structure(per_example_grads), jax.tree_util.tree_structure(params)
    if sg != sp:
        raise ValueError(
            f"`per_example_grads` must have the pytree structure of `params`; got {sg}, "
            f"expected {sp}."
        )
    for (path, g), p in zip(
        jax.tree_util.tree_flatten_with_path(per_example_grads)[0],
        jax.tree_util.tree_leaves(params),
        strict=True,
    ):
        if jnp.shape(g) != (n,) + jnp.shape(p):
            raise ValueError(
                f"`per_example_grads` leaf {jax.tree_util.keystr(path)} has shape "
                f"{jnp.shape(g)}; expected (N,) + the parameter's shape = {(n,) + jnp.shape(p)} "
                "(a leading example axis N on every leaf)."
            )
    return n


def _loss_fn_matvec(per_example_loss_fn, params):
    """``v ↦ D v`` from the vector map ``w ↦ (f_a(w))_a``, linearised once at ``params``.

    ``D v = Jᵀ centred(J v)``: one JVP (``s = J v``) and one transposed product with the
    centred weights ``(s − s̄)/N`` (theory §2).
    """
    _, jvp_fn = jax.linearize(per_example_loss_fn, params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)

    def matvec(v):
        s = jvp_fn(v)
        return vjp_fn(centred(s).astype(s.dtype))[0]

    return matvec


def _grads_matvec(C, unravel):
    n = C.shape[0]

    def matvec(v):
        return unravel(C.T @ (C @ tree_ravel(v)[0]) / n)

    return matvec


# --------------------------------------------------------------------------------------------
# The transformation.


def scale_by_diffusion_metric(
    eps=0.1,
    *,
    relative: bool = False,
    method: InverseMethod = "weak_field",
    num_terms: int = 4,
    cg_steps: int = 10,
    cg_rtol: float | None = None,
    power_iters: int = 1,
    warmup_power_iters: int = 10,
    ema_decay: float | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """Precondition updates by the inverse diffusion metric ``(I + ε D)⁻¹``.

    The building block of :func:`diffusion_ngd`: see there for the algorithm, the arguments
    and the extra arguments of ``update``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    eps_value = eps if isinstance(eps, int | float) else None  # known before tracing
    eps = val.check_eps(eps)
    if ema_decay is not None and isinstance(ema_decay, int | float) and not 0 <= ema_decay < 1:
        raise ValueError(f"`ema_decay` must be in [0, 1) or None; got {ema_decay}.")
    for name, value in (
        ("num_terms", num_terms),
        ("cg_steps", cg_steps),
        ("power_iters", power_iters),
        ("warmup_power_iters", warmup_power_iters),
    ):
        if isinstance(value, int) and value < 1:
            raise ValueError(f"`{name}` must be an integer ≥ 1; got {value}.")
    weak = method in ("weak_field", "neumann")
    if weak and relative and eps_value is not None and eps_value >= 1:
        raise ValueError(
            f"method={method!r} needs ε·λ_max < 1, but relative eps = {eps_value} sets ε·λ_max = "
            f"{eps_value}. "
            "Use eps < 1 or an exact inverse (method='cg' or 'woodbury')."
        )

    def init_fn(params):
        params = split_params(params)[0]  # the differentiated leaves (None elsewhere)
        flat, unravel = tree_ravel(params)
        u = jax.random.normal(jax.random.PRNGKey(seed), flat.shape, flat.dtype)
        u = unravel(u / jnp.linalg.norm(u))
        return ScaleByDiffusionMetricState(
            count=jnp.zeros([], jnp.int32),
            power_vector=u,
            dv_average=otu.zeros_like(params),
            lam_max=jnp.zeros([], flat.dtype),
            eps=jnp.zeros([], flat.dtype),
            inverse_steps=jnp.zeros([], jnp.int32),
        )

    def update_fn(
        updates,
        state,
        params=None,
        *,
        per_example_loss_fn=None,
        per_example_grads=None,
        **extra_args,
    ):
        del extra_args
        if params is None:
            raise ValueError(
                "scale_by_diffusion_metric needs `params` in update(updates, state, params, ...)"
                ": the diffusion matrix is evaluated at the current parameters."
            )
        if per_example_loss_fn is None and per_example_grads is None:
            raise ValueError(
                f"scale_by_diffusion_metric.update needs the extra argument {_EXTRA_ARGS}; "
                "got neither. Pass it through the chain: "
                "tx.update(grads, state, params, per_example_loss_fn=fn)."
            )
        per_example_loss_fn, params, updates, per_example_grads, restore = optax_inputs(
            per_example_loss_fn, params, updates, per_example_grads
        )
        val.same_structure(updates, params, name="updates")
        flat_g, unravel = tree_ravel(updates)
        dtype = flat_g.dtype

        C = None
        if per_example_grads is not None:
            _check_per_example_grads(per_example_grads, params)
            C = centred_matrix_from_grads(per_example_grads)
        elif method == "woodbury":
            _check_loss_fn_output(per_example_loss_fn, params)
            C = centred_matrix_from_grads(jax.jacrev(per_example_loss_fn)(params))
        else:
            _check_loss_fn_output(per_example_loss_fn, params)
        if C is not None:
            C = C.astype(dtype)
            Dv = _grads_matvec(C, unravel)
        else:
            Dv = _loss_fn_matvec(per_example_loss_fn, params)

        # Warm-started power iteration: `power_iters` products per step (more on step 0).
        iters = jnp.where(state.count == 0, warmup_power_iters, power_iters)

        def normalise(p, fallback):
            nrm = otu.norm(p)
            safe = jnp.where(nrm > 0, nrm, 1.0)
            return jax.tree.map(lambda a, b: jnp.where(nrm > 0, a / safe, b), p, fallback)

        u = jax.lax.fori_loop(1, iters, lambda _, u: normalise(Dv(u), u), state.power_vector)
        # The last power product shares one (vmapped) pass with D·g for the series inverses.
        if weak:
            both = jax.vmap(Dv)(jax.tree.map(lambda a, b: jnp.stack([a, b]), u, updates))
            p = jax.tree.map(lambda x: x[0], both)
            Dg = jax.tree.map(lambda x: x[1], both)
        else:
            p, Dg = Dv(u), None
        count = state.count + 1
        if ema_decay is None:
            avg = p
            avg_hat = p
        else:
            beta = jnp.asarray(ema_decay, dtype)
            avg = otu.add_scale(otu.scale(beta, state.dv_average), 1 - beta, p)
            avg_hat = otu.scale(1 / (1 - beta ** count.astype(dtype)), avg)
        lam = otu.norm(avg_hat).astype(dtype)
        u_next = normalise(avg_hat, u)

        eps_in = jnp.asarray(eps, dtype)
        if relative:
            eps_t = jnp.where(lam > 0, eps_in / jnp.where(lam > 0, lam, 1.0), 0.0)
            strength = eps_in
        else:
            eps_t = eps_in
            strength = eps_in * lam
        if weak and C is not None:
            # Certified: λ_max(D) = λ_max(C Cᵀ/N), the N×N Gram matrix (O(N²d + N³)), with a
            # round-off margin 4·N·eps; the power iteration's λ̂ is only a lower bound.
            gram_top = jnp.linalg.eigvalsh(C @ C.T / C.shape[0])[-1]
            lam_cert = gram_top * (1 + 4 * C.shape[0] * jnp.finfo(dtype).eps)
            strength = eps_t * jnp.maximum(lam_cert, lam)
        if weak and val.CHECKS_ENABLED:
            name = "weak-field" if method == "weak_field" else "Neumann"
            eps_t = eqx.error_if(
                eps_t,
                ~(strength < 1),
                f"`eps` is too large for scale_by_diffusion_metric(method={method!r}): the "
                f"{name} inverse needs eps·λ_max < 1 and got eps·λ_max ≥ 1. Use a smaller "
                "`eps` (or relative=True with eps < 1) or method='cg'/'woodbury'.",
            )

        if method == "weak_field":
            out = otu.add_scale(updates, -eps_t, Dg)
            steps = jnp.asarray(1, jnp.int32)
        elif method == "neumann":
            out = neumann_inverse(Dv, updates, eps_t, num_terms, first_product=Dg)
            steps = jnp.asarray(num_terms, jnp.int32)
        elif method == "cg":
            out, steps = conjugate_gradients(
                lambda x: otu.add_scale(x, eps_t, Dv(x)),
                updates,
                rtol=cg_rtol,
                max_steps=cg_steps,
                throw=False,  # a fixed per-step budget: the iteration count is in the state
            )
        else:  # woodbury
            out = unravel(woodbury_inverse(C, flat_g, eps_t))
            steps = jnp.asarray(1, jnp.int32)

        new_state = ScaleByDiffusionMetricState(
            count=count,
            power_vector=u_next,
            dv_average=avg,
            lam_max=lam,
            eps=eps_t,
            inverse_steps=steps,
        )
        return restore(out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def diffusion_ngd(
    learning_rate,
    eps=0.1,
    *,
    relative: bool = False,
    method: InverseMethod = "weak_field",
    num_terms: int = 4,
    cg_steps: int = 10,
    cg_rtol: float | None = None,
    power_iters: int = 1,
    warmup_power_iters: int = 10,
    ema_decay: float | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""Natural-gradient descent in the diffusion metric of SGD.

    The step is ``w ← w − η g(w)⁻¹ ∇f(w)`` with the diffusion metric ``g = I + ε D(w)``
    (theory §3), where ``D = Cov_a(g_a, g_a) = CᵀC/N`` is the covariance of the per-example
    gradients of the current minibatch (the diffusion matrix of SGD, theory §2). Directions in
    which the minibatch gradients disagree (large gradient noise) are shrunk by up to
    ``1/(1 + ε λ)``; directions without noise (``ker D``) are left as in SGD. ε = 0 is SGD.

    Each step:

    1. **λ_max tracking.** One warm-started power iteration on D of the minibatch
       (``power_iters`` products; ``warmup_power_iters`` on the first step): the state keeps
       the unit vector ``u``; ``p_t = D_t u_t``. With ``ema_decay = β`` the *products* are
       averaged, ``m_t = β m_{t−1} + (1−β) p_t``, bias-corrected ``m̂_t = m_t/(1 − β^t)``
       (as in Adam), so u and λ̂ track the top eigenpair of the exponentially averaged
       ``Σ_k (1−β) β^k D_{t−k}`` and are less noisy across minibatches; without EMA,
       ``m̂_t = p_t``. Then ``λ̂_max = ‖m̂_t‖`` (≥ the Rayleigh quotient, ≤ λ_max) and
       ``u_{t+1} = m̂_t/‖m̂_t‖``.
    2. **ε.** Absolute (``relative=False``), or ``ε_t = eps / λ̂_max`` (``relative=True``,
       so that ε·λ_max ≈ eps, the field strength).
    3. **Inverse** ``y = g⁻¹ ∇f`` by ``method``:

       * ``"weak_field"``: ``y = ∇f − ε D∇f`` (first order, error O(ε²λ²); one product,
         computed in the same vmapped pass as the power product). Requires ε·λ_max < 1,
         checked inside jit with ``eqx.error_if``: with ``per_example_grads`` against the
         exact λ_max of the N×N Gram matrix ``CCᵀ/N`` (certified, O(N²d + N³) per step);
         with ``per_example_loss_fn`` only against the tracked λ̂_max, a power-iteration
         *lower* bound (not certified: a certificate would need the N per-example
         gradients; keep a margin, or pass ``per_example_grads``, or use ``"cg"``).
       * ``"neumann"``: ``Σ_{j=0}^{num_terms} (−εD)^j ∇f`` (``num_terms`` products, the
         first shared with the power product as above); same check.
       * ``"cg"``: conjugate gradients on ``x ↦ x + εDx``, at most ``cg_steps``
         products, stopping at relative tolerance ``cg_rtol`` (default
         :func:`grd.default_cg_rtol` of the dtype: 1e-11 in float64, ≈ 1e-6 in float32;
         condition number 1 + ελ_max, so few steps suffice); exact for any ε ≥ 0.
       * ``"woodbury"``: ``y = ∇f − ε Cᵀ(N I + ε CCᵀ)⁻¹ C∇f`` (exact; an N×N Cholesky; needs
         the N×d matrix C: taken from ``per_example_grads`` or by ``jax.jacrev`` of
         ``per_example_loss_fn``, i.e. N gradients).
    4. ``w ← w − η y`` (``optax.scale_by_learning_rate``).

    The per-example information is an optax extra argument of ``update``::

        tx = grd.diffusion_ngd(0.1, eps=0.5, relative=True)
        state = tx.init(params)
        losses = lambda p: jax.vmap(loss_fn, (None, 0))(p, batch)   # (N,) per-example losses
        grads = jax.grad(lambda p: losses(p).mean())(params)
        updates, state = tx.update(grads, state, params, per_example_loss_fn=losses)
        params = optax.apply_updates(params, updates)

    ``per_example_loss_fn`` (params ↦ the (N,) per-example losses of the minibatch that
    produced the gradient) gives the matrix-free path: ``D v = ∇_w[(1/N) Σ_a (s_a − s̄) f_a]``
    with ``s = J v`` (one JVP and one VJP of a single linearisation; no per-example gradient
    stored). ``per_example_grads`` (a pytree like params with leading axis N) gives
    ``D v = Cᵀ(Cv)/N``. flax ``nnx.Optimizer.update(model, grads, per_example_loss_fn=...)``
    forwards extra arguments (the function then receives the ``nnx.State`` of the ``wrt``
    variables); ``flax.training.train_state.TrainState.apply_gradients`` does *not* (its
    keyword arguments replace fields), so call ``state.tx.update(..., per_example_loss_fn=...)``
    and ``state.replace(...)`` yourself (see tests/test_optim.py).

    Cost per step, in gradient-equivalents on the minibatch (on top of computing ∇f):
    weak-field ≈ 1.5–2 (one linearisation, two products in one pass); Neumann ≈ num_terms;
    CG ≈ 1 + CG steps; Woodbury ≈ N gradients + O(N²d + N³). Memory O(d + N) except
    Woodbury (N·d).

    Args:
      learning_rate: η, a scalar or an optax schedule (injectable with
        ``optax.inject_hyperparams``, as is ``eps``).
      eps: ε ≥ 0 (absolute), or the field strength ε·λ_max when ``relative=True``.
      relative: interpret ``eps`` relative to the tracked λ_max.
      method: ``"weak_field"``, ``"neumann"``, ``"cg"`` or ``"woodbury"``.
      num_terms: Neumann order K (terms j = 0…K; ``num_terms = 1`` is the weak-field inverse).
      cg_steps: maximum number of CG iterations.
      cg_rtol: CG relative tolerance (None: the dtype's default).
      power_iters: power-iteration products per step.
      warmup_power_iters: power-iteration products on the first step.
      ema_decay: β of the moving average of the power products (None: no averaging).
      seed: seed of the initial power vector.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its update needs ``params`` and one of the
      extra arguments ``per_example_loss_fn`` or ``per_example_grads``.

    References:
      theory §2–3; Amari, *Natural gradient works efficiently in learning* (1998);
      Chaudhari & Soatto, *Stochastic gradient descent performs variational inference* (2018).
    """
    return optax.chain(
        scale_by_diffusion_metric(
            eps,
            relative=relative,
            method=method,
            num_terms=num_terms,
            cg_steps=cg_steps,
            cg_rtol=cg_rtol,
            power_iters=power_iters,
            warmup_power_iters=warmup_power_iters,
            ema_decay=ema_decay,
            seed=seed,
        ),
        optax.scale_by_learning_rate(learning_rate),
        _cast_to_params_dtype(),
    )


def _cast_to_params_dtype() -> optax.GradientTransformation:
    """Cast each update leaf to the dtype of its parameter (a float64 NumPy learning rate
    would otherwise promote float32 updates under x64; optax does not cast)."""

    def update_fn(updates, state, params=None):
        if params is None:
            return updates, state
        return jax.tree.map(lambda u, p: u.astype(jnp.result_type(p)), updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
