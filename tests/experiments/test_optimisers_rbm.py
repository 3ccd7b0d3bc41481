"""The optimisers_rbm experiment: its verdict rule and helpers on synthetic data with known
answers, and the tiny profile end to end."""

import json

import numpy as np
import pytest

from grd.experiments import VERDICTS, Context, optimisers_rbm as exp
from grd.report import to_jsonable


def test_paired_verdict_rules():
    rng = np.random.default_rng(0)
    # A clear gain in every seed.
    assert exp.paired_verdict(0.5 + 0.01 * rng.normal(size=5), margin=0.02)[0] == "reproduced"
    # No effect, measured precisely: any gain is below the margin.
    assert exp.paired_verdict(1e-3 * rng.normal(size=5), margin=0.02)[0] == "not_reproduced"
    # A clear loss is also "no gain".
    assert exp.paired_verdict(-0.3 + 0.01 * rng.normal(size=5), margin=0.02)[0] == (
        "not_reproduced"
    )
    # Too noisy to tell.
    assert exp.paired_verdict([-0.5, 0.6, 0.1], margin=0.02)[0] == "inconclusive"
    verdict, m, half = exp.paired_verdict([0.1, 0.2, 0.3], margin=0.02)
    assert m == pytest.approx(0.2) and half == pytest.approx(4.302653 * 0.1 / np.sqrt(3), 1e-6)


def test_interpolate_at_is_exact_on_linear_curves_and_clamps():
    xs = np.array([0, 10, 20, 30])
    ys = 2.0 * xs + 1
    assert exp.interpolate_at(17.5, xs, ys) == pytest.approx(36.0)
    assert exp.interpolate_at(45, xs, ys) == ys[-1]  # beyond the budget: the last value
    assert exp.interpolate_at(-1, xs, ys) == ys[0]


def test_configs_are_faithful_sizes():
    default, full = exp.EXPERIMENT.configs["default"], exp.EXPERIMENT.configs["full"]
    for cfg in (default, full):
        assert all(len(v) >= 4 for v in cfg.lr_grid.values())  # a log grid of ≥ 4 rates
        assert all(np.all(np.diff(np.log(v)) > 0) for v in cfg.lr_grid.values())
        assert cfg.final_seeds >= 5  # optimiser comparisons: ≥ 5 seeds
        assert cfg.rbm_hidden <= 16  # exact likelihood by enumeration


@pytest.mark.slow  # ≈ 60 s of CPU: seven training rules compile
def test_tiny_profile_end_to_end(tmp_path):
    cfg = exp.EXPERIMENT.configs["tiny"]
    out = exp.EXPERIMENT.run(cfg, Context("optimisers_rbm", tmp_path, seeds=(0, 1, 2)))
    assert out.section.key == "optimisers_rbm"
    names = [f.name for f in out.section.figures]
    assert len(set(names)) == len(names) and all(n.startswith("optimisers_rbm_") for n in names)
    json.dumps(to_jsonable(dict(out.metrics)))
    assert len(out.findings) == 3
    assert all(f.verdict in VERDICTS for f in out.findings)
    rbm = out.metrics["rbm"]["per_rule"]
    assert all(len(r["test"]) == 3 and np.all(np.isfinite(r["test"])) for r in rbm.values())
    # Paired seeds: the verdict's measured value is the mean NGD − SGD test-loss gain.
    gain = out.metrics["mlp"]["gain_over_sgd_ngd"]["final"]
    assert out.findings[0].measured == pytest.approx(np.mean(gain))
