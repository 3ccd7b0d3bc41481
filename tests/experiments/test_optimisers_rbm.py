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


def test_detectable_effect_is_the_t_half_width():
    # sd 0.1 over 5 seeds: t_{0.975,4} = 2.776 → 2.776 · 0.1 / √5 = 0.1241.
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * 0.1 / np.std([-1, -0.5, 0, 0.5, 1], ddof=1)
    assert exp.detectable_effect(x) == pytest.approx(2.776445 * 0.1 / np.sqrt(5), rel=1e-5)


def test_paired_null_is_judged_not_reproduced_at_the_stated_rate():
    # A pure-noise gain (true mean 0, sd 0.005, so t·sd/√5 ≈ 0.006 < margin): the CI lies
    # above 0 in 2.5 % of draws (reproduced by chance) and below the margin almost always.
    rng = np.random.default_rng(1)
    verdicts = [exp.paired_verdict(0.005 * rng.normal(size=5), margin=0.02)[0] for _ in range(2000)]
    assert np.mean([v == "reproduced" for v in verdicts]) < 0.045  # nominal 0.025
    assert np.mean([v == "not_reproduced" for v in verdicts]) > 0.9


def test_steps_within_reads_the_budget_off_the_cost_curve():
    steps = np.arange(0, 301, 30)
    # SGD: one gradient-equivalent per step → the budget is the step budget.
    assert exp.steps_within(300, steps, steps * 1.0) == pytest.approx(300)
    # Seven per step: the budget of 300 is spent after 300/7 steps.
    assert exp.steps_within(300, steps, 7.0 * steps) == pytest.approx(300 / 7)
    # Cheaper than the reference: clamped at the last step (not extended).
    assert exp.steps_within(300, steps, 0.5 * steps) == pytest.approx(300)


def test_pick_best_uses_the_mean_over_grid_seeds_and_drops_diverged_runs():
    scores = {0.1: [0.50, 0.30], 0.3: [0.35, 0.36], 1.0: [np.nan, 0.01]}
    # Mean 0.40, 0.355, and a diverged run (worst) → 0.3 wins on the mean, not 0.1's best seed.
    assert exp.pick_best(scores, higher_is_better=False) == 0.3
    assert exp.pick_best({1: [-120.0, -121.0], 2: [-119.0, -125.0]}, higher_is_better=True) == 1


def test_configs_are_faithful_sizes():
    default, full = exp.EXPERIMENT.configs["default"], exp.EXPERIMENT.configs["full"]
    for cfg in (default, full):
        assert all(len(v) >= 4 for v in cfg.lr_grid.values())  # a log grid of ≥ 4 rates
        assert all(np.all(np.diff(np.log(v)) > 0) for v in cfg.lr_grid.values())
        assert len(cfg.ngd_c_grid) >= 3 and cfg.null_c <= 1e-3
        assert cfg.final_seeds >= 5  # optimiser comparisons: ≥ 5 seeds
        assert not set(cfg.grid_seeds) & set(range(cfg.final_seeds))  # fresh final seeds
        assert cfg.steps % cfg.evals == 0
        assert cfg.rbm_hidden <= 16  # exact likelihood by enumeration
        assert len(cfg.rbm_lr_grid) >= 4


@pytest.mark.slow  # ≈ 60 s of CPU: the training rules compile
def test_tiny_profile_end_to_end(tmp_path):
    cfg = exp.EXPERIMENT.configs["tiny"]
    out = exp.EXPERIMENT.run(cfg, Context("optimisers_rbm", tmp_path, seeds=(0, 1, 2)))
    assert out.section.key == "optimisers_rbm"
    names = [f.name for f in out.section.figures]
    assert len(set(names)) == len(names) and all(n.startswith("optimisers_rbm_") for n in names)
    json.dumps(to_jsonable(dict(out.metrics)))
    assert len(out.findings) == 4
    assert all(f.verdict in VERDICTS for f in out.findings)
    assert all("not a claim of the sources" in f.claim or "proposal" in f.claim
               for f in out.findings)  # fmt: skip
    rbm = out.metrics["rbm"]["per_rule"]
    assert all(len(r["test"]) == 3 and np.all(np.isfinite(r["test"])) for r in rbm.values())
    # Paired seeds: the verdict's measured value is the mean NGD training-loss gain.
    gain = out.metrics["mlp"]["train_gain_over_sgd"]
    assert out.findings[0].measured == pytest.approx(np.mean(gain["ngd"]["final"]))
    # The null (metric ≈ I at SGD's rate and minibatches) reproduces SGD to float32 noise.
    assert np.max(np.abs(gain["null"]["final"])) < 1e-2
    # The compute-matched CD-1 rule spends about NGD-CD-1's gradient-equivalents.
    ngd, matched = (np.mean(r["cost"]) for lab, r in rbm.items() if "NGD" in lab)
    assert matched == pytest.approx(ngd, rel=0.25)
