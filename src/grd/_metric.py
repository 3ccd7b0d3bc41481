"""The diffusion metric ``g = I + ε D(w)`` and its inverse (theory §3).

g is positive definite for every ε ≥ 0. The inverse comes in four forms:

* ``"cg"`` — exact, matrix-free: conjugate gradients on ``v ↦ v + ε D v``; the condition
  number is ``1 + ε λ_max``, so few iterations are needed. (Written out, with
  ``jax.lax.custom_linear_solve`` for implicit differentiation, rather than ``lineax.CG``:
  lineax 0.1.1 declares breakdown unless ``pᵀAp > 100·d·eps·rᵀr``, which ``I + εD`` in float32
  fails for d ≳ 8·10⁴ — it returns NaN on the first step of a 784-256-10 MLP.)
* ``"woodbury"`` — exact: ``g⁻¹ = I − ε Cᵀ (N I + ε C Cᵀ)⁻¹ C`` (an N×N Cholesky solve; needs
  the N×d matrix C of centred per-example gradients).
* ``"weak_field"`` — first order: ``g⁻¹ ≈ I − ε D``, error O(ε²‖D‖²), valid (and positive
  definite) only for ``ε λ_max < 1``.
* ``"neumann"`` — ``Σ_{j≤K} (−ε D)^j``; converges iff ``ε λ_max < 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _validation as val
from ._diffusion import (
    _diffusion_matvec,
    _grad_matrix,
    diffusion_spectrum,
    diffusion_trace,
    lambda_max,
)
from ._params import accepts_any_params
from ._tree import (
    tree_add,
    tree_add_scale,
    tree_dtype,
    tree_norm,
    tree_ravel,
    tree_scale,
    tree_sub,
    tree_vdot,
    tree_zeros_like,
)

InverseMethod = Literal["weak_field", "neumann", "cg", "woodbury"]


class InverseInfo(NamedTuple):
    """Diagnostics of an inverse: iterations used and the residual ``‖b − g x‖``."""

    num_steps: jax.Array
    residual_norm: jax.Array


@eqx.filter_jit
def _metric_apply(loss_fn, params, batch, v, eps, chunk_size=None):
    return tree_add_scale(v, eps, _diffusion_matvec(loss_fn, params, batch, v, chunk_size))


@val.message_first
@accepts_any_params
def metric_apply(loss_fn, params, batch, v, eps, *, chunk_size: int | None = None):
    """``g v = v + ε D v`` (matrix-free: one D·v product)."""
    _, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    eps = val.check_eps(eps, tree_dtype(params))
    return _metric_apply(loss_fn, params, batch, v, eps, chunk_size)


def lambda_max_upper_bound(
    loss_fn, params, batch, *, num_matvecs: int = 20, key=None, chunk_size: int | None = None
):
    """A certified upper bound ``U ≥ λ_max(D)``: the trace minus Lanczos lower bounds.

    ``U = (tr D − Σ_{i=2}^{k} θ_i)(1 + δ)``, with ``θ_1 ≥ … ≥ θ_k ≥ 0`` the Ritz values of a
    ``num_matvecs``-step Lanczos run on D (:func:`grd.diffusion_spectrum`, full
    reorthogonalisation) and ``tr D = (1/N) Σ_a |g_a − ḡ|²`` computed exactly
    (:func:`grd.diffusion_trace`).

    Why it is an upper bound: the Ritz values of any orthonormal basis interlace the
    eigenvalues, ``θ_i ≤ λ_i`` for ``i ≤ k`` (Cauchy–Poincaré), and D is positive
    semi-definite, so
    ``λ_1 = tr D − Σ_{i≥2} λ_i ≤ tr D − Σ_{i=2}^{k} λ_i ≤ tr D − Σ_{i=2}^{k} θ_i``.
    It holds whatever the start vector, even one orthogonal to the top eigenvector (then
    the Ritz values miss λ_1 and the bound is ≈ λ_1 + λ_2 + the tail, loose but safe). A
    Ritz value plus its residual norm is *not* a bound on λ_max (it bounds the distance to
    *some* eigenvalue), nor is the Lanczos estimate alone (a lower bound). The bound is
    tight, ``U ≈ λ_max``, when the eigenvalues past the k-th carry little trace (D of
    numerical rank < k, e.g. N ≤ ``num_matvecs``); it is loose by the tail
    ``Σ_{i>k} λ_i`` otherwise. ``δ = 4(k + N)·eps`` of the dtype covers round-off in the
    Ritz values (loss of orthogonality O(eps) per vector) and the trace's sum.

    Cost: ``num_matvecs`` D·v products and one pass of N per-example gradient norms
    (chunked with ``chunk_size``); memory O(num_matvecs·d).
    """
    n = val.batch_size(batch, min_size=2)
    d = sum(int(jnp.size(x)) for x in jax.tree_util.tree_leaves(params))
    m = min(d, n, num_matvecs)
    k = min(m, n - 1)
    theta = diffusion_spectrum(
        loss_fn, params, batch, k, method="lanczos", num_matvecs=m, key=key,
        chunk_size=chunk_size,
    ).eigenvalues  # fmt: skip
    trace = diffusion_trace(loss_fn, params, batch, chunk_size=chunk_size)
    delta = 4.0 * (k + n) * float(jnp.finfo(tree_dtype(params)).eps)
    return jnp.maximum(trace - jnp.sum(theta[1:]), theta[0]) * (1 + delta)


def _check_weak_field(eps, lam_max, method, estimate=None):
    """Refuse ``ε·λ_max ≥ 1`` (or NaN) for the weak-field/Neumann inverse.

    ``lam_max="estimate"`` calls ``estimate()`` (a certified upper bound,
    :func:`lambda_max_upper_bound`); a number or array is trusted as λ_max; ``None`` skips.
    """
    if not val.CHECKS_ENABLED or lam_max is None:
        return eps
    if isinstance(lam_max, str):
        if lam_max != "estimate":
            raise ValueError(f"`lam_max` must be a number, None or 'estimate'; got {lam_max!r}.")
        lam_max = estimate()
    # `not x < 1` rather than `x >= 1`: a NaN λ_max must not pass the check.
    x = eps * lam_max
    msg = (
        f"`eps` is too large for the {method} inverse: it needs eps·λ_max < 1 "
        "(λ_max from a certified upper bound unless `lam_max` is given); use a smaller `eps` "
        "or an exact inverse (method='cg' or 'woodbury')."
    )
    if not isinstance(x, jax.core.Tracer):
        value = float(x)
        if not value < 1:
            raise ValueError(msg.replace("eps·λ_max < 1", f"eps·λ_max < 1, got {value:.3g}"))
        return eps
    return eqx.error_if(eps, ~(x < 1), msg)


def default_cg_rtol(dtype) -> float:
    """The default relative CG tolerance of every grd inverse: ``1e-11`` in float64,
    ``8·eps`` of the dtype otherwise (``9.5e-7`` in float32).

    Relative, so the answer does not depend on the scale of the right-hand side (issue 15:
    the former ``atol = 1e-6`` returned ``g⁻¹v = 0`` for ``‖v‖ = 6e-8``); tight enough in
    float64 that the CG error (≤ κ·rtol, κ = 1 + ε·λ_max) is far below the tolerances of
    the flows that call it.
    """
    eps = float(jnp.finfo(dtype).eps)
    return 1e-11 if eps < 1e-10 else 8.0 * eps


def conjugate_gradients(matvec, b, *, rtol=None, atol=0.0, max_steps=100, throw=True):
    """Solve ``matvec(x) = b`` for a symmetric positive-definite operator on pytrees.

    ``matvec`` may be a callable or a lineax operator (:func:`grd.metric_operator`).
    Stops when ``‖r‖ ≤ max(rtol·‖b‖, atol)`` or after ``max_steps`` iterations; with
    ``throw=True`` (and value checks on) not converging is an error inside jit, otherwise the
    iteration count tells. Differentiable (implicitly, through ``custom_linear_solve``).

    ``rtol=None`` is :func:`default_cg_rtol` of the dtype of ``b`` (``1e-11`` in float64,
    ``≈ 1e-6`` in float32); ``atol`` defaults to 0, so the result is accurate relative to
    ``‖b‖`` for every scale of ``b``. The iteration runs on ``b / max|bᵢ|`` (scaled back at
    the end), so neither ``‖b‖²`` underflows for tiny ``b`` nor overflows for huge ``b``;
    ``b = 0`` gives ``x = 0`` exactly, in zero iterations. ``rtol``/``atol`` of any float
    dtype (or traced) are cast to the dtype of ``b``.

    Returns:
      ``(x, num_steps)``.
    """
    matvec = getattr(matvec, "mv", matvec)  # a lineax operator
    concrete = all(isinstance(t, int | float) for t in (rtol, atol) if t is not None)
    if concrete and not ((rtol is None or rtol >= 0) and atol >= 0):
        raise ValueError(
            f"`rtol` and `atol` must be ≥ 0; got rtol={rtol}, atol={atol}. Pass "
            "non-negative tolerances (rtol=None is the dtype's default)."
        )
    if isinstance(max_steps, int | float) and not max_steps >= 1:
        raise ValueError(f"`max_steps` must be an integer ≥ 1; got {max_steps!r}.")

    def solve(mv, rhs):
        dtype = tree_dtype(rhs)
        rt = val.cast_scalar(default_cg_rtol(dtype) if rtol is None else rtol, dtype, name="rtol")
        at = val.cast_scalar(atol, dtype, name="atol")
        # Scale by max|bᵢ| (never underflows, unlike ‖b‖): the iteration sees O(1) numbers.
        scale = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(rhs)]))
        scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))  # b = 0 (or NaN): as is
        rhs = tree_scale(1 / scale, rhs)
        tol2 = jnp.maximum(rt**2 * tree_vdot(rhs, rhs), (at / scale) ** 2)

        def cond(carry):
            _, _, _, rr, k = carry
            return (k < max_steps) & (rr > tol2)

        def body(carry):
            x, r, p, rr, k = carry
            Ap = mv(p)
            alpha = rr / tree_vdot(p, Ap)
            x = tree_add_scale(x, alpha, p)
            r = tree_add_scale(r, -alpha, Ap)
            rr_new = tree_vdot(r, r)
            p = tree_add_scale(r, rr_new / rr, p)
            return x, r, p, rr_new, k + 1

        rr0 = tree_vdot(rhs, rhs)
        init = (tree_zeros_like(rhs), rhs, rhs, rr0, jnp.asarray(0, jnp.int32))
        x, _, _, rr, k = jax.lax.while_loop(cond, body, init)
        if throw and val.CHECKS_ENABLED:
            x = eqx.error_if(
                x,
                ~(rr <= tol2),  # also catches a NaN residual (NaN operator or right-hand side)
                "conjugate gradients did not converge within `max_steps` (or met NaN); raise "
                "`max_steps`, loosen `rtol`, or check the inputs for NaN.",
            )
        return tree_scale(scale, x), k

    return jax.lax.custom_linear_solve(matvec, b, solve, symmetric=True, has_aux=True)


def neumann_inverse(diffusion_matvec, v, eps, num_terms: int, *, first_product=None):
    """``Σ_{j=0}^{K} (−ε D)^j v`` with ``K = num_terms`` products (converges iff ε λ_max < 1).

    ``first_product`` may pass an already computed ``D v`` (saves one product).
    """
    dv = diffusion_matvec(v) if first_product is None else first_product
    term = tree_scale(-eps, dv)

    def body(_, carry):
        term, acc = carry
        term = tree_scale(-eps, diffusion_matvec(term))
        return term, tree_add(acc, term)

    _, out = jax.lax.fori_loop(1, num_terms, body, (term, tree_add(v, term)))
    return out


def centred_matrix_from_grads(per_example_grads):
    """``C``: the ``(N, d)`` centred per-example gradients (``ravel_pytree`` order) of a pytree
    with leading axis N."""
    G = jax.vmap(lambda g: tree_ravel(g)[0])(per_example_grads)
    return G - jnp.mean(G, axis=0)


def woodbury_inverse(C, v_flat, eps):
    """``g⁻¹ v = v − ε Cᵀ (N I + ε C Cᵀ)⁻¹ C v`` for a flat ``v`` and the ``(N, d)`` ``C``."""
    n = C.shape[0]
    gram = n * jnp.eye(n, dtype=C.dtype) + eps * (C @ C.T)
    chol = jax.scipy.linalg.cho_factor(gram, lower=True)
    y = jax.scipy.linalg.cho_solve(chol, C @ v_flat)
    return v_flat - eps * (C.T @ y)


@eqx.filter_jit
def _metric_inverse(
    loss_fn,
    params,
    batch,
    v,
    eps,
    method: InverseMethod = "cg",
    *,
    lam_max=None,
    num_terms: int = 4,
    rtol: float | None = None,
    atol: float = 0.0,
    max_steps: int = 100,
    per_example_grads=None,
    chunk_size=None,
):
    Dv = lambda x: _diffusion_matvec(loss_fn, params, batch, x, chunk_size)
    estimate = lambda: lambda_max_upper_bound(loss_fn, params, batch, chunk_size=chunk_size)
    if lam_max is not None and not isinstance(lam_max, str):
        lam_max = val.cast_scalar(lam_max, tree_dtype(params), name="lam_max")
    if method == "weak_field":
        eps = _check_weak_field(eps, lam_max, "weak-field", estimate)
        return tree_add_scale(v, -eps, Dv(v)), InverseInfo(jnp.asarray(1), jnp.asarray(jnp.nan))
    if method == "neumann":
        eps = _check_weak_field(eps, lam_max, "Neumann", estimate)
        out = neumann_inverse(Dv, v, eps, num_terms)
        return out, InverseInfo(jnp.asarray(num_terms), jnp.asarray(jnp.nan))
    if method == "cg":
        x, steps = conjugate_gradients(
            lambda x: _metric_apply(loss_fn, params, batch, x, eps, chunk_size),
            v,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
        )
        return x, InverseInfo(steps, jnp.asarray(jnp.nan))
    if method == "woodbury":
        if per_example_grads is None:
            G = _grad_matrix(loss_fn, params, batch, chunk_size)
            C = G - jnp.mean(G, axis=0)
        else:
            C = centred_matrix_from_grads(per_example_grads)
        flat, unravel = tree_ravel(v)
        return unravel(woodbury_inverse(C, flat, eps)), InverseInfo(
            jnp.asarray(1), jnp.asarray(jnp.nan)
        )
    raise ValueError(
        f"`method` must be one of 'weak_field', 'neumann', 'cg', 'woodbury'; got {method!r}."
    )


@val.message_first
@accepts_any_params
def metric_inverse(
    loss_fn,
    params,
    batch,
    v,
    eps,
    *,
    method: InverseMethod = "cg",
    lam_max="estimate",
    num_terms: int = 4,
    rtol: float | None = None,
    atol: float = 0.0,
    max_steps: int = 100,
    per_example_grads=None,
    chunk_size: int | None = None,
    return_info: bool = False,
):
    """``g⁻¹ v`` with ``g = I + ε D(w)`` (theory §3).

    Args:
      loss_fn, params, batch: as in :func:`grd.diffusion_matvec`.
      v: pytree with the structure of ``params``.
      eps: ε ≥ 0.
      method: ``"cg"`` (exact, matrix-free CG), ``"woodbury"`` (exact, N×N solve),
        ``"weak_field"`` (``v − ε D v``), ``"neumann"`` (``num_terms`` terms of the series).
      lam_max: λ_max(D) for the check ``ε λ_max < 1`` of the weak-field and Neumann inverses
        (eagerly, or inside jit with ``eqx.error_if``). ``"estimate"`` (default) checks
        against the certified upper bound :func:`grd.lambda_max_upper_bound` (20 Lanczos
        products and one pass of per-example gradient norms); pass the value when known
        (hot loops; it is trusted), or ``None`` to skip.
      rtol, atol, max_steps: CG stops at ``‖r‖ ≤ max(rtol·‖v‖, atol)``; ``rtol=None`` is
        :func:`grd.default_cg_rtol` of the dtype (1e-11 in float64, ≈ 1e-6 in float32),
        ``atol = 0``: relative accuracy for every ``‖v‖``, and ``v = 0`` gives 0. Not
        converging within ``max_steps`` raises (inside jit too).
      per_example_grads: optional pytree with leading N for the Woodbury path.
      return_info: also return :class:`InverseInfo` with the iteration count and the
        residual ``‖v − g x‖`` (one extra product).

    Cost: weak-field 1 product; Neumann ``num_terms``; CG ``num_steps`` + 1; Woodbury N
    gradients and an N×N Cholesky.
    """
    n, params, batch, v = val.core_inputs(loss_fn, params, batch, v=v)
    eps = val.check_eps(eps, tree_dtype(params))
    if method == "neumann" and not (isinstance(num_terms, int) and num_terms >= 1):
        raise ValueError(f"`num_terms` must be an integer ≥ 1; got {num_terms!r}.")
    out, info = _metric_inverse(
        loss_fn,
        params,
        batch,
        v,
        eps,
        method,
        lam_max=lam_max,
        num_terms=num_terms,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        per_example_grads=per_example_grads,
        chunk_size=chunk_size,
    )
    if not return_info:
        return out
    resid = tree_norm(tree_sub(v, _metric_apply(loss_fn, params, batch, out, eps, chunk_size)))
    return out, InverseInfo(info.num_steps, resid)


class DiffusionMetric(eqx.Module):
    """The diffusion metric ``g(w) = I + ε D(w)`` of a loss on a batch (theory §3).

    A small immutable pytree: it passes through ``jax.jit`` unchanged. Build it with an
    absolute ε, or with :meth:`relative` for ``ε = c / λ_max(D(w₀))``.

    Attributes:
      loss_fn: per-example loss ``loss_fn(params, example) -> scalar`` (static).
      batch: pytree with leading axis N.
      eps: ε ≥ 0.
      lam_max: λ_max(D) at the reference point, if known (``ε·λ_max`` is
        :attr:`field_strength`). Not used to check the weak-field and Neumann inverses:
        :meth:`inverse` checks ε against a certified bound at the params it is given (pass
        ``lam_max=...`` to it to trust a value instead).
      chunk_size: stream the batch in chunks of this size (static).

    Example:
      >>> metric = grd.DiffusionMetric.relative(loss_fn, params, batch, c=0.5)
      >>> gv = metric.apply(params, v)
      >>> v_back = metric.inverse(params, gv, method="cg")
    """

    loss_fn: Callable = eqx.field(static=True)
    batch: object
    eps: jax.Array | float
    lam_max: jax.Array | float | None = None
    chunk_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        val.batch_size(self.batch, min_size=2)
        val.check_eps(self.eps)

    @classmethod
    def relative(
        cls, loss_fn, params0, batch, c: float, *, chunk_size=None, num_matvecs: int = 20, key=None
    ):
        """The metric with ``ε = c / λ_max(D(w₀))`` (λ_max by Lanczos at ``params0``)."""
        if not c >= 0:
            raise ValueError(f"`c` must be ≥ 0; got {c}.")
        lam = lambda_max(
            loss_fn, params0, batch, num_matvecs=num_matvecs, key=key, chunk_size=chunk_size
        )
        eps = c / lam
        return cls(loss_fn, batch, eps, lam, chunk_size)

    @property
    def field_strength(self):
        """``ε·λ_max`` at the reference point (< 1 for the weak-field inverse to be valid)."""
        return None if self.lam_max is None else self.eps * self.lam_max

    def diffusion(self, params, v):
        """``D(w) v``."""
        from ._diffusion import diffusion_matvec

        return diffusion_matvec(self.loss_fn, params, self.batch, v, chunk_size=self.chunk_size)

    def apply(self, params, v):
        """``g(w) v = v + ε D(w) v``."""
        return metric_apply(
            self.loss_fn, params, self.batch, v, self.eps, chunk_size=self.chunk_size
        )

    def inverse(self, params, v, method: InverseMethod = "cg", **kwargs):
        """``g(w)⁻¹ v``; see :func:`grd.metric_inverse` for the methods and options.

        The weak-field and Neumann inverses are checked at ``params`` against the certified
        bound :func:`grd.lambda_max_upper_bound` (the stored λ_max is a Lanczos estimate at
        the reference point: a lower bound, and of another point).
        """
        return metric_inverse(
            self.loss_fn,
            params,
            self.batch,
            v,
            self.eps,
            method=method,
            chunk_size=self.chunk_size,
            **kwargs,
        )

    def dense(self, params):
        """Dense ``(d, d)`` matrix ``I + ε D`` in ``ravel_pytree`` order (small d only)."""
        from ._diffusion import diffusion_matrix

        D = diffusion_matrix(self.loss_fn, params, self.batch, chunk_size=self.chunk_size)
        return jnp.eye(D.shape[0], dtype=D.dtype) + self.eps * D
