"""Overlap of the top eigenspaces of D and of the Hessian against dense eigenvectors (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import grd
from grd.analysis import diffusion_hessian_alignment, subspace_overlap


def _tiny():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"w1": jax.random.normal(k[0], (3, 4)) / 2, "w2": jax.random.normal(k[1], (4,)) / 2}
    batch = {"x": jax.random.normal(k[2], (14, 3)), "y": jax.random.normal(k[3], (14,))}

    def loss_fn(p, ex):
        return 0.5 * (jnp.tanh(ex["x"] @ p["w1"]) @ p["w2"] - ex["y"]) ** 2

    return loss_fn, params, batch


def test_subspace_overlap_limits():
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    U, V = Q[:2], Q[2:4]
    assert np.isclose(subspace_overlap(U, U)[0], 1.0)
    assert np.isclose(subspace_overlap(U, V)[0], 0.0, atol=1e-12)
    R = np.array([[np.cos(0.3), np.sin(0.3)], [-np.sin(0.3), np.cos(0.3)]])
    assert np.isclose(subspace_overlap(U, R @ U)[0], 1.0)  # a rotation inside the subspace
    mixed = (U + V) / np.sqrt(2)  # principal angles of 45°: overlap ½
    ov, cos = subspace_overlap(U, mixed)
    np.testing.assert_allclose(cos, np.sqrt(0.5), atol=1e-12)
    assert np.isclose(ov, 0.5)


def test_alignment_against_dense_eigenvectors():
    """Lanczos depth m = N for D (the Krylov space of D is exhausted) and m = d for H: the
    eigenvectors are exact to round-off, so the overlap matches the dense one to 1e-8 (the
    eigenvalue gaps of these matrices are ≥ 1e-3, amplifying round-off by ≤ 1e3)."""
    loss_fn, params, batch = _tiny()
    flat, unravel = ravel_pytree(params)
    d, n = flat.size, 14

    def mean_loss(w):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(unravel(w), batch))

    D = np.asarray(grd.diffusion_matrix(loss_fn, params, batch))
    H = np.asarray(jax.hessian(mean_loss)(flat))
    for k in (2,):
        lam_d, U_d = np.linalg.eigh(D)
        lam_h, U_h = np.linalg.eigh(H)
        UD, UH = U_d[:, ::-1][:, :k].T, U_h[:, ::-1][:, :k].T
        assert np.min(np.abs(np.diff(lam_d[::-1][: k + 1]))) > 1e-3
        assert np.min(np.abs(np.diff(lam_h[::-1][: k + 1]))) > 1e-3
        ref = np.sum((UD @ UH.T) ** 2) / k
        al = diffusion_hessian_alignment(loss_fn, params, batch, k, num_matvecs=d)
        np.testing.assert_allclose(al.overlap, ref, atol=1e-8)
        np.testing.assert_allclose(al.diffusion_eigenvalues, lam_d[::-1][:k], atol=1e-10)
        np.testing.assert_allclose(al.hessian_eigenvalues, lam_h[::-1][:k], atol=1e-10)
        assert 0.0 <= float(al.overlap) <= 1.0 and n > k
