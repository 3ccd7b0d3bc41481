"""grd.streamed: D of a data set read batch by batch equals the in-memory D.

Oracle: the in-memory functions on the concatenated batch (themselves tested against dense
float64 references). Uneven batches (5, 4, 3) check the bookkeeping of N. Tolerances:
products and trace 1e-12 (float64 round-off, different summation order); Lanczos at full
depth (num_matvecs = N) against the exact Gram spectrum, 1e-9 relative.
"""

import jax
import numpy as np
import pytest
from helpers import flat, random_like, tiny_mlp_problem

import grd


@pytest.fixture(scope="module")
def problem():
    loss_fn, params, batch = tiny_mlp_problem(n=12)
    cuts = [(0, 5), (5, 9), (9, 12)]
    passes = []

    def make_iter():
        passes.append(1)
        return (jax.tree.map(lambda x, a=a, b=b: x[a:b], batch) for a, b in cuts)

    return loss_fn, params, batch, grd.streamed(make_iter), passes


def test_streamed_equals_in_memory(problem):
    loss_fn, params, batch, data, passes = problem
    v = random_like(params)
    np.testing.assert_allclose(
        flat(grd.diffusion_matvec(loss_fn, params, data, v)),
        flat(grd.diffusion_matvec(loss_fn, params, batch, v)),
        atol=1e-12,
    )
    passes.clear()
    tr = grd.diffusion_trace(loss_fn, params, data)
    assert len(passes) == 2  # mean pass + one pass
    np.testing.assert_allclose(tr, grd.diffusion_trace(loss_fn, params, batch), rtol=1e-12)
    exact = grd.diffusion_spectrum(loss_fn, params, batch, 3).eigenvalues
    passes.clear()
    spec = grd.diffusion_spectrum(
        loss_fn, params, data, 3, method="lanczos", num_matvecs=12, return_eigenvectors=True
    )
    assert len(passes) == 1 + 12
    np.testing.assert_allclose(spec.eigenvalues, exact, rtol=1e-9)
    u = jax.tree.map(lambda x: x[0], spec.eigenvectors)
    np.testing.assert_allclose(
        flat(grd.diffusion_matvec(loss_fn, params, batch, u)), exact[0] * flat(u), atol=1e-8
    )
    np.testing.assert_allclose(
        grd.lambda_max(loss_fn, params, data, num_matvecs=12), exact[0], rtol=1e-9
    )
    x = grd.metric_inverse(loss_fn, params, data, v, 0.5, rtol=1e-12, atol=0.0)
    ref = grd.metric_inverse(loss_fn, params, batch, v, 0.5, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(flat(x), flat(ref), atol=1e-10)


def test_streamed_errors(problem):
    loss_fn, params, batch, data, _ = problem
    with pytest.raises(TypeError, match="not supported by grd.diffusion_matrix"):
        grd.diffusion_matrix(loss_fn, params, data)
    with pytest.raises(ValueError, match="no batch"):
        grd.diffusion_trace(loss_fn, params, grd.streamed(lambda: iter(())))
    with pytest.raises(TypeError, match="make_iter"):
        grd.streamed([batch])
    with pytest.raises(TypeError, match="across_processes"):
        grd.streamed(lambda: iter([batch]), across_processes="yes")
    # one process: nothing to combine unless asked (then the sum over 1 process: itself)
    assert not grd.streamed(lambda: iter([batch])).across_processes
