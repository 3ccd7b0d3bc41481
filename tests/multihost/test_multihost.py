"""grd on two JAX processes (jax.distributed, gloo, 2 CPU devices each) agrees with one process.

One launch of both processes runs every check (tests/multihost/_worker.py); each test below
compares one of its results, gathered to both hosts, with the same jitted computation in this
single pytest process on one device, in float64.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

sys.path.insert(0, str(Path(__file__).parent))
import _worker  # noqa: E402

import grd  # noqa: E402

# float64 on both sides: only the order of the cross-device sums differs (4 partial sums
# all-reduced instead of one sum of 16), ~1e-16 relative per product; the CG inverse is
# solved to 1e-12 and the flows run adaptive steps whose accepted sizes can shift by a
# rounding difference, so 1e-9 relative covers every quantity (what test_sharding uses).
RTOL = 1e-9


@pytest.fixture(scope="module")
def reference():
    loss_fn, params, batch, v = _worker.problem()
    ref = {
        k: np.asarray(ravel_pytree(x)[0])
        for k, x in _worker.operators(loss_fn)(params, batch, v).items()
    }
    ref["lanczos"] = np.asarray(
        grd.diffusion_spectrum(loss_fn, params, batch, 3, method="lanczos").eigenvalues
    )
    tx = grd.diffusion_ngd(0.1, eps=0.3, method="cg")
    ref["optax"] = np.asarray(
        ravel_pytree(_worker.optax_steps(loss_fn, tx, params, tx.init(params), batch))[0]
    )
    for flow in ("ngd", "grd"):
        sol = grd.integrate(loss_fn, params, batch, flow=flow, **_worker.flow_kwargs())
        ref[f"flow_{flow}"] = np.asarray(
            ravel_pytree(jax.tree_util.tree_map(lambda x: x[-1], sol.ys))[0]
        )
    ref["batch_x"] = np.asarray(batch["x"])
    return ref


def _close(got, want, name):
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want)))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert err <= RTOL * scale, f"{name}: max |two processes − one| = {err:.3e} (scale {scale})"


@pytest.mark.parametrize(
    "name",
    ["Dv", "gamma", "half_dg", "ginv", "losses", "lanczos", "optax", "flow_ngd", "flow_grd"],
)
def test_two_processes_agree_with_one(checks_run, reference, name):
    for pid, res in enumerate(checks_run["results"]):  # gathered to both hosts
        _close(res[name], reference[name], f"{name} (process {pid})")


def test_helpers_split_and_gather_the_batch(checks_run, reference):
    r0, r1 = checks_run["results"]
    # process i holds rows i·N/2 … (i+1)·N/2: each read only its half of the data
    assert r0["rows"].tolist() == [0, 8] and r1["rows"].tolist() == [8, 16]
    # the global batch spans the 4 devices of both processes, 4 examples per device
    assert r0["batch_shards"].tolist() == [4, 4] == r1["batch_shards"].tolist()
    # gather brings the whole (N, d_in) batch back to every host, in the original order
    for res in (r0, r1):
        assert res["batch_x"].tobytes() == reference["batch_x"].tobytes()


def test_sharded_state_roundtrip(checks_run):
    for res in checks_run["results"]:
        assert bool(res["state_sharded"])  # the state has a leaf split over processes
        assert bool(res["roundtrip"])  # save + load: same bits, same shardings, step, metadata


@pytest.mark.slow  # three launches of two processes: ≈ 75 s of CPU
def test_killed_run_resumes_bit_for_bit(two_processes, tmp_path):
    two_processes("train", tmp_path / "full")  # uninterrupted (same program, same mesh)
    full = [dict(np.load(tmp_path / "full" / f"result_{pid}.npz")) for pid in range(2)]
    kill_at = 2 * _worker.EVERY
    codes, report = two_processes("train", tmp_path, str(kill_at), expect_killed=True)
    # process 1 killed itself mid-interval; process 0 was then either aborted by JAX's
    # coordination service (SIGABRT: "Polled an error from coordination service") or killed
    # by the launcher, whichever came first
    assert codes[1] == -9 and codes[0] in (-6, -9), report(f"return codes {codes}")
    assert not (tmp_path / "result_0.npz").exists()
    two_processes("train", tmp_path)
    for pid in range(2):
        res = dict(np.load(tmp_path / f"result_{pid}.npz"))
        # resumed from a committed step of the killed run, not from scratch
        assert int(res["resumed_from"]) in (_worker.EVERY, kill_at), report("resume step")
        assert res["train_params"].tobytes() == full[pid]["train_params"].tobytes()
        assert res["train_ema"].tobytes() == full[pid]["train_ema"].tobytes()
