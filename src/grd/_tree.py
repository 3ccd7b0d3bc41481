"""Named pytree helpers (one place for the tree arithmetic grd needs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax.tree as otu
from jax.flatten_util import ravel_pytree

tree_add = otu.add
tree_sub = otu.sub
tree_scale = otu.scale
tree_add_scale = otu.add_scale
tree_vdot = otu.vdot
tree_zeros_like = otu.zeros_like
tree_norm = otu.norm


def tree_axpy(a, x, y):
    """``a·x + y`` for pytrees ``x``, ``y`` and a scalar ``a``."""
    return otu.add_scale(y, a, x)


def tree_ravel(tree):
    """Flatten a pytree into a vector (``ravel_pytree`` order) and return the unravel map."""
    return ravel_pytree(tree)


def tree_dtype(tree):
    """The common result dtype of the leaves of ``tree``."""
    return jnp.result_type(*jax.tree_util.tree_leaves(tree))


def tree_size(tree) -> int:
    """Total number of scalars ``d`` in ``tree``."""
    return sum(int(jnp.size(x)) for x in jax.tree_util.tree_leaves(tree))
