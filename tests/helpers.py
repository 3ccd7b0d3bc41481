"""Small models and dense float64 references shared by the core tests; the CLI runner."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def tiny_mlp_problem(n=12, d_in=3, hidden=4, out=2, seed=0, dtype=jnp.float64):
    """A tanh MLP with a nested-dict pytree of params and a squared-error per-example loss."""
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    params = {
        "layer1": {
            "w": jax.random.normal(k[0], (d_in, hidden), dtype) / np.sqrt(d_in),
            "b": 0.1 * jax.random.normal(k[1], (hidden,), dtype),
        },
        "layer2": {"w": jax.random.normal(k[2], (hidden, out), dtype) / np.sqrt(hidden)},
    }
    batch = {
        "x": jax.random.normal(k[3], (n, d_in), dtype),
        "y": jax.random.normal(k[4], (n, out), dtype),
    }

    def loss_fn(p, ex):
        h = jnp.tanh(ex["x"] @ p["layer1"]["w"] + p["layer1"]["b"])
        return 0.5 * jnp.sum((h @ p["layer2"]["w"] - ex["y"]) ** 2)

    return loss_fn, params, batch


def random_like(params, seed=1):
    flat, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(jax.random.PRNGKey(seed), flat.shape, flat.dtype))


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def pair_form_diffusion(loss_fn, params, batch):
    """theory §2 pair form: D = (1/N²) Σ_{a<b} (g_a − g_b)(g_a − g_b)ᵀ = JᵀJ/N² (test oracle)."""
    w0, unravel = ravel_pytree(params)
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    ia, ib = np.triu_indices(n, 1)

    def fhat(w):
        losses = jax.vmap(loss_fn, in_axes=(None, 0))(unravel(w), batch)
        return losses[ia] - losses[ib]

    J = jax.jacrev(fhat)(w0)
    return np.asarray(J.T @ J) / n**2


def explicit_metric_christoffel(loss_fn, params, batch, eps):
    """Γ_{k,ij} = ½(∂_i g_jk + ∂_j g_ik − ∂_k g_ij) by autodiff of w ↦ I + ε D(w) (pair form)."""
    w0, unravel = ravel_pytree(params)
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    ia, ib = np.triu_indices(n, 1)

    def metric(w):
        def fhat(u):
            losses = jax.vmap(loss_fn, in_axes=(None, 0))(unravel(u), batch)
            return losses[ia] - losses[ib]

        J = jax.jacrev(fhat)(w)
        return jnp.eye(w.shape[0], dtype=w.dtype) + eps * J.T @ J / n**2

    dg = jax.jacfwd(metric)(w0)  # dg[i, j, k] = ∂_k g_ij
    gamma = 0.5 * (
        jnp.einsum("jki->kij", dg) + jnp.einsum("ikj->kij", dg) - jnp.einsum("ijk->kij", dg)
    )
    return np.asarray(gamma), np.asarray(metric(w0)), np.asarray(dg)


def cli_env():
    """The environment of a ``grd`` subprocess: single-threaded Eigen, no ``GRD_DEBUG``."""
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    env.pop("GRD_DEBUG", None)
    return env


def run_cli(*args, timeout=600):
    """``python -m grd.cli *args`` in a subprocess (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "grd.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )
