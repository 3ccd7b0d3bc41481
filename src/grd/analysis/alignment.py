"""Alignment of the top eigenspaces of the diffusion matrix D and of the Hessian H (theory §6).

Near a minimum of a loss that is a negative log-likelihood, the covariance of the
per-example gradients approaches the Fisher information, and the Fisher approaches the
Hessian: D ≈ H on the top directions (Jastrzębski et al. 2017; Zhu, Wu, Yu, Wu & Ma,
"The anisotropic noise in stochastic gradient descent", ICML 2019, who measure this
alignment). The overlap of the top-k eigenspaces quantifies how far that holds.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from grd import _validation as val
from grd._diffusion import diffusion_spectrum
from grd._spectral import hessian_spectrum
from grd._tree import tree_ravel, tree_size


class HessianAlignment(NamedTuple):
    """Result of :func:`diffusion_hessian_alignment`.

    Attributes:
      overlap: ``‖U_Dᵀ U_H‖_F² / k`` ∈ [0, 1]: the mean squared cosine of the principal
        angles between the two top-k eigenspaces (1: the same subspace; k/d in expectation
        for independent random subspaces).
      cosines: (k,) cosines of the principal angles, descending (singular values of
        ``U_Dᵀ U_H``).
      diffusion_eigenvalues: (k,) top eigenvalues of D, descending.
      hessian_eigenvalues: (k,) top eigenvalues of H, descending.
    """

    overlap: jax.Array
    cosines: jax.Array
    diffusion_eigenvalues: jax.Array
    hessian_eigenvalues: jax.Array


def subspace_overlap(U, V):
    """``(‖U Vᵀ‖_F² / k, cosines)`` for row-orthonormal ``U`` (k, d) and ``V`` (k', d).

    The cosines of the principal angles are the singular values of ``U Vᵀ``; the overlap
    is the mean of their squares over ``k = min(k, k')``.
    """
    U, V = jnp.asarray(U), jnp.asarray(V)
    cos = jnp.clip(jnp.linalg.svd(U @ V.T, compute_uv=False), 0.0, 1.0)
    return jnp.sum(cos**2) / min(U.shape[0], V.shape[0]), cos


def diffusion_hessian_alignment(
    loss_fn,
    params,
    batch,
    k: int,
    *,
    method: Literal["gram", "lanczos"] = "lanczos",
    num_matvecs: int | None = None,
    hessian_which: Literal["largest", "magnitude"] = "largest",
    key=None,
    chunk_size: int | None = None,
) -> HessianAlignment:
    """Overlap of the top-k eigenspaces of ``D(w)`` and of ``H(w) = ∇² (1/N) Σ_a f_a(w)``.

    ``U_D`` (k, d): top-k unit eigenvectors of D (:func:`grd.diffusion_spectrum`, by
    ``method``); ``U_H``: top-k eigenvectors of H (:func:`grd.hessian_spectrum`, Lanczos
    with a hoisted HVP, algebraically largest or by ``|λ|``). Returns
    ``overlap = ‖U_Dᵀ U_H‖_F² / k`` and the cosines of the principal angles.

    Args:
      k: subspace dimension, ≤ min(N − 1, d) (rank D ≤ N − 1).
      method: how D's eigenvectors are computed (``"gram"`` stores the N×d gradients).
      num_matvecs: Lanczos depth for both operators (default ``min(d, N, max(2k+10, 30))``
        for D, ``min(d, max(2k+10, 30))`` for H).
      hessian_which: ``"largest"`` (the outliers of a positive curvature) or ``"magnitude"``.
      key: PRNG key of the start vectors.

    Cost: two Lanczos runs (``num_matvecs`` D·v products and as many HVPs), memory O(m·d).
    Matrix-free; the Ritz vectors are accurate once their Ritz values have converged: check
    the eigenvalues against a deeper run when the spectrum has small gaps near k.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    n, d = val.batch_size(batch), tree_size(params)
    m_d = None if num_matvecs is None else min(num_matvecs, n, d)  # Krylov space of D ≤ N
    kd, kh = jax.random.split(key)
    sd = diffusion_spectrum(
        loss_fn, params, batch, k, method=method, num_matvecs=m_d, key=kd,
        return_eigenvectors=True, chunk_size=chunk_size,
    )  # fmt: skip
    sh = hessian_spectrum(
        loss_fn, params, batch, k, num_matvecs=num_matvecs, key=kh, which=hessian_which,
        return_eigenvectors=True, chunk_size=chunk_size,
    )  # fmt: skip
    flat_rows = jax.vmap(lambda t: tree_ravel(t)[0])
    overlap, cos = subspace_overlap(flat_rows(sd.eigenvectors), flat_rows(sh.eigenvectors))
    return HessianAlignment(overlap, cos, sd.eigenvalues, sh.eigenvalues)
