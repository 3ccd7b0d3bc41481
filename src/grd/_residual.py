"""How far General Relativity Descent is from its claimed first-order limit, NGD (theory §5).

At the same state ``(w, ẇ)`` the GRD acceleration minus the NGD acceleration (the time
derivative of ``ẇ = −g⁻¹∇f``) is

    R = (g⁻¹ − I) H ẇ + ½ g⁻¹ ∂g(ẇ, ẇ)
      = ε [ D ẅ + ½ ∇_w(ẇᵀ D ẇ) ] + O(ε²),     ẅ = −H ẇ.

(The first-order form follows from ``g⁻¹ − I = −εD + O(ε²)`` and
``½ ∂g(ẇ, ẇ) = ε Cov_a(g_a·ẇ, H_a ẇ) = ½ ε ∇_w(ẇᵀDẇ)``; any ``ẅ = −Hẇ + O(ε)`` — the GRD or the
NGD acceleration — gives the same R up to O(ε²).) GRD follows NGD only where R stays ≈ 0.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from . import _validation as val
from ._christoffel import _metric_derivative
from ._diffusion import _diffusion_matvec, lambda_max
from ._flows import _default_inverse_options, _mean_hvp, integrate
from ._metric import InverseMethod, _metric_inverse
from ._params import accepts_any_params
from ._primitives import mean_weights, weighted_loss
from ._tree import tree_add, tree_axpy, tree_dtype, tree_norm, tree_sub

ResidualForm = Literal["exact", "first_order"]


def _residual(loss_fn, params, batch, v, eps, form, inverse, chunk_size, inverse_options):
    hv = _mean_hvp(loss_fn, params, batch, v, chunk_size)
    dg = _metric_derivative(loss_fn, params, batch, v, eps, chunk_size)  # ½ ∂g(v, v)
    if form == "exact":
        # (g⁻¹ − I) H v + ½ g⁻¹ ∂g(v, v) = g⁻¹[H v + ½ ∂g(v, v)] − H v: one inverse.
        opts = {"lam_max": None, **dict(inverse_options)}  # grd_residual passes "estimate"
        out, _ = _metric_inverse(
            loss_fn, params, batch, tree_add(hv, dg), eps, inverse, chunk_size=chunk_size,
            **opts,
        )  # fmt: skip
        return tree_sub(out, hv)
    # ε D ẅ + ½ ε ∇(vᵀDv) with ẅ = −H v.
    return tree_axpy(-eps, _diffusion_matvec(loss_fn, params, batch, hv, chunk_size), dg)


@val.message_first
@accepts_any_params
def grd_residual(
    loss_fn,
    params,
    batch,
    v,
    eps,
    *,
    form: ResidualForm = "exact",
    inverse: InverseMethod = "cg",
    chunk_size: int | None = None,
    **inverse_kwargs,
):
    """The GRD–NGD acceleration gap ``R`` at the state ``(w, ẇ) = (params, v)`` (theory §5).

    ``form="exact"``: ``R = (g⁻¹ − I) H ẇ + ½ g⁻¹ ∂g(ẇ, ẇ)`` with the inverse ``inverse``.
    ``form="first_order"``: ``R₁ = ε [D ẅ + ½ ∇_w(ẇᵀ D ẇ)]`` with ``ẅ = −H ẇ``;
    ``R − R₁ = O(ε²)``.

    Args:
      loss_fn, params, batch: as in :func:`grd.diffusion_matvec`.
      v: the velocity ``ẇ`` (pytree like ``params``).
      eps: ε ≥ 0 of ``g = I + εD``.
      form: ``"exact"`` or ``"first_order"``.
      inverse: ``g⁻¹`` method of the exact form (``"cg"``, ``"woodbury"``, ...).
      **inverse_kwargs: passed to the inverse (CG ``rtol``, ``atol``, ``max_steps``).

    Returns:
      ``R`` with the structure of ``params``.

    Cost: H v (≈ 2 gradients) + ½∂g (≈ 3) + one inverse (exact) or one D·v (first order).
    """
    _, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    eps = val.check_eps(eps, tree_dtype(params))
    if form not in ("exact", "first_order"):
        raise ValueError(f"`form` must be 'exact' or 'first_order'; got {form!r}.")
    inverse_kwargs.setdefault("lam_max", "estimate")  # weak-field/Neumann: checked at params
    opts = _default_inverse_options(inverse, tree_dtype(params), inverse_kwargs)
    return _residual(loss_fn, params, batch, v, eps, form, inverse, chunk_size, opts)


class FlowComparison(NamedTuple):
    """GRD against NGD from the same start, at the saved times ``ts`` (each of shape ``(T,)``).

    Attributes:
      ts: saved times.
      distance: ``‖w_GRD(t) − w_NGD(t)‖``.
      loss_grd, loss_ngd: mean loss along each path.
      residual_norm: ``|R(w(t), ẇ(t))|`` along the GRD path.
      field_strength: ``ε·λ_max(D(w_GRD(t)))`` (Lanczos).
      result_grd, result_ngd: diffrax ``RESULTS`` of the two solves (check they succeeded).
    """

    ts: jax.Array
    distance: jax.Array
    loss_grd: jax.Array
    loss_ngd: jax.Array
    residual_norm: jax.Array
    field_strength: jax.Array
    result_grd: object
    result_ngd: object


@val.message_first
@accepts_any_params
def compare_flows(
    loss_fn,
    params0,
    batch,
    *,
    eps,
    ts,
    t0=0.0,
    inverse: InverseMethod = "cg",
    christoffel: Literal["exact", "first_order"] = "exact",
    v0=None,
    residual_form: ResidualForm = "exact",
    num_matvecs: int = 20,
    chunk_size: int | None = None,
    **integrate_kwargs,
) -> FlowComparison:
    """Integrate GRD and NGD from ``params0`` and compare them at the times ``ts``.

    GRD starts on ``v0`` (default: the NGD velocity, so the two agree to first order in t).

    Args:
      loss_fn, params0, batch: as in :func:`integrate`.
      eps: ε ≥ 0 of the metric.
      ts: increasing saved times in ``(t0, t1]``; ``t1 = ts[-1]``.
      inverse, christoffel, v0: as in :func:`integrate` (``inverse`` is used by both flows).
      residual_form: form of R reported along the GRD path (see :func:`grd_residual`).
      num_matvecs: Lanczos products per ``λ_max`` estimate.
      **integrate_kwargs: passed to both :func:`integrate` calls (``rtol``, ``max_steps`` ...).

    Returns:
      :class:`FlowComparison`.

    Cost: two ODE solves, then per saved time one residual and ``num_matvecs`` D·v products.
    """
    ts = jnp.asarray(ts, dtype=tree_dtype(params0))
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-D array of times; got shape {ts.shape}.")
    t1 = ts[-1] if isinstance(ts, jax.core.Tracer) else float(ts[-1])
    saveat = diffrax.SaveAt(ts=ts)
    common = dict(t0=t0, t1=t1, eps=eps, inverse=inverse, saveat=saveat, chunk_size=chunk_size)
    sol_grd = integrate(
        loss_fn, params0, batch, flow="grd", christoffel=christoffel, v0=v0, **common,
        **integrate_kwargs,
    )  # fmt: skip
    sol_ngd = integrate(loss_fn, params0, batch, flow="ngd", **common, **integrate_kwargs)
    w_grd, v_grd = sol_grd.ys
    w_ngd = sol_ngd.ys
    dtype = tree_dtype(params0)
    eps = val.check_eps(eps, dtype)
    opts = _default_inverse_options(inverse, dtype, integrate_kwargs.get("inverse_options"))
    weights = mean_weights(jax.tree_util.tree_leaves(batch)[0].shape[0], dtype)

    def at_time(state):
        w, v, wn = state
        r = _residual(loss_fn, w, batch, v, eps, residual_form, inverse, chunk_size, opts)
        lam = lambda_max(loss_fn, w, batch, num_matvecs=num_matvecs, chunk_size=chunk_size)
        return (
            tree_norm(tree_sub(w, wn)),
            weighted_loss(loss_fn, w, batch, weights),
            weighted_loss(loss_fn, wn, batch, weights),
            tree_norm(r),
            eps * lam,
        )

    dist, lg, ln, rn, fs = jax.lax.map(at_time, (w_grd, v_grd, w_ngd))
    return FlowComparison(ts, dist, lg, ln, rn, fs, sol_grd.result, sol_ngd.result)
