"""noise_scale: the tiny profile end to end, McCandlish et al.'s two-batch estimator on
Gaussian minibatch gradients with a known noise scale, and the growth verdict."""

import json

import numpy as np
import pytest

from grd.experiments import VERDICTS, Context
from grd.experiments.noise_scale import (
    EXPERIMENT,
    growth_verdict,
    hierarchical_log_ratio,
    two_batch_estimate,
)
from grd.report import to_jsonable


@pytest.mark.slow  # ≈ 30 s of CPU; tests/test_cli.py runs every experiment's tiny profile
def test_tiny_end_to_end(tmp_path):
    cfg = EXPERIMENT.configs["tiny"]
    out = EXPERIMENT.run(cfg, Context("noise_scale", tmp_path, seeds=(0,)))
    assert out.section.key == "noise_scale"
    assert all(f.name.startswith("noise_scale_") for f in out.section.figures)
    json.dumps(to_jsonable(dict(out.metrics)))
    assert len(out.findings) == 3
    assert {f.verdict for f in out.findings} <= set(VERDICTS)
    assert out.findings[2].verdict == "inconclusive"  # the critical-batch claim is untested
    b = np.asarray(out.metrics["b_simple"])
    tr, g2 = np.asarray(out.metrics["trace_D"]), np.asarray(out.metrics["grad_norm_sq"])
    np.testing.assert_allclose(b, tr / g2, rtol=1e-5)  # B_simple = tr D / |ḡ|², float32
    assert np.all(b > 0)


def test_two_batch_estimator_recovers_a_known_noise_scale():
    # minibatch means with replacement: G_B ~ N(ḡ, Σ/B); |ḡ|² = 1, tr Σ = 50 → B_simple = 50
    rng = np.random.default_rng(0)
    d, draws = 50, 4000
    gbar = np.zeros(d)
    gbar[0] = 1.0
    sd = np.sqrt(np.full(d, 1.0))  # Σ = I, tr Σ = 50
    small = gbar + rng.normal(size=(draws, d)) * sd / np.sqrt(8)
    big = gbar + rng.normal(size=(draws, d)) * sd / np.sqrt(256)
    est = two_batch_estimate(small, big, 8, 256)
    # |G_8|² has mean 1 + 50/8 and sd ≈ √(2·50)/8 per draw: over 4000 draws the estimates
    # are within a few per cent
    assert est["trace"] == pytest.approx(50.0, rel=0.05)
    assert est["grad_norm_sq"] == pytest.approx(1.0, rel=0.1)
    assert est["b_simple"] == pytest.approx(50.0, rel=0.12)


def test_growth_verdict_known_answers():
    assert growth_verdict(1.0, 0.5, 1.5, "B")[0] == "reproduced"
    assert growth_verdict(-1.0, -1.5, -0.5, "B")[0] == "not_reproduced"
    assert growth_verdict(0.1, -0.2, 0.4, "B")[0] == "inconclusive"
    assert growth_verdict(float("nan"), float("nan"), float("nan"), "B")[0] == "inconclusive"


def test_hierarchical_log_ratio_of_a_known_growth():
    rng = np.random.default_rng(1)
    v = np.exp(np.linspace(0, 1, 5))[None, :, None] * (1 + 0.01 * rng.random((3, 5, 4)))
    est, lo, hi = hierarchical_log_ratio(v, n_boot=300, seed=0)
    assert est == pytest.approx(1.0, abs=0.02)
    assert lo <= est <= hi and lo > 0.9
    # a quantity that is negative at the end (ḡᵀHḡ < 0) has no growth
    v[:, -1] = -1.0
    est, lo, hi = hierarchical_log_ratio(v, n_boot=100, seed=0)
    assert np.isnan(est) and np.isnan(lo)
