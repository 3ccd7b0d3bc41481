"""The diffusion matrix D(w) of SGD: per-example quantities, matrix-free products, spectrum.

``D(w) = (1/N) Σ_a g_a g_aᵀ − ḡ ḡᵀ = (1/N) CᵀC`` (theory §2), the covariance over examples of
the per-example gradients ``g_a = ∇f_a(w)``; ``C`` is the N×d matrix of centred gradients.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _validation as val
from ._batched import centred_sq_norms, example_grads, example_losses
from ._lanczos import lanczos_tridiag, ritz_pairs
from ._params import accepts_any_params
from ._primitives import batch_losses, centred, jvp_values, per_example_map, weighted_grad
from ._tree import tree_ravel, tree_size


@val.message_first
@accepts_any_params
def per_example_losses(loss_fn, params, batch, *, chunk_size: int | None = None) -> jax.Array:
    """The ``(N,)`` vector of per-example losses ``f_a(w)`` (``(losses, aux)`` for a loss built
    with ``has_aux=True``).

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``.
      params: parameter pytree.
      batch: pytree whose leaves have a leading axis N.
      chunk_size: stream the batch in chunks of this many examples (``lax.map``).

    Returns:
      ``(N,)`` array.
    """
    val.core_inputs(loss_fn, params, batch, min_size=1)
    return example_losses(loss_fn, params, batch, per_example_map, chunk_size)


@val.message_first
@accepts_any_params
def per_example_grads(loss_fn, params, batch, *, chunk_size: int | None = None):
    """Per-example gradients ``g_a = ∇f_a(w)`` as a pytree with a leading axis N.

    This stores N×d numbers: the matrix-free functions never call it. Use it for the
    Woodbury inverse, the exact Gram spectrum and for small models.
    """
    val.core_inputs(loss_fn, params, batch, min_size=1)
    return example_grads(loss_fn, params, batch, per_example_map, chunk_size)


@eqx.filter_jit
def _grad_matrix(loss_fn, params, batch, chunk_size=None):
    """The ``(N, d)`` matrix of per-example gradients in ``ravel_pytree`` order."""
    return example_grads(loss_fn, params, batch, per_example_map, chunk_size, flat=True)


@val.message_first
@accepts_any_params
def centred_grad_matrix(loss_fn, params, batch, *, chunk_size: int | None = None) -> jax.Array:
    """``C``: the ``(N, d)`` matrix of centred per-example gradients ``g_a − ḡ`` (dense)."""
    val.core_inputs(loss_fn, params, batch, min_size=1)
    G = _grad_matrix(loss_fn, params, batch, chunk_size)
    return G - jnp.mean(G, axis=0)


@val.message_first
@accepts_any_params
def diffusion_matvec(loss_fn, params, batch, v, *, chunk_size: int | None = None):
    """Matrix-free diffusion product ``D v = Cov_a(g_a, g_a·v)`` (theory §2).

    With ``s_a = g_a·v`` (one JVP of w ↦ (f_a(w))_a), ``D v = ∇_w (1/N) Σ_a (s_a − s̄) f_a(w)``
    with the weights held fixed (one VJP). No per-example gradient is stored.

    Args:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar``.
      params: parameter pytree (d scalars in all).
      batch: pytree with leading axis N ≥ 2.
      v: pytree with the structure of ``params``.
      chunk_size: stream the batch in chunks (two passes: JVP values, then the VJP);
        exact for any chunk size.

    Returns:
      ``D v`` with the structure of ``params``.

    Cost: ≈ one batch gradient (one JVP + one VJP); memory O(d + N) (O(d + chunk) per pass).
    """
    _, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    return _diffusion_matvec(loss_fn, params, batch, v, chunk_size)


@eqx.filter_jit
def _diffusion_matvec(loss_fn, params, batch, v, chunk_size=None):
    s = jvp_values(loss_fn, params, batch, v, chunk_size=chunk_size)
    return weighted_grad(loss_fn, params, batch, centred(s), chunk_size=chunk_size)


@val.message_first
@accepts_any_params
def diffusion_matrix(loss_fn, params, batch, *, chunk_size: int | None = None) -> jax.Array:
    """Dense ``D = CᵀC / N``, shape ``(d, d)`` in ``ravel_pytree`` order (small d only)."""
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    C = centred_grad_matrix(loss_fn, params, batch, chunk_size=chunk_size)
    return C.T @ C / n


@val.message_first
@accepts_any_params(guard=True)
def diffusion_trace(
    loss_fn,
    params,
    batch,
    *,
    method: Literal["exact", "hutchinson"] = "exact",
    num_samples: int = 32,
    key=None,
    chunk_size: int | None = None,
) -> jax.Array:
    """``tr D = (1/N) Σ_a |g_a − ḡ|²`` (theory §2).

    ``method="exact"`` computes per-example gradient norms in two passes (mean gradient,
    then centred norms; chunked, never storing N×d numbers when ``chunk_size`` is set).
    ``method="hutchinson"`` averages ``zᵀ D z`` over ``num_samples`` Rademacher probes
    (``num_samples`` matrix-free products; unbiased, variance ∝ ‖D‖_F²/num_samples).
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    if method == "exact":
        weights = jnp.full((n,), 1.0 / n, dtype=val_dtype(params))
        gbar = weighted_grad(loss_fn, params, batch, weights, chunk_size=chunk_size)
        gbar_flat = tree_ravel(gbar)[0]
        sq = centred_sq_norms(loss_fn, params, batch, gbar_flat, per_example_map, chunk_size)
        return jnp.mean(sq)
    if method == "hutchinson":
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"`num_samples` must be an integer ≥ 1; got {num_samples!r}.")
        if key is None:
            raise ValueError("`key` is required for method='hutchinson'.")
        flat, unravel = tree_ravel(params)

        def quad(k):
            z = jax.random.rademacher(k, flat.shape, dtype=flat.dtype)
            dz = _diffusion_matvec(loss_fn, params, batch, unravel(z), chunk_size)
            return jnp.dot(z, tree_ravel(dz)[0])

        return jnp.mean(jax.lax.map(quad, jax.random.split(key, num_samples)))
    raise ValueError(f"`method` must be 'exact' or 'hutchinson'; got {method!r}.")


def val_dtype(params):
    return jnp.result_type(*jax.tree_util.tree_leaves(params))


class Spectrum(NamedTuple):
    """Eigenvalues of D in descending order, and optionally eigenvectors as a pytree.

    ``eigenvectors`` has the structure of ``params`` with a leading axis k (``None`` unless
    requested).
    """

    eigenvalues: jax.Array
    eigenvectors: object = None


@accepts_any_params(guard=True)
def diffusion_spectrum(
    loss_fn,
    params,
    batch,
    k: int | None = None,
    *,
    method: Literal["gram", "lanczos"] = "gram",
    num_matvecs: int | None = None,
    key=None,
    return_eigenvectors: bool = False,
    chunk_size: int | None = None,
) -> Spectrum:
    """Eigenvalues of D in descending order (theory §2).

    ``method="gram"`` (exact): the non-zero eigenvalues of D are those of the N×N Gram matrix
    ``C Cᵀ / N``; eigenvectors ``Cᵀu / √(Nλ)``. Needs the N×d matrix C (N gradients).
    ``method="lanczos"`` (top-k, matrix-free): Lanczos with full reorthogonalisation
    (:func:`grd.lanczos_eigh`'s loop) with ``num_matvecs`` products (default
    ``min(d, N, max(2k + 10, 30))``). When N < d (and no ``chunk_size``) the loop runs on the
    dual ``K = C Cᵀ / N``, whose non-zero eigenvalues are those of D: each step is the same
    VJP + JVP as a D·v product and the basis, (m, N), costs nothing to reorthogonalise; the
    Ritz vectors are lifted back as ``Cᵀy / ‖Cᵀy‖``. Otherwise (N ≥ d, or a chunked batch)
    the basis is (m, d) rows in two blocks, reorthogonalised by one Gram–Schmidt pass per
    step (a second when it cancels), memory O(m·d). Without ``chunk_size`` the per-example
    losses are linearised once, outside the loop. Measured in benchmarks/results/lanczos.md
    (float32, 2-core CPU, k = 10, 30 steps, against 30 standalone D·v products). The call
    is compiled once per ``(loss_fn, k, num_matvecs)`` and shapes: repeated eager calls
    with the same ``loss_fn`` do not retrace.

    Args:
      k: number of eigenvalues. ``gram``: default ``min(N − 1, d)`` (``rank D ≤ N − 1``),
        at most d (eigenvalues past N − 1 are zero). ``lanczos``: required, ≤ min(N − 1, d).
      num_matvecs: Lanczos depth, between k and min(d, N) (the Krylov space of D has
        dimension ≤ rank D + 1 ≤ N; deeper runs break down).
      key: PRNG key of the Lanczos start vector (default ``PRNGKey(0)``).
      return_eigenvectors: also return the unit eigenvectors as a pytree with leading axis k.

    Returns:
      :class:`Spectrum`.
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    d = tree_size(params)
    if k is not None and not 1 <= k <= d:
        raise ValueError(f"`k` must be between 1 and d = {d}; got {k}.")
    flat, unravel = tree_ravel(params)
    if method == "gram":
        C = centred_grad_matrix(loss_fn, params, batch, chunk_size=chunk_size)
        gram = C @ C.T / n
        lam, U = jnp.linalg.eigh(gram)
        lam, U = lam[::-1], U[:, ::-1]
        m = min(n - 1, d) if k is None else k
        if m > n:
            lam = jnp.concatenate([lam, jnp.zeros((m - n,), lam.dtype)])
            U = jnp.concatenate([U, jnp.zeros((n, m - n), U.dtype)], axis=1)
        lam = jnp.clip(lam[:m], 0.0, None)
        vecs = None
        if return_eigenvectors:
            scale = jnp.where(lam > 0, 1.0 / jnp.sqrt(jnp.where(lam > 0, n * lam, 1.0)), 0.0)
            V = (C.T @ U[:, :m]) * scale  # (d, m)
            vecs = jax.vmap(unravel)(V.T)
        return Spectrum(lam, vecs)
    if method == "lanczos":
        if k is None:
            raise ValueError(
                "`k` is required for method='lanczos' (the number of top eigenvalues)."
            )
        if k > min(n - 1, d):
            raise ValueError(
                f"`k` must be ≤ min(N − 1, d) = {min(n - 1, d)} for method='lanczos' "
                f"(rank D ≤ N − 1); got {k}. Use method='gram' for the full spectrum."
            )
        cap = min(d, n)  # the Krylov space of D has dimension ≤ rank D + 1 ≤ N
        m = num_matvecs if num_matvecs is not None else min(cap, max(2 * k + 10, 30))
        if not k <= m <= cap:
            raise ValueError(
                f"`num_matvecs` must be between k = {k} and min(d, N) = {cap} (past rank D + 1 "
                f"Lanczos breaks down); got {m}."
            )
        key = jax.random.PRNGKey(0) if key is None else key
        lam, V = _lanczos_top(
            loss_fn, params, batch, key, m=m, k=k, vectors=return_eigenvectors,
            chunk_size=chunk_size,
        )  # fmt: skip
        return Spectrum(lam, None if V is None else jax.vmap(unravel)(V))
    raise ValueError(f"`method` must be 'gram' or 'lanczos'; got {method!r}.")


def _diffusion_operator(loss_fn, params, batch, chunk_size):
    """Flat ``x ↦ D x`` for a Lanczos loop, its loop-invariant work done once.

    Without chunking, ``w ↦ (f_a(w))_a`` is linearised at ``params`` (one forward pass,
    residuals of O(N · activations)): each product is then the linear JVP ``s = J x``
    and the transpose ``Jᵀ c(s)`` with centred weights ``c`` (theory §2). With ``chunk_size``
    the residuals of the whole batch would defeat the memory bound: the streamed product.
    """
    flat, unravel = tree_ravel(params)
    if chunk_size is None:
        losses = lambda p: batch_losses(loss_fn, p, batch)
        _, jvp = jax.linearize(losses, params)
        vjp = jax.linear_transpose(jvp, params)

        def matvec(x):
            s = jvp(unravel(x))
            return tree_ravel(vjp(centred(s).astype(s.dtype))[0])[0].astype(x.dtype)

        return matvec

    def matvec(x):
        return tree_ravel(_diffusion_matvec(loss_fn, params, batch, unravel(x), chunk_size))[0]

    return matvec


def _gram_operator(loss_fn, params, batch):
    """The dual of D on the examples: ``y ↦ K y`` with ``K = C Cᵀ / N`` (N×N), and ``y ↦ Cᵀ y``.

    K has the non-zero eigenvalues of ``D = CᵀC / N`` (theory §2); ``Cᵀ y = Jᵀ P y`` with J the
    Jacobian of ``w ↦ (f_a(w))_a`` and P the centring projector, so ``K y = P J Jᵀ P y / N``
    costs one VJP and one JVP, the linear halves of a D·v product in the other order. The
    forward pass is linearised once (loop invariant).
    """
    losses = lambda p: batch_losses(loss_fn, p, batch)
    _, jvp = jax.linearize(losses, params)
    vjp = jax.linear_transpose(jvp, params)

    def transpose(y):  # Cᵀ y as a pytree like params
        c = y - jnp.mean(y)
        return vjp((c - jnp.mean(c)).astype(y.dtype))[0]

    def lift(y):
        return tree_ravel(transpose(y))[0]

    def matvec(y):
        return centred(jvp(transpose(y))).astype(y.dtype)

    return matvec, lift


@eqx.filter_jit
def _lanczos_top(loss_fn, params, batch, key, *, m, k, vectors, chunk_size):
    """Top-k eigenpairs of D by ``m`` Lanczos steps (compiled once per loss_fn, m, k).

    When N < d and the batch is not chunked, the loop runs on the dual ``K = C Cᵀ / N``
    (:func:`_gram_operator`): the same products, but the basis and its full
    reorthogonalisation live in R^N, not R^d. In R^d the reorthogonalisation is
    memory-bound (it reads the (m, d) basis once or twice per step) and measured 1.9× and
    3.0× the products' own time (benchmarks/results/lanczos.md); in R^N it is negligible.
    The Ritz vectors are lifted back with ``v = Cᵀ y / ‖Cᵀ y‖`` (k VJPs, batched).
    """
    flat, unravel = tree_ravel(params)
    n = val.batch_size(batch)
    if chunk_size is None and n < flat.shape[0]:
        matvec, lift = _gram_operator(loss_fn, params, batch)
        y0 = jax.random.normal(key, (n,), flat.dtype)
        alpha, beta, blocks = lanczos_tridiag(matvec, y0, m, key=jax.random.fold_in(key, 1))
        lam, Y = ritz_pairs(alpha, beta, blocks, k, vectors=vectors)
        V = None
        if vectors:
            V = jax.vmap(lift)(Y)
            norm = jnp.linalg.norm(V, axis=1, keepdims=True)
            V = jnp.where(norm > 0, V / jnp.where(norm > 0, norm, 1), 0.0)
        return jnp.clip(lam, 0.0, None), V
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    matvec = _diffusion_operator(loss_fn, params, batch, chunk_size)
    alpha, beta, blocks = lanczos_tridiag(matvec, v0, m, key=jax.random.fold_in(key, 1))
    lam, V = ritz_pairs(alpha, beta, blocks, k, vectors=vectors)
    return jnp.clip(lam, 0.0, None), V


def diffusion_rank(
    eigenvalues, d: int, *, threshold: Literal["relative", "absolute"] = "relative", atol=None
):
    """Numerical rank of D from its eigenvalues (theory §6).

    ``threshold="relative"``: count of λ > λ_max · d · eps_float32 (Chaudhari & Soatto);
    ``"absolute"``: count of λ > ``atol``. The relative threshold cannot tell D = 0 from
    round-off (λ_max is then itself round-off): use ``"absolute"`` where D may vanish.
    """
    lam = jnp.asarray(eigenvalues)
    if threshold == "relative":
        tol = jnp.max(lam) * d * jnp.finfo(jnp.float32).eps
    elif threshold == "absolute":
        if atol is None:
            raise ValueError("`atol` is required for threshold='absolute'.")
        tol = atol
    else:
        raise ValueError(f"`threshold` must be 'relative' or 'absolute'; got {threshold!r}.")
    return jnp.sum(lam > tol)


@accepts_any_params
def lambda_max(loss_fn, params, batch, *, num_matvecs: int = 20, key=None, chunk_size=None):
    """Largest eigenvalue of D by Lanczos (``num_matvecs`` matrix-free products)."""
    d = tree_size(params)
    return diffusion_spectrum(
        loss_fn,
        params,
        batch,
        1,
        method="lanczos",
        num_matvecs=min(d, num_matvecs, val.batch_size(batch)),
        key=key,
        chunk_size=chunk_size,
    ).eigenvalues[0]
