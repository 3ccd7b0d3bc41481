"""Lanczos with full reorthogonalisation at the cost of its products (SPEC §2, §6).

One loop serves every symmetric operator of grd (D, the Hessian, the metric): it takes a
flat ``matvec`` closure and a start vector and returns the tridiagonal matrix ``T`` and the
basis ``Q`` (``Q A Qᵀ = T`` on the Krylov space). What makes it cheap:

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


def lanczos_gram(b_mv, bt_mv, r0, num_matvecs: int, *, key=None, vectors: bool = True):
    """Lanczos with full reorthogonalisation on ``A = Bᵀ B``, reorthogonalised in R^N.

    For ``A = Bᵀ B`` (B: N × d; D = CᵀC/N with ``B = C/√N``) every Lanczos vector started in
    ``range(Bᵀ)`` is ``q_j = Bᵀ y_j``, and the products give ``s_j = B q_j`` for free. The
    coefficients of the new vector ``w = A q_i = Bᵀ s_i`` on every earlier one are then
    ``q_jᵀ w = s_jᵀ s_i`` and its projection is ``Bᵀ (s_i − Σ_j h_j y_j)``: the full
    (classical Gram–Schmidt, applied twice) reorthogonalisation costs O(m·N) per step on the
    (m, N) arrays Y and S, and no pass over a (m, d) basis. Each step is one JVP (``B q``)
    and one VJP (``Bᵀ z``): exactly one product. The start vector is ``Bᵀ B r0`` (one more
    JVP and VJP), so the Krylov space lies in ``range(Bᵀ)``, which holds every eigenvector
    of A with a non-zero eigenvalue.

    Args:
      b_mv: ``x ↦ B x``, flat (d,) → (N,).
      bt_mv: ``z ↦ Bᵀ z``, (N,) → flat (d,).
      r0: (d,) random vector.
      num_matvecs: m ≤ rank B + 1 steps are informative; past an invariant subspace the
        loop restarts with ``B r`` for a fresh random r, orthogonalised.
      key: PRNG key of the restarts.
      vectors: keep the (m, d) basis (written once per step, read once at the end).

    Returns:
      ``(alpha, beta, Q)``: T's diagonal (m,), off-diagonal (m − 1,) and the (m, d) basis
      (``None`` unless ``vectors``). Past ``rank B`` steps the basis rows are zero and T's
      rows and columns too (a restart direction below ``√eps·‖A‖`` counts as exhausted).
    """
    m = int(num_matvecs)
    d = r0.shape[0]
    dtype = r0.dtype
    key = jax.random.PRNGKey(0) if key is None else key
    eps = jnp.finfo(dtype).eps
    y = b_mv(r0)
    n = y.shape[0]
    Y = jnp.zeros((m, n), dtype)
    S = jnp.zeros((m, n), dtype)

    def orth(z, Y, S):
        for _ in range(2):  # CGS twice: O(m·N)
            z = z - (S @ z) @ Y
        return z

    def normalise(z):
        u = bt_mv(z)
        b = jnp.linalg.norm(u)
        safe = jnp.where(b > 0, b, 1.0)
        return u / safe, z / safe, b

    q, y, b0 = normalise(y)
    Q = jnp.zeros((m, d), dtype) if vectors else None
    alpha = jnp.zeros((m,), dtype)
    beta = jnp.zeros((m,), dtype)

    def body(i, carry):
        Y, S, Q, alpha, beta, q, y, anorm = carry
        s = b_mv(q)
        Y = Y.at[i].set(y)
        S = S.at[i].set(s)
        if Q is not None:
            Q = jax.lax.dynamic_update_slice(Q, q[None], (i, 0))
        a = jnp.vdot(s, s)
        z = orth(s, Y, S)
        u, y_next, b = normalise(z)
        b_prev = jnp.where(i > 0, beta[jnp.maximum(i - 1, 0)], 0.0)
        anorm = jnp.maximum(anorm, a + b + b_prev)
        broke = b <= 8 * eps * anorm

        def restart(_):
            # a fresh direction of range(Bᵀ) orthogonal to the basis; once range(Bᵀ) is
            # exhausted (m > rank B) what is left is round-off: continue with q = 0 (zero
            # rows and columns of T: Ritz values 0 with zero Ritz vectors).
            r = jax.random.normal(jax.random.fold_in(key, i), (d,), dtype)
            zr = orth(b_mv(r / jnp.linalg.norm(r)), Y, S)
            u, yr, br = normalise(zr)
            keep = br > jnp.sqrt(eps) * anorm
            return jnp.where(keep, u, 0.0), jnp.where(keep, yr, 0.0)

        q_next, y_next = jax.lax.cond(broke, restart, lambda _: (u, y_next), None)
        alpha = alpha.at[i].set(a)
        beta = beta.at[i].set(jnp.where(broke, 0.0, b))
        return Y, S, Q, alpha, beta, q_next, y_next, anorm

    carry = (Y, S, Q, alpha, beta, q, y, jnp.zeros((), dtype))
    # B r0 = 0 (e.g. D = 0): the first step breaks down and restarts, T stays 0.
    _, _, Q, alpha, beta, *_ = jax.lax.fori_loop(0, m, body, carry)
    del b0
    return alpha, beta[: m - 1], Q
