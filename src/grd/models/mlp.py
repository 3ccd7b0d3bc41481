"""A small flax MLP classifier and its per-example cross-entropy loss."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class MLP(nn.Module):
    """Fully connected network ``in → hidden… → num_classes`` with tanh activations."""

    hidden: Sequence[int] = (32,)
    num_classes: int = 10
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = getattr(jax.nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def mlp_classifier(hidden: Sequence[int] = (32,), num_classes: int = 10, activation="tanh"):
    """Return ``(model, loss_fn)`` with ``loss_fn(params, example) -> scalar`` cross-entropy.

    ``example`` is a dict ``{"x": (in,), "y": ()}``; ``params`` the flax parameter dict.
    """
    model = MLP(hidden=tuple(hidden), num_classes=num_classes, activation=activation)

    def loss_fn(params, example):
        logits = model.apply({"params": params}, example["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, example["y"])

    return model, loss_fn


def init_mlp(model: MLP, key, in_dim: int, dtype=jnp.float32):
    """Initialise ``model`` for inputs of size ``in_dim``; returns the ``params`` dict."""
    params = model.init(key, jnp.zeros((in_dim,), dtype))["params"]
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)


def accuracy(model: MLP, params, batch) -> jax.Array:
    """Mean classification accuracy of ``model`` on ``batch``."""
    logits = model.apply({"params": params}, batch["x"])
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])
