"""Bundled real data (scikit-learn's handwritten digits) and generated data sets.

Nothing is downloaded: the digits (1 797 images of 8×8 pixels, 10 classes) ship inside
scikit-learn; the larger sets are generated from a seeded PRNG.
"""

from __future__ import annotations

import numpy as np


def load_digits(
    n: int | None = None,
    *,
    test_fraction: float = 0.0,
    seed: int = 0,
    dtype=np.float32,
    binarize: bool = False,
):
    """The scikit-learn handwritten digits as ``{"x": (N, 64), "y": (N,)}`` batches.

    Pixels are scaled to [0, 1] (or thresholded at 0.5 with ``binarize=True``, for RBMs).
    The examples are shuffled with ``seed`` before the optional subset of size ``n`` and the
    optional test split are taken.

    Args:
      n: number of training examples to keep (``None``: all that remain after the split).
      test_fraction: fraction of the 1 797 examples held out as a test set.
      seed: seed of the shuffle.
      dtype: floating dtype of ``x``.
      binarize: threshold the pixels to {0, 1}.

    Returns:
      ``train`` if ``test_fraction == 0``, else ``(train, test)``; each a dict with ``"x"``
      of shape ``(N, 64)`` and integer labels ``"y"`` of shape ``(N,)``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}.")
    raw = _sk_load_digits()
    x = (raw.data / 16.0).astype(dtype)
    if binarize:
        x = (x > 0.5).astype(dtype)
    y = raw.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm], y[perm]
    n_test = int(round(test_fraction * len(y)))
    test = {"x": x[:n_test], "y": y[:n_test]}
    x, y = x[n_test:], y[n_test:]
    if n is not None:
        if not 1 <= n <= len(y):
            raise ValueError(f"n must be between 1 and {len(y)}; got {n}.")
        x, y = x[:n], y[:n]
    train = {"x": x, "y": y}
    return train if n_test == 0 else (train, test)


def make_classification(
    n: int,
    *,
    dim: int = 784,
    num_classes: int = 10,
    seed: int = 0,
    dtype=np.float32,
):
    """A generated classification set of MNIST-like shape (no download).

    Inputs are drawn around ``num_classes`` random class means with unit Gaussian noise,
    scaled to roughly unit norm per coordinate block; labels are the class indices.

    Returns:
      dict with ``"x"`` of shape ``(n, dim)`` and ``"y"`` of shape ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, dim)).astype(dtype)
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    x = (means[y] + rng.normal(size=(n, dim)).astype(dtype)) / np.sqrt(dim).astype(dtype)
    return {"x": x.astype(dtype), "y": y}
