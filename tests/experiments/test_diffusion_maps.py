"""Experiment 4 (Fjellström & Nyström): the nulls and the verdict rule on data with a known
answer, and the experiment end to end in its tiny profile."""

from __future__ import annotations

import numpy as np
import pytest

from grd.analysis import intrinsic_dimension
from grd.experiments import VERDICTS, registry, run_experiment
from grd.experiments.diffusion_maps import NULLS, dimension_verdict, noisy_circle, null_points

N = 150  # points per set: the size of the default profile's sets


def _dims(points_by_seed, ordered):
    """The estimator on each set and on its three nulls, per seed (the experiment's path)."""
    measured = [float(intrinsic_dimension(p).dimension) for p in points_by_seed]
    nulls = {
        k: [
            float(intrinsic_dimension(null_points(k, p, 100 * s + j, ordered=ordered)).dimension)
            for s, p in enumerate(points_by_seed)
        ]
        for j, k in enumerate(NULLS)
    }
    return measured, nulls


def test_a_noisy_circle_has_dimension_one_and_is_judged_low_dimensional():
    circles = [noisy_circle(N, 12, 0.02, seed) for seed in range(3)]
    measured, nulls = _dims(circles, ordered=False)
    # the estimator on a 1-manifold sampled with ≈ √n neighbours per point: 1 within 0.15
    # (the curvature bias at that scale is ≈ +0.1; sampling noise over 3 seeds ≈ 0.05)
    assert np.allclose(measured, 1.0, atol=0.15), measured
    verdict, reason, lowest = dimension_verdict(measured, nulls)
    assert verdict == "reproduced", reason
    assert lowest > 1.3  # every null of the same covariance is clearly higher


def test_a_random_walk_is_judged_to_have_no_low_dimensional_structure():
    rng = np.random.default_rng(0)
    walks = [np.cumsum(rng.normal(size=(N, 200)), axis=0) for _ in range(3)]
    measured, nulls = _dims(walks, ordered=True)
    verdict, reason, _ = dimension_verdict(measured, nulls)
    assert verdict == "not_reproduced", (measured, nulls, reason)
    # and the estimator's ceiling: a cloud in general position gives ≈ ln n, not its 200 dims
    cloud = rng.normal(size=(N, 200))
    assert float(intrinsic_dimension(cloud).dimension) == pytest.approx(np.log(N), rel=0.25)


def test_the_nulls_match_the_sets_moments():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(60, 30)) * np.linspace(0.1, 3.0, 30)
    total = np.sum(np.var(pts, axis=0, ddof=1))
    for j, k in enumerate(NULLS):
        null = null_points(k, pts, j)
        assert null.shape == pts.shape
        np.testing.assert_allclose(np.sum(np.var(null, axis=0, ddof=1)), total, rtol=0.3)
    # the OU null of an ensemble: covariance equal to the sample covariance in expectation
    many = np.concatenate([null_points("ou_matched", pts, s) for s in range(40)])
    np.testing.assert_allclose(
        np.cov(many.T), np.cov(pts.T), atol=0.25 * np.abs(np.cov(pts.T)).max()
    )


def test_stationary_samples_that_are_not_decorrelated_are_inconclusive():
    verdict, reason, _ = dimension_verdict([1.0, 1.1], {"a": [3.0, 3.1]}, decorrelated=False)
    assert verdict == "inconclusive" and "not decorrelated" in reason


@pytest.mark.slow  # ≈ 30 s of CPU; the default suite runs the same profile end to end
# through the CLI (tests/test_cli.py::tiny_report)
def test_tiny_profile_end_to_end(tmp_path):
    exp = registry()["diffusion_maps"]
    out = run_experiment(exp, "tiny", workdir=tmp_path)
    m = out.metrics
    assert [f.verdict for f in out.findings] and all(f.verdict in VERDICTS for f in out.findings)
    assert {f.our_setting.split(" ")[0] for f in out.findings} == {"48"}
    assert m["seeds"] == [0, 1] and m["n_points"] == 48
    for s in ("ensemble", "stationary", "circle"):
        assert set(m["dimensions"][s]) == {"set", *NULLS}
        assert all(0 < x < 2 * np.log(48) for v in m["dimensions"][s].values() for x in v)
    assert m["verdicts"]["circle"]["verdict"] == "reproduced"  # the positive control
    for p in m["per_seed"]:
        assert p["stride"] == min(p["stride_wanted"], exp.configs["tiny"].max_stride)
    names = [f.name for f in out.section.figures]
    assert names == [
        "diffusion_maps_dimensions",
        "diffusion_maps_embedding",
        "diffusion_maps_bandwidth",
    ]
    text = " ".join(out.section.paragraphs)
    assert "ln n" in text and "ε" not in text  # ε is the metric's; the kernel has a bandwidth
