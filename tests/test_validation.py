"""Bad input gets a clear error naming the argument (the theory page's conventions; issues 2, 9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_like, tiny_mlp_problem

import grd


@pytest.fixture(scope="module")
def problem():
    return tiny_mlp_problem()


def test_mismatched_leading_axes(problem):
    loss_fn, params, batch = problem
    bad = {"x": batch["x"], "y": batch["y"][:-1]}
    with pytest.raises(ValueError, match="mismatched leading axes"):
        grd.diffusion_matvec(loss_fn, params, bad, random_like(params))


def test_single_example_and_empty_batch(problem):
    loss_fn, params, batch = problem
    one = jax.tree_util.tree_map(lambda x: x[:1], batch)
    with pytest.raises(ValueError, match="N ≥ 2"):
        grd.diffusion_matvec(loss_fn, params, one, random_like(params))
    empty = jax.tree_util.tree_map(lambda x: x[:0], batch)
    with pytest.raises(ValueError, match="empty"):
        grd.diffusion_trace(loss_fn, params, empty)
    with pytest.raises(ValueError, match="N ≥ 2"):
        grd.DiffusionMetric(loss_fn, one, 0.1)


@pytest.mark.parametrize("where", ["params", "batch", "v"])
def test_nan_inputs_raise(problem, where):
    loss_fn, params, batch = problem
    v = random_like(params)
    poison = lambda t: jax.tree_util.tree_map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), t)
    args = {"params": params, "batch": batch, "v": v}
    args[where] = poison(args[where])
    with pytest.raises(Exception, match=f"`{where}` contains NaN"):
        jax.block_until_ready(
            grd.diffusion_matvec(loss_fn, args["params"], args["batch"], args["v"])
        )
    f = jax.jit(lambda p, b, u: grd.christoffel_contract(loss_fn, p, b, u, 0.1))
    with pytest.raises(Exception, match=f"`{where}` contains NaN"):
        jax.block_until_ready(f(args["params"], args["batch"], args["v"]))


def test_v_structure(problem):
    loss_fn, params, batch = problem
    with pytest.raises(ValueError, match="`v` must have the pytree structure"):
        grd.diffusion_matvec(loss_fn, params, batch, [1.0])
    v = random_like(params)
    v["layer1"]["b"] = jnp.zeros(7)
    with pytest.raises(ValueError, match="`v` leaf"):
        grd.diffusion_matvec(loss_fn, params, batch, v)


def test_non_scalar_loss(problem):
    _, params, batch = problem
    vector_loss = lambda p, ex: ex["x"] @ p["layer1"]["w"]
    with pytest.raises(ValueError, match="must return a scalar"):
        grd.diffusion_matvec(vector_loss, params, batch, random_like(params))


def test_negative_eps(problem):
    loss_fn, params, batch = problem
    with pytest.raises(ValueError, match="`eps` must be"):
        grd.christoffel_contract(loss_fn, params, batch, random_like(params), -1.0)


def test_mixed_dtypes_rejected(problem):
    loss_fn, params, batch = problem
    mixed = dict(params)
    mixed["layer2"] = {"w": params["layer2"]["w"].astype(jnp.float32)}
    with pytest.raises(TypeError, match="mixes floating dtypes"):
        grd.diffusion_trace(loss_fn, mixed, batch)
    with pytest.raises(TypeError, match="floating-point"):
        grd.diffusion_trace(lambda p, x: jnp.sum(x["x"]) * 1.0, {"w": np.arange(3)}, batch)


def test_spectrum_k_bounds(problem):
    loss_fn, params, batch = problem
    with pytest.raises(ValueError, match="`k` must be ≤ min"):
        grd.diffusion_spectrum(loss_fn, params, batch, 12, method="lanczos")
    with pytest.raises(ValueError, match="`k` is required"):
        grd.diffusion_spectrum(loss_fn, params, batch, method="lanczos")


def test_bad_numeric_options(problem):
    loss_fn, params, batch = problem
    v = random_like(params)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
            grd.diffusion_matvec(loss_fn, params, batch, v, chunk_size=bad)
    with pytest.raises(ValueError, match="`num_samples`"):
        grd.diffusion_trace(
            loss_fn, params, batch, method="hutchinson", num_samples=0, key=jax.random.PRNGKey(0)
        )
    with pytest.raises(ValueError, match="`num_terms`"):
        grd.metric_inverse(loss_fn, params, batch, v, 0.01, method="neumann", num_terms=0)
    with pytest.raises(ValueError, match="`max_steps`"):
        grd.metric_inverse(loss_fn, params, batch, v, 0.01, method="cg", max_steps=0)
    with pytest.raises(ValueError, match="`rtol` and `atol`"):
        grd.metric_inverse(loss_fn, params, batch, v, 0.01, method="cg", rtol=-1.0)
    with pytest.raises(ValueError, match="`eps`"):
        grd.flow_field(loss_fn, batch, flow="ngd", eps=-1.0)


def test_weak_field_check_rejects_nan_lambda(problem):
    loss_fn, params, batch = problem
    with pytest.raises(Exception, match="eps·λ_max < 1"):
        jax.block_until_ready(
            grd.metric_inverse(
                loss_fn,
                params,
                batch,
                random_like(params),
                0.1,
                method="weak_field",
                lam_max=float("nan"),
            )
        )
