"""Tests for grd.analysis.diffusion_maps: circle oracle, Gram distances, dimension estimate."""

import jax
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import special_ortho_group

from grd.analysis import diffusion_map, intrinsic_dimension, squared_distances


def _circle(n, *, random_angles=True, radius=3.0, ambient=50, seed=0):
    rng = np.random.default_rng(seed)
    if random_angles:
        th = rng.uniform(0.0, 2 * np.pi, n)
    else:
        th = 2 * np.pi * np.arange(n) / n
    c = np.zeros((n, ambient))
    c[:, 0], c[:, 1] = np.cos(th), np.sin(th)
    rot = special_ortho_group.rvs(ambient, random_state=seed + 1)
    return radius * c @ rot.T + rng.standard_normal(ambient), th


def test_squared_distances_match_cdist():
    x = np.random.default_rng(0).standard_normal((30, 200)) + 100.0
    np.testing.assert_allclose(
        np.asarray(squared_distances(x)), cdist(x, x, "sqeuclidean"), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("n", [150, 400])
def test_circle_intrinsic_dimension_is_one(n):
    x, _ = _circle(n)
    res = intrinsic_dimension(x)
    # Measured 0.947 (n = 150) and 0.955 (n = 400); tolerance ±0.15.
    assert float(res.dimension) == pytest.approx(1.0, abs=0.15)
    assert res.slope.shape == res.eps_grid.shape == res.log_kernel_sum.shape
    # The curve goes from log n (diagonal only) to log n² (all pairs).
    assert float(res.log_kernel_sum[0]) >= np.log(n) - 1e-9
    assert np.all(np.diff(np.asarray(res.log_kernel_sum)) >= -1e-12)
    assert float(res.log_kernel_sum[-1]) == pytest.approx(2 * np.log(n), abs=0.05)


def test_sphere_intrinsic_dimension_is_two():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((400, 3))
    x = np.zeros((400, 30))
    x[:, :3] = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert float(intrinsic_dimension(x).dimension) == pytest.approx(2.0, abs=0.3)


def test_circle_paired_eigenvalues_equispaced():
    x, th = _circle(120, random_angles=False)
    dm = diffusion_map(x, k=6)
    lam = np.asarray(dm.eigenvalues)
    # Rotation symmetry: exact pairs (cos, sin) up to round-off.
    np.testing.assert_allclose(lam[0::2], lam[1::2], rtol=1e-8)
    assert np.all(np.diff(lam[1::2]) < 0)
    # The first pair spans {cos θ, sin θ}: coordinates lie on a circle.
    r = np.linalg.norm(np.asarray(dm.coordinates[:, :2]), axis=1)
    np.testing.assert_allclose(r, r.mean(), rtol=1e-6)


def test_circle_paired_eigenvalues_random_sampling():
    x, th = _circle(300, random_angles=True)
    eps = float(intrinsic_dimension(x).eps_star)
    lam = np.asarray(diffusion_map(x, k=4, eps=eps, alpha=1.0).eigenvalues)
    # Measured splitting 0.01 % and 0.1 % at this bandwidth; tolerance 2 %.
    np.testing.assert_allclose(lam[0::2], lam[1::2], rtol=0.02)
    assert lam[2] < lam[1] * 0.98
    # The top pair recovers the angle: ψ₁ + iψ₂ ∝ e^{i(θ + φ₀)} up to orientation.
    c = np.asarray(diffusion_map(x, k=2, eps=eps).coordinates)
    ang = np.angle(c[:, 0] + 1j * c[:, 1])
    rel = np.angle(np.exp(1j * (ang - th)))
    rel_flip = np.angle(np.exp(1j * (ang + th)))
    spread = min(np.std(np.exp(1j * rel)), np.std(np.exp(1j * rel_flip)))
    assert spread < 0.1


def test_diffusion_map_markov_properties_and_jit():
    x = np.random.default_rng(2).standard_normal((40, 1000))
    dm = diffusion_map(x, k=5, t=2)
    lam = np.asarray(dm.eigenvalues)
    assert np.all(lam < 1.0) and np.all(lam > -1.0) and np.all(np.diff(lam) <= 0)
    d2 = cdist(x, x, "sqeuclidean")[np.triu_indices(40, 1)]
    assert float(dm.eps) == pytest.approx(np.median(d2))
    jitted = jax.jit(diffusion_map, static_argnames=("k", "t", "alpha"))(x, k=5, t=2)
    np.testing.assert_allclose(
        np.asarray(jitted.coordinates), np.asarray(dm.coordinates), atol=1e-10
    )
    # Dense reference: right eigenvectors of P = D⁻¹K⁽ᵅ⁾ built without the Gram trick.
    k = np.exp(-cdist(x, x, "sqeuclidean") / float(dm.eps))
    q = k.sum(1)
    ka = k / np.outer(q, q)
    p = ka / ka.sum(1, keepdims=True)
    psi = np.asarray(dm.coordinates) / lam**2
    np.testing.assert_allclose(p @ psi, psi * lam, atol=1e-9)


def test_bad_points():
    x = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(ValueError, match="points.*at least 3"):
        diffusion_map(x[:2])
    with pytest.raises(ValueError, match="points.*row"):
        intrinsic_dimension(np.where(np.arange(10)[:, None] == 2, np.nan, x))
    with pytest.raises(ValueError, match="`k`"):
        diffusion_map(x, k=10)
    with pytest.raises(ValueError, match="eps"):
        diffusion_map(np.ones((5, 3)), k=2)
