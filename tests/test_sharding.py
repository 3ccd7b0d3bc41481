"""The batch sharded over 1, 2, 4, 8 (host-platform) devices gives the same results (issue 8).

Runs in a subprocess because the device count is fixed when JAX initialises.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import grd
from grd import sharding


def test_sharded_results_agree_across_device_counts():
    script = Path(__file__).with_name("_sharded_script.py")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.split("REPORT", 1)[1])
    assert report["devices"] == 8
    for num in ("1", "2", "4", "8"):
        info = report[num]
        # the example axis is really split: N/num examples per device
        assert info["batch_devices"] == int(num)
        assert info["shard_shapes"] == [[16 // int(num), 3]]
        assert info["losses_devices"] == int(num)  # per-example output stays sharded
        for k, diff in info["max_abs_diff"].items():
            # float64: only the order of the cross-device sums changes (CG to 1e-12).
            assert diff <= 1e-9 * max(1.0, info["max_abs_ref"][k]), (num, k, diff)
        assert {"Dv", "gamma", "half_dg", "hvp", "ginv", "lanczos", "optax", "flow"} <= set(
            info["max_abs_diff"]
        )


def test_shard_batch_errors():
    mesh = sharding.data_mesh(1)
    with pytest.raises(ValueError, match="num_devices"):
        sharding.data_mesh(len(jax.devices()) + 1)
    b = sharding.shard_batch({"x": jax.numpy.ones((3, 2))}, mesh)
    assert b["x"].shape == (3, 2)
    assert grd.per_example_losses(
        lambda p, ex: p * ex["x"].sum(), jax.numpy.asarray(1.0), b
    ).shape == (3,)
