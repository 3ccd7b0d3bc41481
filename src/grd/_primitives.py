"""The one primitive behind D·v, Γ(v,v) and ½∂g(v,v): centred per-example weights.

Every matrix-free product of grd is a covariance over examples of a per-example scalar
``s_a`` (a JVP value) with the per-example gradient ``g_a`` or Hessian product ``H_a v``:

    Cov_a(s_a, g_a) = ∇_w [ (1/N) Σ_a (s_a − s̄) f_a(w) ]           (weights held fixed)

(theory §2, §4). Centring the weights first is the two-pass form of the covariance: it avoids
the cancellation of E[s g] − E[s] E[g] in float32. The functions here stream the batch in
chunks of ``chunk_size`` examples (full chunks sliced in place inside a scan, the remainder
in one more call: exact), so working memory is bounded by the chunk and not by N.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._batched import is_batched
from ._tree import tree_add, tree_zeros_like


def _single(loss_fn, params, example):
    return loss_fn(params, example)


def check_chunk_size(chunk_size):
    """Raise unless ``chunk_size`` is ``None`` or a positive integer."""
    if chunk_size is not None and not (
        isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
    ):
        raise ValueError(f"`chunk_size` must be a positive integer or None; got {chunk_size!r}.")


def per_example_map(fn, batch, chunk_size: int | None):
    """``vmap(fn)(batch)``, or ``lax.map`` over chunks of ``chunk_size`` examples."""
    check_chunk_size(chunk_size)
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return jax.vmap(fn)(batch)
    # Like ``lax.map(fn, batch, batch_size=chunk_size)``, but full chunks are sliced in place
    # (lax.map reshapes a slice of the batch, which copies the data when N % chunk_size ≠ 0).
    n_full, rest = divmod(n, chunk_size)

    def take(start, size):
        return jax.tree_util.tree_map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=0), batch
        )

    def body(_, i):
        return None, jax.vmap(fn)(take(i * chunk_size, chunk_size))

    _, out = jax.lax.scan(body, None, jnp.arange(n_full))
    out = jax.tree_util.tree_map(lambda x: x.reshape((n_full * chunk_size,) + x.shape[2:]), out)
    if rest:
        tail = jax.vmap(fn)(take(n_full * chunk_size, rest))
        out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    return out


def jvp_values(loss_fn, params, batch, v, *, order: int = 1, chunk_size: int | None = None):
    """Per-example directional derivatives of ``f_a`` along ``v``.

    ``order=1``: ``s_a = g_a·v`` (one JVP of the vector map w ↦ (f_a(w))_a).
    ``order=2``: ``q_a = vᵀ H_a v`` (forward over forward).

    Returns an ``(N,)`` array. Cost: one JVP (order 1) or two nested JVPs (order 2).
    """

    if is_batched(loss_fn):  # one JVP (or two nested) of the batched map w ↦ F(w)
        return _jvp_order(lambda p: loss_fn(p, batch), params, v, order)

    def one(ex):
        return _jvp_order(lambda p: loss_fn(p, ex), params, v, order)

    return per_example_map(one, batch, chunk_size)


def _jvp_order(f, params, v, order):
    if order == 1:
        return jax.jvp(f, (params,), (v,))[1]
    if order == 2:
        return jax.jvp(lambda p: jax.jvp(f, (p,), (v,))[1], (params,), (v,))[1]
    raise ValueError(f"order must be 1 or 2; got {order}.")


def centred(s):
    """``(s − mean(s)) / N``: the weights of a covariance over examples.

    Centred twice: after one pass the rounding error of ``mean(s)`` leaves ``Σ c_a`` of order
    ``eps·|s̄|``, which the VJP multiplies by the mean gradient; the second pass brings it to
    ``eps·Σ|c_a|`` (the corrected two-pass algorithm of Chan, Golub & LeVeque 1983).
    """
    n = s.shape[0]
    c = s - jnp.mean(s)
    return (c - jnp.mean(c)) / n


def chunked_sum(fn, params_like, batch, weights, chunk_size: int | None):
    """``Σ_chunks fn(batch_chunk, weights_chunk)``: a pytree sum streamed over the examples.

    Full chunks are read with ``dynamic_slice`` inside a ``lax.scan`` (no copy or padding of
    the batch: memory beyond the inputs is one chunk's work), the remainder in one more call.
    ``params_like`` gives the structure of the accumulator.
    """
    n = weights.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(batch, weights)
    n_full, rest = divmod(n, int(chunk_size))

    def take(start, size):
        sl = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)
        return jax.tree_util.tree_map(sl, batch), sl(weights)

    def body(acc, i):
        return tree_add(acc, fn(*take(i * chunk_size, chunk_size))), None

    out, _ = jax.lax.scan(body, tree_zeros_like(params_like), jnp.arange(n_full))
    if rest:
        out = tree_add(out, fn(*take(n_full * chunk_size, rest)))
    return out


def weighted_loss(loss_fn, params, batch, weights):
    """``Σ_a c_a f_a(w)``.

    Callers differentiate it with respect to ``params`` only, so the weights are held fixed
    in that derivative while outer transformations (``jax.grad`` of a D·v product with
    respect to ``params``) still see their dependence on ``w``: no ``stop_gradient`` here.
    """
    losses = batch_losses(loss_fn, params, batch)
    return jnp.sum(weights.astype(losses.dtype) * losses)


def batch_losses(loss_fn, params, batch):
    """``(f_a(w))_a``, the (N,) vector of losses: vmapped per-example, or a batched loss."""
    if is_batched(loss_fn):
        return loss_fn(params, batch)
    return jax.vmap(loss_fn, in_axes=(None, 0))(params, batch)


def weighted_grad(loss_fn, params, batch, weights, *, chunk_size: int | None = None):
    """``∇_w Σ_a c_a f_a(w)`` with fixed weights ``c`` (one VJP; chunked when asked).

    With centred weights ``c = (s − s̄)/N`` this is ``Cov_a(s_a, g_a)``.
    """
    check_chunk_size(chunk_size)
    grad = lambda b, w: jax.grad(weighted_loss, argnums=1)(loss_fn, params, b, w)
    return chunked_sum(grad, params, batch, weights, chunk_size)


def weighted_hvp(loss_fn, params, batch, weights, v, *, chunk_size: int | None = None):
    """``∇²_w [Σ_a c_a f_a(w)] · v`` with fixed weights (forward-over-reverse HVP)."""

    def hvp(b, w):
        grad_fn = lambda p: jax.grad(weighted_loss, argnums=1)(loss_fn, p, b, w)
        return jax.jvp(grad_fn, (params,), (v,))[1]

    check_chunk_size(chunk_size)
    return chunked_sum(hvp, params, batch, weights, chunk_size)


def mean_weights(n: int, dtype):
    """Uniform weights ``1/N``: the mean loss."""
    return jnp.full((n,), 1.0 / n, dtype=dtype)
