"""Spectral tools beyond the top of D: a generic Lanczos, the Hessian's top eigenpairs, the
spectral density of D (stochastic Lanczos quadrature) and the diagonal of D (theory §2, §6).

All matrix-free: O(m·d) memory for m Lanczos steps, nothing d×d or N×d unless the batch is
vmapped whole (set ``chunk_size`` to bound the per-example work).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _validation as val
from ._diffusion import Spectrum, _diffusion_operator
from ._lanczos import lanczos_quadrature, lanczos_tridiag, ritz_pairs
from ._primitives import chunked_sum, mean_weights, weighted_grad, weighted_hvp
from ._tree import tree_ravel, tree_size


def _check_depth(num_matvecs, k, d, name="num_matvecs"):
    if not (isinstance(num_matvecs, int) and k <= num_matvecs <= d):
        raise ValueError(
            f"`{name}` must be an integer between {k} and d = {d}; got {num_matvecs!r}."
        )


def lanczos_eigh(
    matvec,
    v0,
    num_matvecs: int,
    k: int,
    *,
    key=None,
    which: Literal["largest", "magnitude"] = "largest",
    return_eigenvectors: bool = True,
) -> Spectrum:
    """Top-k eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    ``m = num_matvecs`` steps build an orthonormal basis ``Q`` (m, d) of the Krylov space
    ``span{v₀, A v₀, …, A^{m−1} v₀}`` and ``T = Q A Qᵀ`` (tridiagonal); the Ritz pairs
    ``(θ_j, Qᵀ s_j)`` of ``T s_j = θ_j s_j`` approximate the extreme eigenpairs of A. The basis
    is reorthogonalised at every step (one classical Gram–Schmidt pass, a second one when
    the first cancels more than half of the vector); a breakdown restarts with a random
    vector orthogonal to Q. This is the loop behind ``diffusion_spectrum(method="lanczos")``.

    Pass a ``matvec`` whose loop-invariant work can be done once: for D, the linear function
    of ``jax.linearize`` of the per-example losses. For the Hessian, the forward-over-reverse
    product (``jax.jvp`` of ``jax.grad``) and ``jax.linearize`` of the gradient map cost the
    same per step (3.6–3.8× a standalone HVP, 784-256-10 and 784-1024-1024-10, float32, CPU;
    a bare ``fori_loop`` of 30 HVPs costs 2.8–3.5×: the loss is XLA's loop, not Lanczos).
    ``matvec`` is traced twice (the basis is kept in two blocks).

    Args:
      matvec: ``x ↦ A x`` on pytrees (or arrays) with the structure of ``v0``; A symmetric.
      v0: non-zero start vector.
      num_matvecs: Lanczos depth m, k ≤ m ≤ d.
      k: number of eigenpairs.
      key: PRNG key of restart vectors after a breakdown.
      which: ``"largest"`` (algebraic, descending) or ``"magnitude"`` (largest |θ|).
      return_eigenvectors: also return the unit Ritz vectors (leading axis k).

    Returns:
      :class:`grd.Spectrum` (eigenvectors with the structure of ``v0``, leading axis k).

    Cost: m products and ≈ ¾·m²·d more flops (memory-bound) for the reorthogonalisation.
    """
    flat, unravel = tree_ravel(v0)
    d = flat.shape[0]
    if not (isinstance(k, int) and 1 <= k <= d):
        raise ValueError(f"`k` must be an integer between 1 and d = {d}; got {k!r}.")
    _check_depth(num_matvecs, k, d)
    if which not in ("largest", "magnitude"):
        raise ValueError(f"`which` must be 'largest' or 'magnitude'; got {which!r}.")

    def flat_mv(x):
        return tree_ravel(matvec(unravel(x)))[0].astype(x.dtype)

    alpha, beta, blocks = lanczos_tridiag(flat_mv, flat, num_matvecs, key=key)
    lam, V = ritz_pairs(alpha, beta, blocks, k, vectors=return_eigenvectors, which=which)
    return Spectrum(lam, None if V is None else jax.vmap(unravel)(V))


def _hessian_operator(loss_fn, params, batch, chunk_size):
    """Flat ``x ↦ H x``, H the Hessian of the mean loss (forward-over-reverse per product)."""
    flat, unravel = tree_ravel(params)
    n = val.batch_size(batch)
    weights = mean_weights(n, flat.dtype)
    # Forward-over-reverse at every step: as fast as ``jax.linearize`` of the gradient map
    # (3.6–3.8× a standalone HVP per step inside the loop, both; see ``lanczos_eigh``) and it
    # holds no residuals across the loop.
    hvp = lambda v: weighted_hvp(loss_fn, params, batch, weights, v, chunk_size=chunk_size)
    return lambda x: tree_ravel(hvp(unravel(x)))[0].astype(x.dtype)


@eqx.filter_jit
def _hessian_top(loss_fn, params, batch, key, *, m, k, which, vectors, chunk_size):
    flat, _ = tree_ravel(params)
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    mv = _hessian_operator(loss_fn, params, batch, chunk_size)
    alpha, beta, blocks = lanczos_tridiag(mv, v0, m, key=jax.random.fold_in(key, 1))
    return ritz_pairs(alpha, beta, blocks, k, vectors=vectors, which=which)


def hessian_spectrum(
    loss_fn,
    params,
    batch,
    k: int,
    *,
    num_matvecs: int | None = None,
    key=None,
    which: Literal["largest", "magnitude"] = "largest",
    return_eigenvectors: bool = False,
    chunk_size: int | None = None,
) -> Spectrum:
    """Top-k eigenpairs of the Hessian ``H = ∇² (1/N) Σ_a f_a(w)`` by Lanczos.

    Each of the ``num_matvecs`` steps (default ``min(d, max(2k + 10, 30))``) is one
    forward-over-reverse Hessian-vector product (measured in benchmarks/results/lanczos.md).
    ``which="largest"`` returns the algebraically largest eigenvalues (H may be indefinite),
    ``"magnitude"`` the largest |λ|.
    Eigenvectors as a pytree with leading axis k (unit norm).
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch, min_size=1)
    d = tree_size(params)
    if not (isinstance(k, int) and 1 <= k <= d):
        raise ValueError(f"`k` must be an integer between 1 and d = {d}; got {k!r}.")
    m = min(d, max(2 * k + 10, 30)) if num_matvecs is None else num_matvecs
    _check_depth(m, k, d)
    if which not in ("largest", "magnitude"):
        raise ValueError(f"`which` must be 'largest' or 'magnitude'; got {which!r}.")
    key = jax.random.PRNGKey(0) if key is None else key
    lam, V = _hessian_top(
        loss_fn, params, batch, key, m=m, k=k, which=which, vectors=return_eigenvectors,
        chunk_size=chunk_size,
    )  # fmt: skip
    unravel = tree_ravel(params)[1]
    return Spectrum(lam, None if V is None else jax.vmap(unravel)(V))


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature of the spectral measure ``μ = (1/d) Σ_i δ(λ − λ_i)`` of D.

    Attributes:
      nodes: (P, m) Ritz values θ_pj of each probe (Gauss nodes).
      weights: (P, m) Gauss weights τ_pj² (each row sums to 1).
      grid: (G,) points at which the smoothed density is evaluated.
      density: (G,) ``ρ(x) = (1/P) Σ_p Σ_j τ_pj² φ_σ(x − θ_pj)`` (Gaussian kernel φ_σ);
        ``d · ρ`` counts eigenvalues per unit of λ.
      stderr: (G,) standard error of ``density`` over the P probes (std / √P).
      sigma: the kernel width σ.
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    stderr: jax.Array
    sigma: jax.Array


def _probes(key, num_probes, d, dtype):
    """Rademacher probes normalised to unit length (``‖z‖² = d`` exactly)."""
    z = jax.random.rademacher(key, (num_probes, d), dtype=dtype)
    return z / jnp.sqrt(jnp.asarray(d, dtype))


@eqx.filter_jit
def _slq(loss_fn, params, batch, key, *, m, num_probes, chunk_size):
    flat, _ = tree_ravel(params)
    matvec = _diffusion_operator(loss_fn, params, batch, chunk_size)
    probes = _probes(key, num_probes, flat.shape[0], flat.dtype)

    def one(args):
        i, v = args
        alpha, beta, _ = lanczos_tridiag(matvec, v, m, key=jax.random.fold_in(key, i + 1))
        return lanczos_quadrature(alpha, beta)

    return jax.lax.map(one, (jnp.arange(num_probes), probes))


def diffusion_spectral_density(
    loss_fn,
    params,
    batch,
    *,
    num_probes: int = 8,
    num_matvecs: int = 30,
    key=None,
    grid=None,
    num_points: int = 256,
    sigma=None,
    chunk_size: int | None = None,
) -> SpectralDensity:
    """Spectral density of D by stochastic Lanczos quadrature (theory §2, §6).

    For a unit probe v (normalised Rademacher), ``vᵀ f(D) v = ∫ f dμ_v`` with
    ``μ_v = Σ_i (v·u_i)² δ_{λ_i}``, and ``E[μ_v] = μ = (1/d) Σ_i δ_{λ_i}``. m Lanczos steps from v
    give the m-node Gauss quadrature of μ_v: nodes θ_j (eigenvalues of T), weights
    ``τ_j² = (e₁ᵀ s_j)²`` (Golub & Meurant 2010; Ubaru, Chen & Saad 2017; as PyHessian's
    ``density`` and curvlinops' ``lanczos_approximate_spectrum`` do for the Hessian). The
    quadrature matches the first 2m − 1 moments of μ_v, so by Jackson's theorem its
    Wasserstein-1 distance to μ_v is ≤ π·λ_max/(4m); the probe average adds a Monte Carlo
    error, reported as the standard error over the probes.

    D has rank ≤ N − 1: most of the mass sits at λ = 0 (weight ≥ 1 − (N − 1)/d).

    Args:
      num_probes: P probes (each m products).
      num_matvecs: m Lanczos steps per probe (≤ d).
      key: PRNG key of the probes (default ``PRNGKey(0)``).
      grid: points at which to evaluate the smoothed density (default ``num_points``
        points spanning [min θ − 3σ, max θ + 3σ]).
      sigma: Gaussian kernel width (default (max θ − min θ)/100, the PyHessian choice
        relative to the spectrum's range).
      chunk_size: stream the batch (the forward pass is then not hoisted).

    Returns:
      :class:`SpectralDensity`.

    Cost: P·m matrix-free products; memory O(m·d).
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    d = tree_size(params)
    if not (isinstance(num_probes, int) and num_probes >= 1):
        raise ValueError(f"`num_probes` must be an integer ≥ 1; got {num_probes!r}.")
    _check_depth(num_matvecs, 1, d)
    key = jax.random.PRNGKey(0) if key is None else key
    nodes, weights = _slq(
        loss_fn, params, batch, key, m=num_matvecs, num_probes=num_probes, chunk_size=chunk_size
    )
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    if sigma is None:
        sigma = jnp.maximum(hi - lo, jnp.finfo(nodes.dtype).tiny) / 100
    sigma = jnp.asarray(sigma, nodes.dtype)
    if grid is None:
        grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, num_points)
    grid = jnp.asarray(grid, nodes.dtype)
    kernel = jnp.exp(-0.5 * ((grid[None, None, :] - nodes[..., None]) / sigma) ** 2)
    per_probe = jnp.sum(weights[..., None] * kernel, axis=1) / (sigma * jnp.sqrt(2 * jnp.pi))
    density = jnp.mean(per_probe, axis=0)
    std = jnp.std(per_probe, axis=0, ddof=1) if num_probes > 1 else jnp.zeros_like(density)
    return SpectralDensity(nodes, weights, grid, density, std / jnp.sqrt(num_probes), sigma)


def diffusion_diagonal(
    loss_fn,
    params,
    batch,
    *,
    method: Literal["exact", "hutchinson"] = "exact",
    num_samples: int = 32,
    key=None,
    chunk_size: int | None = None,
):
    """The diagonal of D, ``D_ii = (1/N) Σ_a (g_a − ḡ)_i²`` (theory §2), as a pytree like params.

    ``method="exact"``: two passes (the mean gradient ḡ, then the squared centred
    per-example gradients summed over the batch); with ``chunk_size`` the per-example
    gradients of one chunk at a time (memory O(chunk·d), never N×d).
    ``method="hutchinson"``: ``(1/S) Σ_s z_s ⊙ D z_s`` over ``num_samples`` Rademacher probes
    (Bekas, Kokiopoulou & Saad 2007): unbiased, variance of entry i ``Σ_{j≠i} D_ij²``
    per probe; S matrix-free products, no per-example gradient.
    """
    n, params, batch, _ = val.core_inputs(loss_fn, params, batch)
    if method == "exact":
        return _diagonal_exact(loss_fn, params, batch, chunk_size)
    if method == "hutchinson":
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"`num_samples` must be an integer ≥ 1; got {num_samples!r}.")
        if key is None:
            raise ValueError("`key` is required for method='hutchinson'.")
        return _diagonal_hutchinson(loss_fn, params, batch, key, num_samples, chunk_size)
    raise ValueError(f"`method` must be 'exact' or 'hutchinson'; got {method!r}.")


@eqx.filter_jit
def _diagonal_exact(loss_fn, params, batch, chunk_size):
    n = val.batch_size(batch)
    dtype = tree_ravel(params)[0].dtype
    gbar = weighted_grad(loss_fn, params, batch, mean_weights(n, dtype), chunk_size=chunk_size)

    def chunk_sum(b, w):
        def sq(ex):
            g = jax.grad(loss_fn)(params, ex)
            return jax.tree_util.tree_map(lambda x, m: (x - m) ** 2, g, gbar)

        return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), jax.vmap(sq)(b))

    total = chunked_sum(chunk_sum, params, batch, jnp.zeros((n,), dtype), chunk_size)
    return jax.tree_util.tree_map(lambda x: x / n, total)


@eqx.filter_jit
def _diagonal_hutchinson(loss_fn, params, batch, key, num_samples, chunk_size):
    flat, unravel = tree_ravel(params)
    matvec = _diffusion_operator(loss_fn, params, batch, chunk_size)  # forward pass hoisted

    def one(k):
        z = jax.random.rademacher(k, flat.shape, dtype=flat.dtype)
        return z * matvec(z)

    est = jnp.mean(jax.lax.map(one, jax.random.split(key, num_samples)), axis=0)
    return unravel(est)
