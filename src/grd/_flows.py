"""Gradient flows as diffrax terms: GD, NGD, GRD, second-order NGD and SGD as an SDE (theory §5).

First-order flows (``gd``, ``ngd``, ``sgd_sde``) evolve the parameters ``w`` alone; second-order
flows (``grd``, ``ngd2``) evolve the phase-space pair ``(w, v)`` with ``v = ẇ``:

==========  ====================================================  =========================
flow        equation                                              state
==========  ====================================================  =========================
gd          ``ẇ = −∇f``                                           ``w``
ngd         ``ẇ = −g⁻¹ ∇f``                                       ``w``
grd         ``ẅ = −H ẇ − Γ²(ẇ, ẇ)``                               ``(w, v)``
ngd2        ``ẅ = −Γ²(ẇ, ẇ) − g⁻¹[H ẇ + ½ ∂g(ẇ, ẇ)]``            ``(w, v)``
sgd_sde     ``dw = −∇f dt + √(2β⁻¹) Cᵀ/√N dW_N``, β⁻¹ = η/(2b)    ``w``
==========  ====================================================  =========================

with ``g = I + εD`` the diffusion metric, ``Γ² = g⁻¹ Γ_first`` (or its first-order truncation
``Γ_first``) and ``H ẇ`` a Hessian-vector product of the mean loss. Every right-hand side is
matrix-free: a handful of batch gradients per evaluation and O(d + N) memory. The vector
fields are small immutable :class:`equinox.Module` s holding the batch as a pytree leaf, so a
jitted solve is traced once per shape and reused for new data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from . import _validation as val
from ._christoffel import _christoffel_first, _metric_derivative
from ._diffusion import diffusion_trace
from ._metric import InverseMethod, _check_weak_field, _metric_inverse, lambda_max_upper_bound
from ._params import accepts_any_params
from ._primitives import mean_weights, weighted_grad, weighted_hvp
from ._tree import tree_add, tree_dtype, tree_scale

FlowName = Literal["gd", "ngd", "grd", "ngd2", "sgd_sde"]
ChristoffelForm = Literal["exact", "first_order"]
FLOWS = ("gd", "ngd", "grd", "ngd2", "sgd_sde")
SECOND_ORDER = ("grd", "ngd2")
_INVERSES = ("cg", "woodbury", "weak_field", "neumann")


def _n(batch) -> int:
    return jax.tree_util.tree_leaves(batch)[0].shape[0]


def _mean_grad(loss_fn, w, batch, chunk_size=None):
    """``∇f(w)`` of the mean loss (one batch gradient)."""
    return weighted_grad(
        loss_fn, w, batch, mean_weights(_n(batch), tree_dtype(w)), chunk_size=chunk_size
    )


def _mean_hvp(loss_fn, w, batch, v, chunk_size=None):
    """``H v`` of the mean loss (forward-over-reverse, ≈ two batch gradients)."""
    weights = mean_weights(_n(batch), tree_dtype(w))
    return weighted_hvp(loss_fn, w, batch, weights, v, chunk_size=chunk_size)


class _Field(eqx.Module):
    """Shared configuration of the flow vector fields (a pytree: the batch is a leaf)."""

    loss_fn: Callable  # a leaf, not static: a grd loss may hold arrays (grd._params)
    batch: Any
    eps: Any = 0.0
    inverse: str = eqx.field(static=True, default="cg")
    inverse_options: tuple = eqx.field(static=True, default=())
    chunk_size: int | None = eqx.field(static=True, default=None)

    def _eps(self, w):
        """ε in the dtype of the state ``w`` (the field may be built before the params)."""
        return jnp.asarray(self.eps, tree_dtype(w))

    def _inv(self, w, x):
        """``g(w)⁻¹ x`` with the configured method (no ε·λ_max check here: :func:`integrate`
        checks it at ``w₀`` and at every accepted step)."""
        out, _ = _metric_inverse(
            self.loss_fn, w, self.batch, x, self._eps(w), self.inverse, lam_max=None,
            chunk_size=self.chunk_size, **dict(self.inverse_options),
        )  # fmt: skip
        return out


class GDField(_Field):
    """Gradient descent ``ẇ = −∇f(w)``. Cost: one batch gradient."""

    def __call__(self, t, w, args):
        del t, args
        return tree_scale(-1.0, _mean_grad(self.loss_fn, w, self.batch, self.chunk_size))


class NGDField(_Field):
    """Natural gradient descent ``ẇ = −g⁻¹∇f`` with ``g = I + εD``.

    Cost: one gradient plus the inverse (weak-field: one D·v ≈ one gradient; CG: one D·v per
    iteration; Woodbury: N per-example gradients and an N×N Cholesky).
    """

    def __call__(self, t, w, args):
        del t, args
        return tree_scale(
            -1.0, self._inv(w, _mean_grad(self.loss_fn, w, self.batch, self.chunk_size))
        )


class GRDField(_Field):
    """General Relativity Descent ``ẅ = −H ẇ − Γ²(ẇ, ẇ)`` on the state ``(w, v)``.

    ``christoffel="exact"``: ``Γ² = g⁻¹ Γ_first`` with the configured inverse;
    ``"first_order"``: the seeds' truncation ``Γ² ≈ Γ_first`` (error O(ε²)).
    Cost: H v (≈ 2 gradients) + Γ_first (≈ 2) + the inverse (weak-field ≈ 1; CG ≈ 1 per iteration).
    """

    christoffel: str = eqx.field(static=True, default="exact")

    def __call__(self, t, y, args):
        del t, args
        w, v = y
        hv = _mean_hvp(self.loss_fn, w, self.batch, v, self.chunk_size)
        gamma = _christoffel_first(self.loss_fn, w, self.batch, v, self._eps(w), self.chunk_size)
        if self.christoffel == "exact":
            gamma = self._inv(w, gamma)
        return v, tree_scale(-1.0, tree_add(hv, gamma))


class NGD2Field(_Field):
    """Second-order NGD ``ẅ = −g⁻¹[Γ_first(ẇ,ẇ) + H ẇ + ½∂g(ẇ,ẇ)]`` on the state ``(w, v)``.

    The exact time derivative of ``g ẇ = −∇f`` (``ġ ẇ = Γ_first(ẇ,ẇ) + ½∂g(ẇ,ẇ)``); started on
    ``ẇ₀ = −g⁻¹∇f(w₀)`` it reproduces the NGD path. Cost: ≈ 8 gradients plus one inverse.
    """

    def __call__(self, t, y, args):
        del t, args
        w, v = y
        hv = _mean_hvp(self.loss_fn, w, self.batch, v, self.chunk_size)
        gamma = _christoffel_first(self.loss_fn, w, self.batch, v, self._eps(w), self.chunk_size)
        dg = _metric_derivative(self.loss_fn, w, self.batch, v, self._eps(w), self.chunk_size)
        return v, tree_scale(-1.0, self._inv(w, tree_add(tree_add(hv, gamma), dg)))


class SGDDiffusion(_Field):
    """The diffusion of SGD as a matrix-free operator ``u ↦ √(2β⁻¹) Cᵀu / √N`` on ``R^N``.

    ``Cᵀu = ∇_w Σ_a (u_a − ū) f_a(w)`` (one VJP with centred weights): neither the d×d matrix
    D nor the N×d matrix C is formed. ``σσᵀ = (2β⁻¹/N) CᵀC = 2β⁻¹ D``. Returned as a
    :class:`lineax.FunctionLinearOperator` for :class:`diffrax.ControlTerm`.
    """

    temperature: Any = 0.0  # β⁻¹ = η / (2b)

    def __call__(self, t, w, args):
        del t, args
        n = _n(self.batch)
        dtype = tree_dtype(w)
        scale = jnp.sqrt(2.0 * self.temperature / n).astype(dtype)

        def mv(u):
            u = u.astype(dtype)
            c = u - jnp.mean(u)
            return tree_scale(
                scale, weighted_grad(self.loss_fn, w, self.batch, c, chunk_size=self.chunk_size)
            )

        return lx.FunctionLinearOperator(mv, jax.ShapeDtypeStruct((n,), dtype))


def _check_choices(flow, inverse, christoffel):
    if flow not in FLOWS:
        raise ValueError(f"`flow` must be one of {FLOWS}; got {flow!r}.")
    if inverse not in _INVERSES:
        raise ValueError(f"`inverse` must be one of {_INVERSES}; got {inverse!r}.")
    if christoffel not in ("exact", "first_order"):
        raise ValueError(f"`christoffel` must be 'exact' or 'first_order'; got {christoffel!r}.")


def _default_inverse_options(inverse, dtype, inverse_options):
    """The inverse options as a hashable tuple. CG's defaults are those of every grd inverse
    (relative, :func:`grd.default_cg_rtol` of the dtype, ``atol = 0``)."""
    del inverse, dtype
    return tuple(sorted(dict(inverse_options or {}).items()))


def flow_field(
    loss_fn,
    batch,
    *,
    flow: FlowName,
    eps=0.0,
    inverse: InverseMethod = "cg",
    christoffel: ChristoffelForm = "exact",
    inverse_options: dict | None = None,
    chunk_size: int | None = None,
    dtype=None,
):
    """The vector field of ``flow`` as an :class:`equinox.Module` ``(t, y, args) -> dy/dt``.

    For ``flow="sgd_sde"`` this is the drift (GD); the diffusion is :class:`SGDDiffusion`.
    ε is cast to ``dtype`` when given, and in any case to the dtype of the state at each
    call. Unvalidated beyond ε and N (no ε·λ_max check): use :func:`integrate`.
    """
    _check_choices(flow, inverse, christoffel)
    val.batch_size(batch, min_size=1 if flow == "gd" else 2)
    eps = val.check_eps(eps, dtype)
    common = dict(
        loss_fn=loss_fn, batch=batch, eps=eps, inverse=inverse,
        inverse_options=_default_inverse_options(inverse, dtype, inverse_options),
        chunk_size=chunk_size,
    )  # fmt: skip
    if flow in ("gd", "sgd_sde"):
        return GDField(**common)
    if flow == "ngd":
        return NGDField(**common)
    if flow == "grd":
        return GRDField(**common, christoffel=christoffel)
    return NGD2Field(**common)


@val.message_first
@accepts_any_params
def ngd_velocity(
    loss_fn, params, batch, eps, *, inverse: InverseMethod = "cg", chunk_size=None, **inverse_kwargs
):
    """The NGD velocity ``−g(w)⁻¹ ∇f(w)``: the default initial velocity of second-order flows.

    ``inverse_kwargs`` go to the inverse (see :func:`grd.metric_inverse`); the weak-field and
    Neumann inverses are checked against :func:`grd.lambda_max_upper_bound` at ``params``
    unless ``lam_max`` is given.
    """
    _, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    eps = val.check_eps(eps, tree_dtype(params))
    if inverse in ("weak_field", "neumann"):
        lam = inverse_kwargs.pop("lam_max", "estimate")
        bound = lambda: lambda_max_upper_bound(loss_fn, params, batch, chunk_size=chunk_size)
        if lam is not None and not isinstance(lam, str):
            lam = val.cast_scalar(lam, tree_dtype(params), name="lam_max")
        eps = _check_weak_field(eps, lam, inverse.replace("_", "-"), bound)
    field = NGDField(
        loss_fn, batch, eps, inverse,
        _default_inverse_options(inverse, tree_dtype(params), inverse_kwargs), chunk_size,
    )  # fmt: skip
    return field(0.0, params, None)


@eqx.filter_jit
def _velocity_at(field, w):
    """``field(0, w)`` compiled once per field configuration (CG would retrace eagerly)."""
    return field(0.0, w, None)


def _default_tolerances(dtype):
    if jnp.dtype(dtype) == jnp.float64:
        return 1e-8, 1e-8
    return 1e-4, 1e-6


def _concrete(t):
    try:
        return float(t)
    except TypeError:  # a tracer (jax.errors.ConcretizationTypeError subclasses TypeError)
        return None


def _check_times(t0, t1):
    """Check ``t1 > t0``: eagerly when both are concrete, else in-graph."""
    a, b = _concrete(t0), _concrete(t1)
    if a is not None and b is not None:
        if not (math.isfinite(a) and math.isfinite(b) and b > a):
            raise ValueError(f"`t1` must be a finite time > t0 = {a}; got t1 = {b}.")
        return t1
    t1 = jnp.asarray(t1)
    return eqx.error_if(t1, ~(t1 > t0), "`t1` must be > t0 (diffrax would integrate backwards).")


def _weak_field_event(loss_fn, batch, eps, second_order, chunk_size):
    """A boolean :class:`diffrax.Event`: ``ε·λ_max(D(w)) ≥ 1`` at the state after each step.

    diffrax evaluates it once per step attempt, at the accepted state (the previous one
    after a rejection). Certified: first ``ε·tr D < 1`` (tr D ≥ λ_max; one pass of
    per-example gradient norms), and only when that fails the tighter
    :func:`lambda_max_upper_bound` (20 Lanczos products more), under ``lax.cond``.
    """

    def exceeded(t, y, args, **kwargs):
        del t, args, kwargs
        w = y[0] if second_order else y
        trace = diffusion_trace(loss_fn, w, batch, chunk_size=chunk_size)
        bound = lambda: lambda_max_upper_bound(loss_fn, w, batch, chunk_size=chunk_size)
        strength = jax.lax.cond(eps * trace < 1, lambda: eps * trace, lambda: eps * bound())
        return ~(strength < 1)

    return diffrax.Event(exceeded)


@val.message_first
@accepts_any_params
def integrate(
    loss_fn,
    params0,
    batch,
    *,
    flow: FlowName,
    t1,
    t0=0.0,
    eps=None,
    inverse: InverseMethod = "cg",
    christoffel: ChristoffelForm = "exact",
    v0=None,
    saveat: diffrax.SaveAt | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0=None,
    max_steps: int | None = 4096,
    key=None,
    lr=None,
    batch_size: int | None = None,
    throw: bool = True,
    rtol=None,
    atol=None,
    inverse_options: dict | None = None,
    chunk_size: int | None = None,
    **diffeqsolve_kwargs,
) -> diffrax.Solution:
    """Integrate a gradient flow of the mean loss from ``params0`` (theory §5) with diffrax.

    Args:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar``.
      params0: initial parameters (pytree, one floating dtype).
      batch: pytree with leading axis N (the whole data set of the flow).
      flow: ``"gd"``, ``"ngd"``, ``"grd"``, ``"ngd2"`` or ``"sgd_sde"``.
      t1, t0: time interval, ``t1 > t0``.
      eps: ε ≥ 0 of the metric ``g = I + εD`` (required for ``ngd``, ``grd``, ``ngd2``).
      inverse: ``g⁻¹`` method: ``"cg"`` (exact, matrix-free), ``"woodbury"`` (exact, N×N),
        ``"weak_field"`` (``I − εD``), ``"neumann"``. For the approximate ones ``ε·λ_max < 1``
        is checked against a certified upper bound (:func:`grd.lambda_max_upper_bound`) at
        ``params0`` (eagerly) and at the state after every step by a :class:`diffrax.Event`
        (first ``ε·tr D < 1``, one pass of per-example gradient norms; the 20-product bound
        only when that fails). Failing it stops the solve: an error with ``throw=True``,
        ``solution.event_mask`` True otherwise. Not checked along the path when you pass your
        own ``event`` (then only at ``params0``) or with ``GRD_CHECKS=0``; nor at the
        intermediate Runge–Kutta stages.
      christoffel: GRD's ``Γ²``: ``"exact"`` (``g⁻¹Γ_first``) or ``"first_order"`` (``Γ_first``).
      v0: initial velocity of ``grd``/``ngd2`` (default: the NGD velocity ``−g⁻¹∇f(w₀)``).
      saveat: :class:`diffrax.SaveAt` (default: ``t1`` only; ``SaveAt(dense=True)`` for
        dense output).
      solver: diffrax solver (default: ``Tsit5`` for ODEs, ``Euler`` (Itô) for the SDE).
      stepsize_controller: default ``PIDController(rtol, atol)`` for ODEs, constant steps
        for the SDE.
      dt0: initial step (default: chosen by diffrax for ODEs; ``lr`` for the SDE, one SGD step).
      max_steps: step budget; exhausting it fails loudly (``throw=True``) or flags ``result``.
      key: PRNG key of the Brownian motion (``sgd_sde`` only; a ``VirtualBrownianTree``).
      lr, batch_size: SGD learning rate η and batch size b; the SDE temperature is ``η/(2b)``.
      throw: raise on solver failure (diffrax); with ``False`` inspect ``solution.result``.
      rtol, atol: PID tolerances (default ``1e-8``/``1e-8`` in float64, ``1e-4``/``1e-6`` in
        float32).
      inverse_options: passed to the inverse (``rtol``, ``atol``, ``max_steps`` of CG, ...).
      chunk_size: stream the batch in chunks in every product.
      **diffeqsolve_kwargs: passed to :func:`diffrax.diffeqsolve` (``adjoint``, ``event``, ...).

    Returns:
      The :class:`diffrax.Solution`; ``ys`` is ``w`` for ``gd``/``ngd``/``sgd_sde`` and
      ``(w, v)`` for ``grd``/``ngd2`` (with a leading time axis per :class:`~diffrax.SaveAt`).
    """
    _check_choices(flow, inverse, christoffel)
    weak_event = False
    min_size = 1 if flow == "gd" else 2
    # Structure, dtypes and finiteness of params0 and batch (the value check rides on params0:
    # routing the batch through it would copy the data set inside jit).
    _, params0, batch, _ = val.core_inputs(loss_fn, params0, batch, min_size=min_size)
    t1 = _check_times(t0, t1)
    dtype = tree_dtype(params0)
    geometric = flow in ("ngd", "grd", "ngd2")
    if geometric:
        if eps is None:
            raise ValueError(f"`eps` is required for flow={flow!r} (the metric g = I + eps·D).")
        eps = val.check_eps(eps, dtype)
        if inverse in ("weak_field", "neumann"):
            lam = lambda_max_upper_bound(loss_fn, params0, batch, chunk_size=chunk_size)
            eps = _check_weak_field(eps, lam, inverse.replace("_", "-"))
            if val.CHECKS_ENABLED and "event" not in diffeqsolve_kwargs:
                diffeqsolve_kwargs["event"] = _weak_field_event(
                    loss_fn, batch, eps, flow in SECOND_ORDER, chunk_size
                )
                weak_event = True
    else:
        eps = 0.0 if eps is None else val.check_eps(eps)
    eps = jnp.asarray(eps, dtype)
    dt0 = val.cast_scalar(dt0, dtype, name="dt0")
    temperature = 0.0
    if flow == "sgd_sde":
        for name, value in (("key", key), ("lr", lr), ("batch_size", batch_size)):
            if value is None:
                raise ValueError(f"`{name}` is required for flow='sgd_sde'.")
        if isinstance(lr, int | float) and not lr > 0:
            raise ValueError(f"`lr` must be > 0; got {lr}.")
        if not int(batch_size) >= 1:
            raise ValueError(f"`batch_size` must be ≥ 1; got {batch_size}.")
        lr = val.cast_scalar(lr, dtype, name="lr")
        temperature = lr / (2.0 * batch_size)
    field = flow_field(
        loss_fn, batch, flow=flow, eps=eps, inverse=inverse, christoffel=christoffel,
        inverse_options=inverse_options, chunk_size=chunk_size, dtype=dtype,
    )  # fmt: skip
    y0 = params0
    if flow in SECOND_ORDER:
        if v0 is None:
            ngd = NGDField(loss_fn, batch, eps, inverse, field.inverse_options, chunk_size)
            v0 = _velocity_at(ngd, params0)
        else:
            val.same_structure(v0, params0, name="v0")
            v0 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), v0)
        y0 = (params0, val.check_finite(v0, "v0"))
    elif v0 is not None:
        raise ValueError(
            f"`v0` is only used by the second-order flows {SECOND_ORDER}; got flow={flow!r}."
        )
    # Times and ε as arrays: one compiled solve serves every value (Python floats are static).
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)

    if flow == "sgd_sde":
        dt0 = lr if dt0 is None else dt0
        a, b, h = _concrete(t0), _concrete(t1), _concrete(dt0)
        if stepsize_controller is None and max_steps is not None and None not in (a, b, h):
            max_steps = max(max_steps, math.ceil((b - a) / h) + 1)  # room for every fixed step
        bm = diffrax.VirtualBrownianTree(
            t0, t1, tol=dt0 / 2, shape=jax.ShapeDtypeStruct((_n(batch),), dtype), key=key
        )
        diffusion = SGDDiffusion(loss_fn, batch, chunk_size=chunk_size, temperature=temperature)
        terms = diffrax.MultiTerm(diffrax.ODETerm(field), diffrax.ControlTerm(diffusion, bm))
        solver = diffrax.Euler() if solver is None else solver
        if stepsize_controller is None:
            stepsize_controller = diffrax.ConstantStepSize()
    else:
        terms = diffrax.ODETerm(field)
        solver = diffrax.Tsit5() if solver is None else solver
        if stepsize_controller is None:
            d_rtol, d_atol = _default_tolerances(dtype)
            stepsize_controller = diffrax.PIDController(
                rtol=d_rtol if rtol is None else rtol, atol=d_atol if atol is None else atol
            )
    saveat = diffrax.SaveAt(t1=True) if saveat is None else saveat
    sol = diffrax.diffeqsolve(
        terms, solver, t0, t1, dt0, y0, saveat=saveat, stepsize_controller=stepsize_controller,
        max_steps=max_steps, throw=throw, **diffeqsolve_kwargs,
    )  # fmt: skip
    if weak_event and throw and sol.ys is not None:
        msg = (
            f"`eps` is too large for the {inverse.replace('_', '-')} inverse along the path: "
            "eps·λ_max(D(w)) ≥ 1 was reached (certified bound); use a smaller `eps` or "
            "inverse='cg'/'woodbury'."
        )
        sol = eqx.tree_at(lambda s: s.ys, sol, eqx.error_if(sol.ys, sol.event_mask, msg))
    return sol
