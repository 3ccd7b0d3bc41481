"""Loss specifications: per-example losses (with aux), batch-coupled losses, example keys.

grd's functions take a *loss*: by default ``loss_fn(params, example) -> scalar``, evaluated on
each example with ``jax.vmap``. Two wrappers widen that:

* :func:`per_example` — the same, with ``has_aux=True`` for ``(loss, aux)``;
* :func:`batched` — ``losses_fn(params, batch) -> (N,)``: one call on the whole batch, so the
  examples may interact (BatchNorm in training mode, any model applied to the batch at once).

For a batch-coupled map ``F(w) = (f_1(w), …, f_N(w))`` the "per-example gradients" are the rows
of its Jacobian ``J = ∂F/∂w`` (N×d), and ``D = Cov_a(J_a, J_a) = Jᵀ(I − 11ᵀ/N)J / N``: with
``s = J v`` (one JVP) ``D v = Jᵀ centred(s)`` (one VJP) — exact, and the same primitive as the
per-example path (theory §2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._tree import tree_ravel


class PerExample(eqx.Module):
    """A per-example loss ``fn(params, example) -> scalar`` (or ``(scalar, aux)``).

    ``static`` is the non-differentiable part of the user's params (see :mod:`grd._params`):
    grd differentiates with respect to the inexact-array leaves only and recombines them with
    ``static`` before calling ``fn``.
    """

    fn: Callable
    has_aux: bool = eqx.field(static=True, default=False)
    static: Any = None

    def full_params(self, p):
        return p if self.static is None else eqx.combine(p, self.static)

    def with_aux(self, p, example):
        out = self.fn(self.full_params(p), example)
        return out if self.has_aux else (out, None)

    def __call__(self, p, example):
        return self.with_aux(p, example)[0]

    def bind(self, static):
        return type(self)(self.fn, self.has_aux, static)


class Batched(PerExample):
    """A batch-coupled loss ``fn(params, batch) -> (N,)`` (or ``((N,), aux)``); see
    :func:`batched`."""

    def __call__(self, p, batch):  # the (N,) vector of losses, aux dropped
        return self.with_aux(p, batch)[0]

    def check_output(self, params, batch):
        """Raise unless ``fn(params, batch)`` returns a floating ``(N,)`` vector."""
        n = jax.tree_util.tree_leaves(batch)[0].shape[0]
        out = jax.eval_shape(self, params, batch)
        shape = getattr(out, "shape", type(out).__name__)
        if shape != (n,):
            raise ValueError(
                "`grd.batched(losses_fn)`: `losses_fn(params, batch)` must return the (N,) vector "
                f"of per-example losses (N = {n}); got shape {shape}. Do not average the losses"
                + (
                    "; with has_aux=True return `(losses, aux)`."
                    if self.has_aux
                    else " (and pass has_aux=True if it returns `(losses, aux)`)."
                )
            )
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(
                f"`grd.batched(losses_fn)` must return floating-point losses; got {out.dtype}."
            )


def per_example(loss_fn, *, has_aux: bool = False) -> PerExample:
    """A per-example loss ``loss_fn(params, example)``; ``has_aux=True`` for ``(loss, aux)``.

    Every geometric quantity ignores ``aux``; :func:`grd.per_example_losses` returns
    ``(losses, aux)`` (aux stacked over examples). A plain callable is ``per_example(fn)``.
    """
    if isinstance(loss_fn, PerExample):
        raise TypeError("`loss_fn` is already a grd loss; do not wrap it twice.")
    return PerExample(loss_fn, has_aux)


def batched(losses_fn, *, has_aux: bool = False) -> Batched:
    """A batch-coupled loss: ``losses_fn(params, batch) -> (N,)`` per-example losses.

    Use it when the loss of one example depends on the others — BatchNorm in training mode,
    any model applied to the whole batch at once. Accepted wherever a per-example ``loss_fn``
    is (core functions, metric, Christoffel, flows; the optax transform's
    ``per_example_loss_fn`` is already such a vector map). With ``F(w) = losses_fn(w, batch)``
    and ``J = ∂F/∂w``:

        D = (1/N) Jᵀ (I − 11ᵀ/N) J,     D v = Jᵀ (s − s̄)/N  with  s = J v

    (one JVP and one VJP of the batched forward pass, exact; theory §2).

    ``chunk_size`` is rejected with a batched loss: a chunk of the batch is a different
    batch (BatchNorm would normalise over the chunk), so chunking would change D. Memory is
    that of one batch gradient (plus N numbers). Per-example quantities (``per_example_grads``,
    ``diffusion_trace(method="exact")``, ``method="gram"``/``"woodbury"``) cost N VJPs of the
    batched map instead of one vmapped gradient.

    Args:
      losses_fn: ``losses_fn(params, batch) -> (N,)`` (``((N,), aux)`` with ``has_aux``).
      has_aux: the function returns ``(losses, aux)`` (e.g. flax's updated ``batch_stats``);
        grd ignores ``aux`` except in :func:`grd.per_example_losses`, which returns it.

    Returns:
      A loss object to pass as ``loss_fn``.
    """
    if isinstance(losses_fn, PerExample):
        raise TypeError("`losses_fn` is already a grd loss; do not wrap it twice.")
    return Batched(losses_fn, has_aux)


def is_batched(loss_fn) -> bool:
    return isinstance(loss_fn, Batched)


def example_keys(key, batch, *, name: str = "key"):
    """Add per-example PRNG keys to ``batch``: ``{**batch, name: jax.random.split(key, N)}``.

    For dropout (or any randomness) inside a per-example ``loss_fn``: each example gets its
    own key, so the per-example losses are those of one fixed draw of the masks — the
    quantity SGD's noise is made of — and D is the covariance of those gradients. Use a
    fresh ``key`` per step, as for training. ``batch`` must be a dict (or pass a tuple
    ``(batch, keys)`` yourself).
    """
    if not isinstance(batch, dict):
        raise TypeError(
            f"`batch` must be a dict to add per-example keys under {name!r}; got "
            f"{type(batch).__name__}. Build `(batch, jax.random.split(key, N))` yourself."
        )
    if name in batch:
        raise ValueError(f"`batch` already has an entry {name!r}; pass another `name`.")
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    return {**batch, name: jax.random.split(key, n)}


# --------------------------------------------------------------------------------------------
# Per-example quantities for either kind of loss (the internal dispatch).


def example_losses(loss_fn, params, batch, per_example_map, chunk_size):
    """``(N,)`` losses, or ``(losses, aux)`` for a loss built with ``has_aux=True``."""
    aux = isinstance(loss_fn, PerExample) and loss_fn.has_aux
    if is_batched(loss_fn):
        out = loss_fn.with_aux(params, batch)
    elif aux:
        out = per_example_map(lambda ex: loss_fn.with_aux(params, ex), batch, chunk_size)
    else:
        return per_example_map(lambda ex: loss_fn(params, ex), batch, chunk_size)
    return out if aux else out[0]


def example_grads(loss_fn, params, batch, per_example_map, chunk_size, *, flat=False):
    """Per-example gradients (rows of J for a batched loss), pytree or ``(N, d)`` if ``flat``."""
    if is_batched(loss_fn):
        if flat:
            w, unravel = tree_ravel(params)
            return jax.jacrev(lambda x: loss_fn(unravel(x), batch))(w)
        return jax.jacrev(loss_fn)(params, batch)
    if flat:
        return per_example_map(
            lambda ex: tree_ravel(jax.grad(loss_fn)(params, ex))[0], batch, chunk_size
        )
    return per_example_map(lambda ex: jax.grad(loss_fn)(params, ex), batch, chunk_size)


def centred_sq_norms(loss_fn, params, batch, gbar_flat, per_example_map, chunk_size):
    """``|g_a − ḡ|²`` for each example (a batched loss: N VJPs of one linearisation)."""
    if is_batched(loss_fn):
        n = jax.tree_util.tree_leaves(batch)[0].shape[0]
        losses, vjp = jax.vjp(lambda p: loss_fn(p, batch), params)

        def sq(a):  # row a of J: the VJP of the unit vector e_a (O(N) memory, not N²)
            row = jax.nn.one_hot(a, n, dtype=losses.dtype)
            return jnp.sum((tree_ravel(vjp(row)[0])[0] - gbar_flat) ** 2)

        return jax.lax.map(sq, jnp.arange(n))

    def sq(ex):
        g = tree_ravel(jax.grad(loss_fn)(params, ex))[0]
        return jnp.sum((g - gbar_flat) ** 2)

    return per_example_map(sq, batch, chunk_size)


def example_hessians_flat(loss_fn, params, batch, per_example_map):
    """``(G, Hs)``: per-example gradients ``(N, d)`` and Hessians ``(N, d, d)`` (dense)."""
    w, unravel = tree_ravel(params)
    if is_batched(loss_fn):
        F = lambda x: loss_fn(unravel(x), batch)
        return jax.jacrev(F)(w), jax.jacfwd(jax.jacrev(F))(w)
    f = lambda x, ex: loss_fn(unravel(x), ex)
    G = per_example_map(lambda ex: jax.grad(f)(w, ex), batch, None)
    Hs = per_example_map(lambda ex: jax.hessian(f)(w, ex), batch, None)
    return G, Hs
