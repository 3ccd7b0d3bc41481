"""grd on two JAX processes (jax.distributed, gloo, 2 CPU devices each) agrees with one process.

One launch of both processes runs every default check (_worker.DEFAULT_CHECKS); each test
below compares one of its results, gathered to both hosts, with the same code run in this
single pytest process on one device over all the data (_worker.reference), in float64.
"""

import _worker
import numpy as np
import pytest
from conftest import launch_checks, load_results

# float64 on both sides; only the order of the sums differs (4 device partial sums
# all-reduced instead of one sum of 16; for grd.streamed, batches of 4 within unequal process
# shares, then a sum over the 2 processes). Each product or trace therefore differs by a few
# ulps of its terms, and Lanczos (backward stable, full reorthogonalisation) moves the Ritz
# values by as much. The CG inverses stop at the same iteration on both sides (the same
# residual test on values equal to round-off), so their solutions differ by round-off
# amplified by κ(g) = 1 + ε·λ_max < 3. Measured: ≤ 6e-16 relative to the largest entry
# (2026-11-30). 1e-12 leaves a margin of > 1000 and still fails on any real difference: a
# wrong N, a missed or doubled shard change D by O(1e-2) or more.
RTOL = 1e-12
KILLED_PEER = (1, -6, -9)  # how process 0 ends when process 1 is killed (see the kill tests)


def _close(got, want, name, rtol=RTOL):
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want)))
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert err <= rtol * scale, f"{name}: max |two processes − one| = {err:.3e} (scale {scale})"


@pytest.fixture(scope="module")
def reference(checks_run):
    return checks_run["reference"]


@pytest.mark.parametrize(
    "name",
    [
        "Dv", "gamma", "half_dg", "ginv", "losses", "optax", "field_grd",
    ],
)  # fmt: skip
def test_two_processes_agree_with_one(checks_run, reference, name):
    for pid, res in enumerate(checks_run["results"]):  # gathered to both hosts
        _close(res[name], reference[name], f"{name} (process {pid})")


@pytest.mark.parametrize("name", ["s_Dv", "s_trace", "s_lanczos", "s_lambda_max", "s_ginv"])
def test_streamed_shards_agree_with_one_process(checks_run, reference, name):
    """Each process streams only its rows (5 and 11 of 16): the all-reduced products are
    those of one process streaming all 16 rows, and of the in-memory functions."""
    for pid, res in enumerate(checks_run["results"]):
        _close(res[name], reference[name], f"{name} (process {pid})")
    in_memory = {"s_Dv": "Dv", "s_ginv": "ginv"}
    if name in in_memory:
        _close(checks_run["results"][0][name], reference[in_memory[name]], f"{name} in memory")
    r0, r1 = checks_run["results"]
    # the same passes on both processes: one mean pass + products, equal loop decisions
    assert r0["s_passes"].tolist() == r1["s_passes"].tolist()
    assert r0[name].tobytes() == r1[name].tobytes()  # bitwise equal on both processes


def test_helpers_split_and_gather_the_batch(checks_run):
    _, _, batch, _ = _worker.problem()
    r0, r1 = checks_run["results"]
    # process i holds rows i·N/2 … (i+1)·N/2: each read only its half of the data
    assert r0["rows"].tolist() == [0, 8] and r1["rows"].tolist() == [8, 16]
    # the global batch spans the 4 devices of both processes, 4 examples per device
    assert r0["batch_shards"].tolist() == [4, 4] == r1["batch_shards"].tolist()
    # gather brings the whole (N, d_in) batch back to every host, in the original order
    for res in (r0, r1):
        assert res["batch_x"].tobytes() == np.asarray(batch["x"]).tobytes()


def test_a_failing_process_fails_fast(checks_run):
    """The default launch ends with grd's finite check (eqx.error_if) failing inside a jitted
    SPMD program ("fail": a NaN in process 0's rows). Its callback raises on the process that
    runs it, which only logs the traceback, and both processes then wait in a collective
    forever. The launcher ends the run 3 s after the traceback (not at its timeout), with
    both outputs in its report."""
    d, codes, report = checks_run["dir"], checks_run["codes"], checks_run["report"]
    errs = [(d / f"err_checks_{pid}.txt").read_text() for pid in range(2)]
    assert any("EquinoxRuntimeError" in e and "NaN or inf" in e for e in errs), report("traceback")
    assert codes != [0, 0], report(f"return codes {codes}")  # killed, not finished
    assert "never" not in checks_run["results"][0]  # the failed check returned nothing
    assert "--- process 1 stderr:" in report("")


@pytest.mark.slow  # one more launch (≈ 15 s of CPU); the behaviour docs/multihost.md advises
def test_failed_check_gives_nan_with_eqx_on_error_nan(two_processes, tmp_path):
    """With EQX_ON_ERROR=nan the same failed check returns NaN on every process: no hang."""
    two_processes("checks", tmp_path, "fail", timeout=150, env={"EQX_ON_ERROR": "nan"})
    for res in load_results(tmp_path):
        assert np.isnan(res["never"]).all()


@pytest.mark.slow  # the jitted Lanczos, flows through diffrax, orbax: ≈ 60 s of CPU
def test_slow_checks_agree_with_one_process(tmp_path):
    run = launch_checks(_worker.SLOW_CHECKS, tmp_path)
    ref = _worker.reference(["lanczos", "flows"])
    for pid, res in enumerate(run["results"]):
        for name in ("lanczos", "flow_ngd", "flow_grd"):
            _close(res[name], ref[name], f"{name} (process {pid})")
        assert bool(res["state_sharded"][0])  # the state has a leaf split over processes
        assert bool(res["roundtrip"][0])  # save + load: same bits, shardings, step, metadata


@pytest.mark.slow  # three launches of two processes: ≈ 75 s of CPU
def test_killed_run_resumes_bit_for_bit(two_processes, tmp_path):
    two_processes("train", tmp_path / "full")  # uninterrupted (same program, same mesh)
    full = load_results(tmp_path / "full")
    kill_at = 2 * _worker.EVERY
    codes, report = two_processes("train", tmp_path, str(kill_at), expect_failure=True)
    # process 1 killed itself mid-interval; process 0 then either failed in its next
    # collective (gloo: "Connection closed by peer"; the worker exits with 1), was aborted by
    # JAX's coordination service (SIGABRT: "Polled an error from coordination service") or
    # was killed by the launcher, whichever came first
    assert codes[1] == -9 and codes[0] in KILLED_PEER, report(f"return codes {codes}")
    assert not (tmp_path / "result_0.json").exists()
    two_processes("train", tmp_path)
    for pid, res in enumerate(load_results(tmp_path)):
        # resumed from a committed step of the killed run, not from scratch
        assert int(res["resumed_from"][0]) in (_worker.EVERY, kill_at), report("resume step")
        assert res["train_params"].tobytes() == full[pid]["train_params"].tobytes()
        assert res["train_ema"].tobytes() == full[pid]["train_ema"].tobytes()


@pytest.mark.slow  # three launches of a GRD flow by two processes: ≈ 90 s of CPU
def test_killed_flow_resumes_bit_for_bit(two_processes, tmp_path):
    """grd.checkpoint.integrate_checkpointed on two processes (orbax steps, chosen by itself
    since jax.process_count() > 1): killed after segment 2 of 3, resumed, it ends bit for bit
    where an uninterrupted segmented run does."""
    two_processes("flow", tmp_path / "full")
    full = load_results(tmp_path / "full")
    codes, report = two_processes("flow", tmp_path, "2", expect_failure=True)
    assert codes[1] == -9 and codes[0] in KILLED_PEER, report(f"return codes {codes}")
    two_processes("flow", tmp_path)
    for pid, res in enumerate(load_results(tmp_path)):
        assert int(res["resumed_from"][0]) == 2, report("resume step")
        for name in ("flow_w", "flow_v"):
            assert res[name].tobytes() == full[pid][name].tobytes(), report(name)
