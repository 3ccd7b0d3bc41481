"""Christoffel symbols of the diffusion metric (theory §4).

The metric ``g = I + ε D`` is the pull-back of the Euclidean metric by
``w ↦ (w, √c f̂(w))``, ``c = ε/N²``, with ``f̂ = (f_a − f_b)_{a<b}``. Its symbols of the first
kind are therefore exact:

    Γ_{k,ij} = ε [ (1/N) Σ_a H_a[i,j] g_a[k] − H[i,j] ḡ[k] ] = ε Cov_a(H_a[i,j], g_a[k]).
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _validation as val
from ._batched import example_hessians_flat
from ._metric import InverseMethod, _metric_inverse
from ._params import accepts_any_params
from ._primitives import centred, jvp_values, per_example_map, weighted_grad, weighted_hvp
from ._tree import tree_dtype, tree_ravel, tree_scale


@eqx.filter_jit
def _christoffel_first(loss_fn, params, batch, v, eps, chunk_size=None):
    q = jvp_values(loss_fn, params, batch, v, order=2, chunk_size=chunk_size)
    return tree_scale(eps, weighted_grad(loss_fn, params, batch, centred(q), chunk_size=chunk_size))


@eqx.filter_jit
def _metric_derivative(loss_fn, params, batch, v, eps, chunk_size=None):
    s = jvp_values(loss_fn, params, batch, v, order=1, chunk_size=chunk_size)
    return tree_scale(
        eps, weighted_hvp(loss_fn, params, batch, centred(s), v, chunk_size=chunk_size)
    )


@val.message_first
@accepts_any_params
def christoffel_contract(
    loss_fn,
    params,
    batch,
    v,
    eps,
    *,
    kind: Literal["first", "second"] = "first",
    inverse: InverseMethod = "cg",
    chunk_size: int | None = None,
    **inverse_kwargs,
):
    """Matrix-free contraction ``Γ(v, v)`` of the Christoffel symbols with a vector (theory §4).

    First kind: ``Γ_first(v, v)_k = ε Cov_a(vᵀH_a v, g_a[k]) = ε ∇_w (1/N) Σ_a (q_a − q̄) f_a(w)``
    with ``q_a = vᵀ H_a v`` from forward-over-forward JVPs and the weights held fixed.
    Second kind: ``Γ²(v, v) = g⁻¹ Γ_first(v, v)`` with the inverse ``inverse``
    (exact ``"cg"`` by default; ``"weak_field"`` gives the seeds' O(ε) truncation ``(I − εD)Γ``).

    Args:
      loss_fn, params, batch, v: as in :func:`grd.diffusion_matvec`.
      eps: ε ≥ 0.
      kind: ``"first"`` or ``"second"``.
      inverse: inverse method for ``kind="second"`` (see :func:`grd.metric_inverse`).
      chunk_size: stream the batch in chunks.
      **inverse_kwargs: passed to the inverse (``rtol``, ``max_steps``, ``lam_max`` …; CG's
        default tolerance is relative, :func:`grd.default_cg_rtol`; the weak-field and
        Neumann inverses check ε against :func:`grd.lambda_max_upper_bound` unless
        ``lam_max`` is given).

    Returns:
      pytree with the structure of ``params``.

    Cost: first kind ≈ two gradients (two nested JVPs + one VJP), memory O(d + N); second
    kind adds the inverse.
    """
    _, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    eps = val.check_eps(eps, tree_dtype(params))
    gamma = _christoffel_first(loss_fn, params, batch, v, eps, chunk_size)
    if kind == "first":
        return gamma
    if kind == "second":
        inverse_kwargs.setdefault("lam_max", "estimate")  # weak-field/Neumann: checked
        out, _ = _metric_inverse(
            loss_fn, params, batch, gamma, eps, inverse, chunk_size=chunk_size, **inverse_kwargs
        )
        return out
    raise ValueError(f"`kind` must be 'first' or 'second'; got {kind!r}.")


@val.message_first
@accepts_any_params
def metric_derivative_contract(loss_fn, params, batch, v, eps, *, chunk_size: int | None = None):
    """``½ ∂g(v, v)_k = ½ ∂_k g_ij vⁱ vʲ = ε Cov_a(g_a·v, H_a v)`` (theory §4), matrix-free.

    One Hessian-vector product, along ``v``, of the weighted loss ``(1/N) Σ_a (s_a − s̄) f_a``
    with ``s_a = g_a·v`` held fixed. Cost ≈ three gradients; memory O(d + N).
    """
    _, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    eps = val.check_eps(eps, tree_dtype(params))
    return _metric_derivative(loss_fn, params, batch, v, eps, chunk_size)


@val.message_first
@accepts_any_params
def christoffel_symbols(
    loss_fn, params, batch, eps, *, kind: Literal["first", "second"] = "first"
) -> jax.Array:
    """Dense Christoffel symbols, shape ``(d, d, d)``, ``[k, i, j]`` (small d only).

    ``kind="first"``: ``Γ_{k,ij} = (ε/N) Σ_a (g_a − ḡ)[k] H_a[i, j]`` from per-example Hessians.
    ``kind="second"``: ``Γ^k_ij = (g⁻¹)^{kl} Γ_{l,ij}`` with the exact dense inverse.
    Indices follow ``jax.flatten_util.ravel_pytree(params)``. Memory O(N d²).
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    eps = val.check_eps(eps, tree_dtype(params))
    flat, unravel = tree_ravel(params)
    G, Hs = example_hessians_flat(loss_fn, params, batch, per_example_map)
    C = G - jnp.mean(G, axis=0)
    gamma = eps * jnp.einsum("ak,aij->kij", C, Hs) / n
    if kind == "first":
        return gamma
    if kind == "second":
        d = flat.shape[0]
        g = jnp.eye(d, dtype=C.dtype) + eps * (C.T @ C) / n
        return jnp.linalg.solve(g, gamma.reshape(d, d * d)).reshape(d, d, d)
    raise ValueError(f"`kind` must be 'first' or 'second'; got {kind!r}.")
