"""D and g = I + εD as linear operators: lineax on the params pytree, scipy on the flat vector.

:func:`diffusion_operator` and :func:`metric_operator` return
:class:`lineax.FunctionLinearOperator` s on the differentiated part of ``params`` (see
:mod:`grd._params`), tagged symmetric and positive semidefinite (g also positive definite in
fact), so lineax's solvers (``lx.CG``, ``lx.linear_solve``), :func:`grd.conjugate_gradients`
and :func:`to_scipy` (``scipy.sparse.linalg.eigsh``, ``cg``, ``minres``) all accept them.
Each ``mv`` is one matrix-free product (one JVP + one VJP, theory §2).

**lineax's CG in float32.** ``lx.CG`` (lineax 0.1.1) replaces the step length by NaN unless
``pᵀAp > 100 · (2 · eps · d) · rᵀr``: a breakdown test scaled by the dimension d. For
``g = I + εD`` the ratio ``pᵀAp / rᵀr`` is ≥ 1 and ≈ 1 at the first step, so in float32
(eps = 1.19·10⁻⁷) the solve returns NaN as soon as ``d ≳ 1 / (200 eps) ≈ 4·10⁴`` times that
ratio (measured: a diagonal operator with spectrum in [1, 2] solves at d = 6·10⁴ and gives NaN
at d = 2·10⁵). For D itself (singular) it fails earlier. In float64 the bound is 2·10¹³.
Use :func:`grd.conjugate_gradients` (it stops on the residual and has no such test) or
``grd.metric_inverse(method="cg")`` in float32; lineax is fine in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from . import _validation as val
from ._diffusion import _diffusion_matvec
from ._params import accepts_any_params
from ._tree import tree_add_scale, tree_ravel

_TAGS = (lx.symmetric_tag, lx.positive_semidefinite_tag)


def _structure(params):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), params)


@accepts_any_params
def diffusion_operator(loss_fn, params, batch, *, chunk_size: int | None = None):
    """The diffusion matrix ``D(w)`` (theory §2) as a lineax operator on the params pytree.

    ``op.mv(v) = D v = Cov_a(g_a, g_a·v)`` (one JVP + one VJP; :func:`grd.diffusion_matvec`),
    tagged symmetric and positive semidefinite. Its input and output structure is the
    differentiated part of ``params`` (``None`` at held-fixed leaves).

    Args:
      loss_fn: per-example loss (or :func:`grd.batched`).
      params: parameter pytree (any model; see "Your model in grd").
      batch: pytree with leading axis N ≥ 2.
      chunk_size: stream the batch in chunks in every product.

    Returns:
      ``lineax.FunctionLinearOperator``. ``op.as_matrix()`` materialises d×d (small d only).
    """
    _, params, batch, _ = val.core_inputs(loss_fn, params, batch)

    def mv(v):
        return _diffusion_matvec(loss_fn, params, batch, v, chunk_size)

    return lx.FunctionLinearOperator(mv, _structure(params), tags=_TAGS)


@accepts_any_params
def metric_operator(loss_fn, params, batch, eps, *, chunk_size: int | None = None):
    """The diffusion metric ``g = I + ε D(w)`` (theory §3) as a lineax operator.

    ``op.mv(v) = v + ε D v`` (one D·v product), tagged symmetric and positive semidefinite
    (g is positive definite for ε ≥ 0, with condition number ``1 + ε λ_max``). Solve
    ``g x = b`` with ``lineax.linear_solve(op, b, lineax.CG(rtol, atol))`` in float64, or
    with :func:`grd.conjugate_gradients` (any dtype; see the module note on lineax's CG).
    """
    _, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    eps = val.check_eps(eps)

    def mv(v):
        return tree_add_scale(v, eps, _diffusion_matvec(loss_fn, params, batch, v, chunk_size))

    return lx.FunctionLinearOperator(mv, _structure(params), tags=_TAGS)


def to_scipy(operator):
    """A ``scipy.sparse.linalg.LinearOperator`` on the flat vector (``ravel_pytree`` order).

    The product is compiled once (``jax.jit``) and runs on numpy arrays, so scipy's
    ``eigsh``, ``lobpcg``, ``cg`` and ``minres`` work on D or g; ``rmatvec = matvec``
    (the operators are symmetric). Works for any square lineax operator on a pytree.

    Example:
      >>> op = grd.to_scipy(grd.diffusion_operator(loss_fn, params, batch))
      >>> lam = scipy.sparse.linalg.eigsh(op, k=5, which="LA", return_eigenvectors=False)
    """
    from scipy.sparse.linalg import LinearOperator

    if not isinstance(operator, lx.AbstractLinearOperator):
        raise TypeError(
            f"`operator` must be a lineax operator (e.g. grd.diffusion_operator(...)); got "
            f"{type(operator).__name__}."
        )
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), operator.in_structure())
    flat, unravel = tree_ravel(zeros)
    out_size = tree_ravel(
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), operator.out_structure())
    )[0].size
    if out_size != flat.size:
        raise ValueError(f"`operator` must be square; maps {flat.size} to {out_size} numbers.")
    product = jax.jit(lambda x: tree_ravel(operator.mv(unravel(x)))[0])
    dtype = np.dtype(flat.dtype)

    def matvec(x):
        x = jnp.asarray(np.asarray(x, dtype=dtype).reshape(-1))
        return np.asarray(product(x))

    return LinearOperator((flat.size, flat.size), matvec=matvec, rmatvec=matvec, dtype=dtype)
