"""Lanczos with full reorthogonalisation at the cost of its products (theory §2, §6).

One loop, :func:`lanczos_tridiag`, serves every symmetric operator of grd (D, the Hessian,
D from a probe for stochastic Lanczos quadrature): it takes a flat ``matvec`` closure and a
start vector and returns the tridiagonal matrix ``T`` and the basis ``Q`` (``Q A Qᵀ = T``
on the Krylov space). What makes it cheap:

- the basis is stored as rows (m, d), in a few blocks: step i of block j projects against
  the finished blocks (loop invariants, never copied) and the current one, so the
  reorthogonalisation reads ≈ ¾·i·d numbers instead of m·d (two blocks), each read
  contiguous;
- the three-term recurrence first, then one classical Gram–Schmidt pass against the whole
  basis (full reorthogonalisation), and a second pass only when the first removed more than
  half of the vector (the "twice is enough" test of Daniel, Gragg, Kaufman & Stewart 1976);
- callers pass a matvec whose loop-invariant part is hoisted out of the loop: for D the
  forward pass of the per-example losses is linearised once (``jax.linearize``) and each
  step runs only the linear JVP and its transpose.

Breakdown (``β ≈ 0``: the Krylov space is invariant, e.g. D of rank < m − 1, or D = 0)
restarts with a random vector orthogonal to the basis and a zero off-diagonal, so ``T``
stays the matrix of ``A`` on an orthonormal basis and nothing is divided by zero.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _num_blocks(m: int) -> int:
    # Two blocks save a quarter of the reorthogonalisation reads; more blocks save little
    # more (≤ 1/3) and each one traces the matvec once more (compile time).
    return 1 if m < 8 else 2


def lanczos_tridiag(matvec, v0, num_matvecs: int, *, key=None):
    """``num_matvecs`` Lanczos steps with full reorthogonalisation on a flat symmetric operator.

    Args:
      matvec: ``x ↦ A x`` on flat ``(d,)`` vectors (A symmetric); a closure whose
        loop-invariant work is already hoisted (it is traced once per basis block).
      v0: ``(d,)`` start vector (normalised here; must be non-zero).
      num_matvecs: m, the Krylov depth (m ≤ d).
      key: PRNG key of the restart vectors after a breakdown (default ``PRNGKey(0)``).

    Returns:
      ``(alpha, beta, blocks)``: the diagonal ``(m,)`` and off-diagonal ``(m − 1,)`` of T and
      the basis as a tuple of row blocks (stacked they are the ``(m, d)`` orthonormal Q).
    """
    m = int(num_matvecs)
    d = v0.shape[0]
    dtype = v0.dtype
    key = jax.random.PRNGKey(0) if key is None else key
    eps = jnp.finfo(dtype).eps
    nb = _num_blocks(m)
    size = math.ceil(m / nb)
    done: list[jax.Array] = []
    alpha = jnp.zeros((m,), dtype)
    beta = jnp.zeros((m,), dtype)
    q = v0 / jnp.linalg.norm(v0)
    q_prev = jnp.zeros_like(q)
    anorm = jnp.zeros((), dtype)
    for start in range(0, m, size):
        stop = min(start + size, m)
        block = jnp.zeros((stop - start, d), dtype)

        def project(w, block, done=tuple(done)):
            rows = (*done, block)
            hs = [r @ w for r in rows]  # classical Gram–Schmidt: all coefficients first
            return w - sum(h @ r for h, r in zip(hs, rows, strict=True))

        def body(i, carry, start=start, project=project):
            block, alpha, beta, q, q_prev, anorm = carry
            block = jax.lax.dynamic_update_slice(block, q[None], (i - start, 0))
            w = matvec(q)
            a = jnp.vdot(q, w)
            b_prev = jnp.where(i > 0, beta[jnp.maximum(i - 1, 0)], 0.0)
            w = w - a * q - b_prev * q_prev
            norm_local = jnp.linalg.norm(w)
            w = project(w, block)
            b = jnp.linalg.norm(w)

            def again(w, block=block, project=project):
                w = project(w, block)
                return w, jnp.linalg.norm(w)

            w, b = jax.lax.cond(b < 0.5 * norm_local, again, lambda w: (w, b), w)
            anorm = jnp.maximum(anorm, jnp.abs(a) + b + b_prev)
            broke = b <= 8 * eps * anorm  # ‖w‖ at round-off: the Krylov space is invariant

            def restart(_):
                r = jax.random.normal(jax.random.fold_in(key, i), (d,), dtype)
                r = project(project(r, block), block)
                return r / jnp.linalg.norm(r)

            q_next = jax.lax.cond(broke, restart, lambda w: w / jnp.where(broke, 1, b), w)
            alpha = alpha.at[i].set(a)
            beta = beta.at[i].set(jnp.where(broke, 0.0, b))
            return block, alpha, beta, q_next, q, anorm

        block, alpha, beta, q, q_prev, anorm = jax.lax.fori_loop(
            start, stop, body, (block, alpha, beta, q, q_prev, anorm)
        )
        done.append(block)
    return alpha, beta[: m - 1], tuple(done)


def ritz_pairs(alpha, beta, blocks, k: int, *, vectors: bool = True, which: str = "largest"):
    """Top-k Ritz values (descending) and Ritz vectors ``(k, d)`` from :func:`lanczos_tridiag`.

    ``which="largest"``: algebraically largest; ``"magnitude"``: largest ``|θ|``.
    """
    T = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
    theta, S = jnp.linalg.eigh(T)
    score = theta if which == "largest" else jnp.abs(theta)
    order = jnp.argsort(-score)[:k]
    theta, S = theta[order], S[:, order]
    if not vectors:
        return theta, None
    V, row = 0.0, 0
    for blk in blocks:
        V = V + S[row : row + blk.shape[0]].T @ blk
        row += blk.shape[0]
    return theta, V


def lanczos_quadrature(alpha, beta):
    """Gauss quadrature of the spectral measure of the start vector: nodes and weights.

    With ``T = S Θ Sᵀ``: ``q₀ᵀ f(A) q₀ ≈ Σ_j S₀ⱼ² f(θ_j)`` (exact for polynomials of degree
    ≤ 2m − 1; Golub & Meurant 2010, ch. 6).
    """
    T = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
    theta, S = jnp.linalg.eigh(T)
    return theta, S[0] ** 2
