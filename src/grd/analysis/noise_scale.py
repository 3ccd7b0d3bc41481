"""Gradient noise scale and SGD temperature (theory §5, §6).

McCandlish, Kaplan, Amodei et al., "An empirical model of large-batch training",
arXiv:1812.06162 (2018), section 2 and appendix A. With the per-example covariance
``D = Cov_a(g_a, g_a)`` (theory §2; the covariance of a size-b minibatch gradient is D/b) and the
mean gradient ḡ, the optimal step size of a size-B minibatch step on the local quadratic model
is ε_max / (1 + B_noise/B): the batch size B_noise is where the step (and the loss gain per
step) reaches half its large-batch limit, with

- ``B_noise  = tr(H D) / (ḡᵀ H ḡ)``  (curvature-aware), and
- ``B_simple = tr(D) / |ḡ|²``        (the same with H ∝ I).

The SGD temperature of the SDE limit ``dw = −∇f dt + √(2β⁻¹) σ dW``, σσᵀ = D, is
``β⁻¹ = η / (2b)`` (learning rate η, batch size b).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import matfree.stochtrace as stochtrace

from grd import _validation as val
from grd._diffusion import _diffusion_matvec, centred_grad_matrix, diffusion_trace
from grd._params import accepts_any_params
from grd._primitives import mean_weights, weighted_grad, weighted_hvp
from grd._tree import tree_dtype, tree_ravel, tree_vdot


class SimpleNoiseScale(NamedTuple):
    """Result of :func:`noise_scale_simple`.

    Attributes:
      value: B_simple = tr D / |ḡ|².
      trace: tr D.
      grad_norm_sq: |ḡ|².
    """

    value: jax.Array
    trace: jax.Array
    grad_norm_sq: jax.Array


class CurvatureNoiseScale(NamedTuple):
    """Result of :func:`noise_scale_curvature`.

    Attributes:
      value: B_noise = tr(HD) / (ḡᵀHḡ).
      stderr: standard error of ``value`` (0 for ``method="exact"``); ḡᵀHḡ is exact, so it
        is ``trace_stderr / |ḡᵀHḡ|``.
      trace: the estimate of tr(HD).
      trace_stderr: its standard error (std of the probes / √num_samples).
      curvature: ḡᵀHḡ (exact: one Hessian-vector product).
    """

    value: jax.Array
    stderr: jax.Array
    trace: jax.Array
    trace_stderr: jax.Array
    curvature: jax.Array


@accepts_any_params
def noise_scale_simple(loss_fn, params, batch, *, chunk_size: int | None = None):
    """Simple gradient noise scale B_simple = tr(D) / |ḡ|² (McCandlish et al. 2018).

    ``tr D = (1/N) Σ_a |g_a − ḡ|²`` exactly (two passes, :func:`grd.diffusion_trace`).

    Args:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar``.
      params: parameter pytree.
      batch: pytree with leading axis N ≥ 2.
      chunk_size: stream the batch in chunks of this many examples.

    Returns:
      :class:`SimpleNoiseScale` (scalars). ``value`` is inf at a stationary point (ḡ = 0).

    Cost: ≈ N + 1 gradients (per-example norms), memory O(d + N) with ``chunk_size``.
    """
    _, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    return _simple(loss_fn, params, batch, chunk_size)


@eqx.filter_jit
def _simple(loss_fn, params, batch, chunk_size):
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    tr = diffusion_trace(loss_fn, params, batch, method="exact", chunk_size=chunk_size)
    w = mean_weights(n, tree_dtype(params))
    gbar = weighted_grad(loss_fn, params, batch, w, chunk_size=chunk_size)
    g2 = tree_vdot(gbar, gbar)
    return SimpleNoiseScale(tr / g2, tr, g2)


@accepts_any_params
def noise_scale_curvature(
    loss_fn,
    params,
    batch,
    *,
    key=None,
    num_samples: int = 32,
    method: Literal["hutchinson", "exact"] = "hutchinson",
    sampler: Literal["rademacher", "normal"] = "rademacher",
    chunk_size: int | None = None,
) -> CurvatureNoiseScale:
    """Curvature-aware noise scale B_noise = tr(HD) / (ḡᵀHḡ) (McCandlish et al. 2018).

    ``H`` is the Hessian of the mean loss f = (1/N) Σ_a f_a. ``method="hutchinson"`` estimates
    tr(HD) = E[zᵀ H (D z)] over ``num_samples`` probes z (Rademacher or Gaussian) with
    matfree's Monte Carlo estimator (``matfree.stochtrace.estimator_monte_carlo_mean_and_sem``),
    each probe costing one matrix-free D·z (≈ one gradient) and one Hessian-vector product
    (≈ two gradients); it returns the standard error std/√num_samples next to the estimate.
    HD is not symmetric, but E[zᵀAz] = tr A for any A when E[zzᵀ] = I.
    ``method="exact"`` uses tr(HD) = (1/N) Σ_a c_aᵀ H c_a with the centred gradients c_a
    (N Hessian-vector products, needs the N×d matrix C): for small models and tests.

    ḡᵀHḡ can be ≤ 0 away from a minimum (H indefinite); B_noise is then not meaningful
    and is returned as computed.

    Args:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar``.
      params: parameter pytree.
      batch: pytree with leading axis N ≥ 2.
      key: ``jax.random`` key of the probes (required for ``"hutchinson"``).
      num_samples: number of probes (≥ 2, for the standard error).
      method: ``"hutchinson"`` or ``"exact"``.
      sampler: probe law for ``"hutchinson"``: ``"rademacher"`` (lower variance) or ``"normal"``.
      chunk_size: stream the batch in chunks of this many examples.

    Returns:
      :class:`CurvatureNoiseScale` (scalars).

    Cost: hutchinson ≈ 3·num_samples + 3 gradients, the probes vmapped (memory
    O(num_samples · (d + batch activations))); exact ≈ 3N gradients, memory O(N d).
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    if method == "hutchinson":
        if key is None:
            raise ValueError("`key` is required for method='hutchinson'.")
        if not (isinstance(num_samples, int) and num_samples >= 2):
            raise ValueError(f"`num_samples` must be an int ≥ 2; got {num_samples!r}.")
        if sampler not in ("rademacher", "normal"):
            raise ValueError(f"`sampler` must be 'rademacher' or 'normal'; got {sampler!r}.")
        return _curvature_hutchinson(loss_fn, params, batch, key, num_samples, sampler, chunk_size)
    if method == "exact":
        return _curvature_exact(loss_fn, params, batch, chunk_size)
    raise ValueError(f"`method` must be 'hutchinson' or 'exact'; got {method!r}.")


def _mean_hvp(loss_fn, params, batch, v, chunk_size):
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    w = mean_weights(n, tree_dtype(params))
    return weighted_hvp(loss_fn, params, batch, w, v, chunk_size=chunk_size)


def _curvature(loss_fn, params, batch, chunk_size):
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    gbar = weighted_grad(
        loss_fn, params, batch, mean_weights(n, tree_dtype(params)), chunk_size=chunk_size
    )
    return tree_vdot(gbar, _mean_hvp(loss_fn, params, batch, gbar, chunk_size))


@eqx.filter_jit
def _curvature_hutchinson(loss_fn, params, batch, key, num_samples, sampler, chunk_size):
    def hd(v):
        return _mean_hvp(
            loss_fn,
            params,
            batch,
            _diffusion_matvec(loss_fn, params, batch, v, chunk_size),
            chunk_size,
        )

    make = stochtrace.sampler_signs if sampler == "rademacher" else stochtrace.sampler_normal
    estimate = stochtrace.estimator_monte_carlo_mean_and_sem(
        stochtrace.monte_carlo_trace(), make(params, num=num_samples)
    )
    trace, trace_se = estimate(hd, key)
    curvature = _curvature(loss_fn, params, batch, chunk_size)
    return CurvatureNoiseScale(
        trace / curvature, trace_se / jnp.abs(curvature), trace, trace_se, curvature
    )


@eqx.filter_jit
def _curvature_exact(loss_fn, params, batch, chunk_size):
    C = centred_grad_matrix(loss_fn, params, batch, chunk_size=chunk_size)
    _, unravel = tree_ravel(params)

    def quad(c):
        return jnp.dot(c, tree_ravel(_mean_hvp(loss_fn, params, batch, unravel(c), chunk_size))[0])

    trace = jnp.mean(jax.lax.map(quad, C))
    curvature = _curvature(loss_fn, params, batch, chunk_size)
    zero = jnp.zeros((), trace.dtype)
    return CurvatureNoiseScale(trace / curvature, zero, trace, zero, curvature)


def sgd_temperature(learning_rate, batch_size):
    """SGD temperature β⁻¹ = η / (2b) (theory §5; Chaudhari & Soatto 2018).

    Args:
      learning_rate: step size η > 0 (scalar or array).
      batch_size: minibatch size b ≥ 1 (scalar or array).

    Returns:
      η / (2b), broadcast.
    """
    eta = jnp.asarray(learning_rate)
    b = jnp.asarray(batch_size)
    if not isinstance(eta, jax.core.Tracer) and bool(jnp.any(eta <= 0)):
        raise ValueError(f"`learning_rate` must be > 0; got {learning_rate!r}.")
    if not isinstance(b, jax.core.Tracer) and bool(jnp.any(b < 1)):
        raise ValueError(f"`batch_size` must be ≥ 1; got {batch_size!r}.")
    return eta / (2 * b)
