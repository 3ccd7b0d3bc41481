"""lee_kappa: the tiny profile end to end, and the uniform null and both verdict rules on
synthetic data with a known answer."""

import json
import math

import jax
import numpy as np
import pytest

from grd import analysis
from grd.experiments import VERDICTS, Context
from grd.experiments._nets import SmallLeNet, classifier
from grd.experiments.lee_kappa import (
    EXPERIMENT,
    correlation_verdict,
    layer_labels,
    trend_verdict,
    uniform_null,
)
from grd.report import to_jsonable


@pytest.mark.slow  # ≈ 30 s of CPU; tests/test_cli.py runs every experiment's tiny profile
def test_tiny_end_to_end(tmp_path):
    cfg = EXPERIMENT.configs["tiny"]
    out = EXPERIMENT.run(cfg, Context("lee_kappa", tmp_path, seeds=(0,)))
    assert out.section.key == "lee_kappa"
    assert all(f.name.startswith("lee_kappa_") for f in out.section.figures)
    json.dumps(to_jsonable(dict(out.metrics)))
    assert len(out.findings) == 2
    assert {f.verdict for f in out.findings} <= set(VERDICTS)
    kappa = np.asarray(out.metrics["kappa"])  # (layers + whole net, seeds, checkpoints, sets)
    assert kappa.shape == (4, 1, len(cfg.snapshot_steps), cfg.n_sets)
    assert np.all(kappa > 0)
    # the whole network has the parameters of all layers
    assert out.metrics["p"][-1] == sum(out.metrics["p"][:-1])


def test_layer_labels_cover_every_parameter_once():
    init, _, _ = classifier(SmallLeNet(7, (2, 3), 3), 49)
    params = init(jax.random.PRNGKey(0))
    labels, names = layer_labels(params)
    assert names == sorted(params)
    for i, name in enumerate(names):
        want = sum(x.size for x in jax.tree_util.tree_leaves(params[name]))
        assert int(np.sum(labels == i)) == want


def test_uniform_null_is_p_over_sqrt_n_not_zero():
    p, n = 400, 25
    kappa = uniform_null(p, n, 40, seed=0)
    # R̄√n of uniform directions has relative spread ≈ 1/√(2p) ≈ 3.5 %, so the mean over 40
    # sets is within 5 % of the closed form; p/√n itself is lower by the factor (n − 1)/n
    banerjee = float(analysis.uniform_concentration_baseline(p, n))
    assert kappa.mean() == pytest.approx(banerjee, rel=0.05)
    assert banerjee == pytest.approx(p / math.sqrt(n) * n / (n - 1), rel=1e-3)
    # the review's numbers: p/√n = 301.25 for p = 2410, n = 64; Banerjee's value is 306.0
    assert 2410 / math.sqrt(64) == 301.25
    assert float(analysis.uniform_concentration_baseline(2410, 64)) == pytest.approx(
        306.03, abs=0.01
    )


def _synthetic(driver_is_kappa, seeds=4, steps=8, sets=6, seed=0):
    """GS follows one of two series exactly (up to small draw noise); the other is noise."""
    rng = np.random.default_rng(seed)
    kappa = np.empty((seeds, steps, sets))
    gns = np.empty_like(kappa)
    gs = np.empty_like(kappa)
    for s in range(seeds):
        trend = np.linspace(3.0, 1.0, steps) + 0.05 * rng.normal(size=steps)
        other = 1.0 + 0.5 * rng.normal(size=steps)
        k_series, n_series = (trend, other) if driver_is_kappa else (other, trend)
        kappa[s] = k_series[:, None] + 0.02 * rng.normal(size=(steps, sets))
        gns[s] = n_series[:, None] + 0.02 * rng.normal(size=(steps, sets))
        gs[s] = 1.0 / trend[:, None] + 0.01 * rng.normal(size=(steps, sets))
    return gs, kappa, gns


def test_correlation_verdict_known_answers():
    assert correlation_verdict(*_synthetic(True), n_boot=300)[0] == "reproduced"
    assert correlation_verdict(*_synthetic(False), n_boot=300)[0] == "not_reproduced"
    # GS independent of both: cannot decide
    rng = np.random.default_rng(3)
    noise = [rng.normal(size=(4, 8, 6)) + 5 for _ in range(3)]
    assert correlation_verdict(*noise, n_boot=300)[0] == "inconclusive"


def test_trend_verdict_known_answers():
    rng = np.random.default_rng(4)
    falling = np.exp(np.linspace(2, 0, 6))[None, :, None] * (1 + 0.05 * rng.random((3, 6, 5)))
    verdict, value, _, _ = trend_verdict(falling, n_boot=300)
    assert verdict == "reproduced" and value == pytest.approx(-2.0, abs=0.1)
    assert trend_verdict(falling[:, ::-1], n_boot=300)[0] == "not_reproduced"
    flat = 1 + 0.05 * rng.random((3, 6, 5))
    assert trend_verdict(flat, n_boot=300)[0] == "inconclusive"
