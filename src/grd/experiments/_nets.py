"""Pieces shared by the MNIST-5k experiments ``cs_spectrum``, ``lee_kappa`` and ``noise_scale``.

Small flax classifiers (a fully connected net, a small LeNet, a small CNN) with their
per-example cross-entropy, a checkpointed minibatch-SGD loop (optionally Nesterov momentum)
that keeps flattened snapshots at chosen steps, and the interval estimates the findings use
(Student-t over seeds, percentile bootstrap). Public ``grd`` API only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import data as grd_data
from ._base import Context
from ._stats import mean_ci

__all__ = [
    "SmallFC",
    "SmallLeNet",
    "classifier",
    "load_mnist_arrays",
    "train_with_snapshots",
    "t_interval",
    "bootstrap_interval",
    "fmt",
]


class SmallFC(nn.Module):
    """Fully connected ReLU net ``p → hidden… → 10``."""

    hidden: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = jax.nn.relu(nn.Dense(width)(x))
        return nn.Dense(10)(x)


class SmallLeNet(nn.Module):
    """LeNet-style CNN: [conv k×k → ReLU → 2×2 max-pool] per entry of ``channels``, then an
    optional dense ReLU layer and a 10-way linear head. Inputs are flat ``side²`` vectors."""

    side: int = 14
    channels: Sequence[int] = (4, 8)
    kernel: int = 5
    dense: int = 0

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[:-1] + (self.side, self.side, 1))
        for c in self.channels:
            x = nn.Conv(c, (self.kernel, self.kernel), padding="SAME")(x)
            x = nn.max_pool(jax.nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[:-3] + (-1,))
        if self.dense:
            x = jax.nn.relu(nn.Dense(self.dense)(x))
        return nn.Dense(10)(x)


def classifier(model: nn.Module, in_dim: int, dtype=jnp.float32):
    """``(init, loss_fn, accuracy_fn)`` for a flax classifier on flat inputs of size ``in_dim``.

    ``init(key)`` returns the parameter pytree (jitted: one compilation, not one per layer);
    ``loss_fn(params, example)`` is the per-example softmax cross-entropy of
    ``example = {"x": (in_dim,), "y": ()}`` (the form every ``grd`` function takes). Build it
    once per model and reuse it across seeds: grd's compiled functions are keyed on it.
    """

    @jax.jit
    def init(key):
        params = model.init(key, jnp.zeros((in_dim,), dtype))["params"]
        return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

    def loss_fn(p, example):
        logits = model.apply({"params": p}, example["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, example["y"])

    def accuracy_fn(p, batch):
        logits = model.apply({"params": p}, batch["x"])
        return jnp.mean(jnp.argmax(logits, -1) == batch["y"])

    return init, loss_fn, accuracy_fn


@functools.lru_cache(maxsize=32)
def _sgd_functions(loss_fn, lr, momentum, nesterov, batch_size, chunk):
    """Jitted (run_chunk, mean_loss) for one training setting, compiled once per setting."""
    opt = optax.sgd(lr, momentum=momentum if momentum else None, nesterov=nesterov)

    def mean_loss(p, batch):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, batch))

    @jax.jit
    def run_chunk(p, opt_state, k, train):
        n = jax.tree_util.tree_leaves(train)[0].shape[0]

        def one(carry, kk):
            p, s = carry
            idx = jax.random.randint(kk, (batch_size,), 0, n)
            g = jax.grad(mean_loss)(p, jax.tree_util.tree_map(lambda x: x[idx], train))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, opt_state), _ = jax.lax.scan(one, (p, opt_state), jax.random.split(k, chunk))
        return p, opt_state

    return opt, run_chunk, jax.jit(mean_loss)


def load_mnist_arrays(n_train: int, *, pool: int, n_test: int = 0, seed: int = 0):
    """MNIST-5k (``grd.data.load_mnist``) as float32 jax arrays: ``(train, test or None)``."""
    if n_test:
        train, test = grd_data.load_mnist(
            n_train, test_fraction=n_test / 5000, seed=seed, pool=pool, dtype=np.float32
        )
        test = {k: jnp.asarray(v) for k, v in test.items()}
    else:
        train, test = grd_data.load_mnist(n_train, seed=seed, pool=pool, dtype=np.float32), None
    return {k: jnp.asarray(v) for k, v in train.items()}, test


def train_with_snapshots(
    ctx: Context,
    stage: str,
    loss_fn: Callable,
    params,
    train: dict,
    *,
    key,
    lr: float,
    batch_size: int,
    steps: int,
    snapshot_steps: Sequence[int],
    momentum: float = 0.0,
    nesterov: bool = False,
    chunk: int = 50,
):
    """Minibatch SGD (``optax.sgd``; Nesterov momentum if asked) for ``steps`` steps, run in
    jitted chunks of ``chunk`` steps through :meth:`Context.checkpointed` (resumable).

    Minibatches of ``batch_size`` examples are drawn with replacement, so a minibatch gradient
    has covariance D/b. ``snapshot_steps`` must be multiples of ``chunk`` in ``[0, steps]``.

    Returns:
      ``(snapshots, mean_losses, unravel)``: the flattened parameters at ``snapshot_steps``
      (``(len, d)`` numpy), the mean training loss at each of them, and the unravel function.
    """
    if steps % chunk:
        raise ValueError(f"steps ({steps}) must be a multiple of chunk ({chunk}).")
    snaps = [int(s) for s in snapshot_steps]
    if any(s % chunk or not 0 <= s <= steps for s in snaps):
        raise ValueError(f"snapshot_steps {snaps} must be multiples of {chunk} in [0, {steps}].")
    flat0, unravel = ravel_pytree(params)
    opt, run_chunk, full_loss = _sgd_functions(
        loss_fn, float(lr), float(momentum), bool(nesterov), int(batch_size), int(chunk)
    )
    slot = {s: i for i, s in enumerate(snaps)}
    snapshots = jnp.zeros((len(snaps), flat0.size), flat0.dtype)
    losses = jnp.zeros((len(snaps),), flat0.dtype)
    if 0 in slot:
        snapshots = snapshots.at[slot[0]].set(flat0)
        losses = losses.at[slot[0]].set(full_loss(params, train))
    state = {
        "params": params,
        "opt": opt.init(params),
        "key": key,
        "snapshots": snapshots,
        "losses": losses,
    }

    def step_fn(state, i):
        k, sub = jax.random.split(state["key"])
        p, s = run_chunk(state["params"], state["opt"], sub, train)
        new = {**state, "params": p, "opt": s, "key": k}
        done = (int(i) + 1) * chunk
        if done in slot:
            new["snapshots"] = state["snapshots"].at[slot[done]].set(ravel_pytree(p)[0])
            new["losses"] = state["losses"].at[slot[done]].set(full_loss(p, train))
        return new

    n_chunks = steps // chunk
    state = ctx.checkpointed(stage, step_fn, state, n_chunks, every=max(1, n_chunks // 10))
    return np.asarray(state["snapshots"]), np.asarray(state["losses"], np.float64), unravel


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t half-width (``level``) of independent values (e.g. one per seed).

    The half-width is 0 for a single value (no spread can be estimated: say so in the text).
    """
    m, half = mean_ci(values, level)
    return m, 0.0 if half is None else half


def bootstrap_interval(
    statistic: Callable[[np.random.Generator], float],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(rng)`` over ``n_boot`` bootstrap replicates.

    ``statistic`` draws its own resample from ``rng`` (so hierarchical resampling — seeds,
    then draw sets inside a seed — is written where the data's structure is known).
    Non-finite replicates are dropped; if more than half are, ``(nan, nan)`` is returned
    (the caller must then report the statistic as undefined).
    """
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(rng) for _ in range(n_boot)], np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size < n_boot // 2:  # the statistic is undefined on most resamples
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def fmt(x: float, digits: int = 2) -> str:
    """``digits`` significant figures, in scientific notation outside [1e-3, 1e4)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return str(x)
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"
