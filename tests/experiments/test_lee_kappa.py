"""lee_kappa: the tiny profile end to end, and the nulls and both verdict rules on synthetic
data with a known answer."""

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
    directional_stats,
    layer_labels,
    moment_surrogate,
    seed_gaps,
    seed_slopes,
    trend_verdict,
    uniform_null,
)
from grd.report import to_jsonable


@pytest.mark.slow  # ≈ 30 s of CPU; tests/test_cli.py runs every experiment's tiny profile
def test_tiny_end_to_end(tmp_path):
    cfg = EXPERIMENT.configs["tiny"]
    out = EXPERIMENT.run(cfg, Context("lee_kappa", tmp_path, seeds=(0, 1)))
    assert out.section.key == "lee_kappa"
    assert all(f.name.startswith("lee_kappa_") for f in out.section.figures)
    json.dumps(to_jsonable(dict(out.metrics)))
    assert len(out.findings) == 2
    assert {f.verdict for f in out.findings} <= set(VERDICTS)
    kappa = np.asarray(out.metrics["kappa"])  # (layers + whole net, seeds, checkpoints, sets)
    assert kappa.shape == (4, 2, len(cfg.snapshot_steps), cfg.n_sets)
    assert np.all(kappa > 0)
    assert np.asarray(out.metrics["surrogate"]["kappa"]).shape == kappa.shape
    # the correlation finding carries the surrogate's gap as its null
    assert out.findings[0].null == pytest.approx(out.metrics["correlation_pooled"]["gap_null"])
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


def test_gs_identity_holds_for_any_vectors():
    """GS² = (1 + GNS²)/R̄_w² − 1 exactly (population moments), R̄_w = |Σ ĝ_i| / Σ |ĝ_i|."""
    rng = np.random.default_rng(0)
    g = rng.standard_t(3, size=(12, 30)) * rng.gamma(2.0, size=(12, 1)) + 0.4
    s = directional_stats(g)
    r = np.linalg.norm(g, axis=1)
    rbar_w = np.linalg.norm(g.sum(0)) / r.sum()
    assert s["gs"] ** 2 == pytest.approx((1 + s["gns"] ** 2) / rbar_w**2 - 1, rel=1e-4)


def test_moment_surrogate_keeps_sample_mean_and_covariance_exactly():
    rng = np.random.default_rng(1)
    g = rng.standard_t(3, size=(6, 4)) @ np.diag([1.0, 3.0, 0.2, 1.0]) + 0.5
    sur = moment_surrogate(g, rng)
    np.testing.assert_allclose(sur.mean(0), g.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.cov(sur.T), np.cov(g.T), rtol=1e-10, atol=1e-12)
    assert not np.allclose(sur, g)  # the rows themselves are remixed
    a, b = directional_stats(g), directional_stats(sur)
    assert b["gs"] == pytest.approx(a["gs"], rel=1e-5)  # GS is a function of the two moments


def _synthetic(driver_is_kappa, seeds=4, steps=8, sets=6, layers=1, sign=-1.0, seed=0):
    """GS follows one of two series exactly (up to small draw noise); the other is noise.
    ``sign`` = −1: GS falls as the driver rises (the paper's direction for κ)."""
    rng = np.random.default_rng(seed)
    shape = (layers, seeds, steps, sets)
    kappa, gns, gs = np.empty(shape), np.empty(shape), np.empty(shape)
    for s in range(seeds):
        trend = np.linspace(3.0, 1.0, steps) + 0.05 * rng.normal(size=steps)
        other = 1.0 + 0.5 * rng.normal(size=steps)
        k_series, n_series = (trend, other) if driver_is_kappa else (other, trend)
        for li in range(layers):
            kappa[li, s] = k_series[:, None] + 0.02 * rng.normal(size=(steps, sets))
            gns[li, s] = n_series[:, None] + 0.02 * rng.normal(size=(steps, sets))
            gs[li, s] = 3.0 + sign * trend[:, None] + 0.01 * rng.normal(size=(steps, sets))
    return gs, kappa, gns


def test_correlation_verdict_known_answers():
    for layers in (1, 3):
        res = correlation_verdict(*_synthetic(True, layers=layers), n_boot=300)
        assert res["verdict"] == "reproduced"
        assert res["gap"] == pytest.approx(1.0, abs=0.4)  # −r(GS, κ) ≈ 1, |r(GS, GNS)| small
        assert np.all(res["r_kappa"] < -0.95)
        assert correlation_verdict(*_synthetic(False), n_boot=300)["verdict"] == "not_reproduced"
    # the sign is required: GS rising with κ is the opposite of the claim
    wrong = correlation_verdict(*_synthetic(True, sign=+1.0), n_boot=300)
    assert wrong["verdict"] == "not_reproduced" and np.all(wrong["r_kappa"] > 0.95)
    # GS independent of both: −r(GS, κ) − |r(GS, GNS)| ≤ 0 on average, never reproduced
    rng = np.random.default_rng(3)
    noise = [rng.normal(size=(4, 8, 6)) + 5 for _ in range(3)]
    assert correlation_verdict(*noise, n_boot=300)["verdict"] != "reproduced"


def test_split_sample_removes_shared_draw_noise():
    """True GS, κ, GNS constant over training; within a draw set GS and κ share their
    estimation noise (r = −1 across draw sets). The split estimate must not find a
    correlation: with GS and κ from the same draw sets the gap would be ≈ +0.5 here."""
    rng = np.random.default_rng(5)
    verdicts = []
    for rep in range(10):
        e = rng.normal(size=(5, 8, 6))
        gs, kappa = 1 + 0.3 * e, 1 - 0.3 * e
        gns = 0.2 + 0.01 * rng.normal(size=e.shape)
        verdicts.append(correlation_verdict(gs, kappa, gns, n_boot=200, seed=rep)["verdict"])
        unsplit = np.mean(
            [-np.corrcoef(a, b)[0, 1] for a, b in zip(gs.mean(2), kappa.mean(2), strict=True)]
        )
        assert unsplit > 0.99  # what the shared noise gives without the split
    assert verdicts.count("reproduced") == 0


def _gaussian_draws(seed, seeds=5, steps=5, sets=4, n=16, p=300):
    """Structureless Gaussian 'gradients' whose mean shrinks over 'training' (R̄, κ and GS
    all move, and GS tracks κ through GS² = (1 + GNS²)/R̄_w² − 1): measured and surrogate
    (GS, κ, GNS), each (S, T, K)."""
    rng = np.random.default_rng(seed)
    meas, sur = np.empty((3, seeds, steps, sets)), np.empty((3, seeds, steps, sets))
    for s in range(seeds):
        mu = rng.normal(size=p)
        mu /= np.linalg.norm(mu)
        for t, scale in enumerate(np.geomspace(2.0, 0.4, steps)):
            for k in range(sets):
                g = scale * mu + rng.normal(size=(n, p)) / math.sqrt(p)
                for out, x in ((meas, g), (sur, moment_surrogate(g, rng))):
                    st = directional_stats(x)
                    out[:, s, t, k] = st["gs"], st["kappa"], st["gns"]
    return meas, sur


def test_gaussian_null_is_judged_inconclusive():
    """On Gaussian draws (the surrogate is an exact null there) the surrogate-corrected gap is
    centred on 0 and the rule, which needs two 95 % intervals, is rarely decided: ≤ 1 of 6
    replicates (expected ≈ 0.3); the mean over replicates within ±0.15 of 0 (its sd ≈ 0.04)."""
    values, verdicts = [], []
    for rep in range(6):
        meas, sur = _gaussian_draws(rep)
        res = correlation_verdict(*meas, surrogate=sur, n_boot=200, seed=rep)
        values.append(res["value"])
        verdicts.append(res["verdict"])
    assert sum(v != "inconclusive" for v in verdicts) <= 1
    assert abs(np.mean(values)) < 0.15


def test_trend_slope_and_verdicts():
    steps, off = np.array([0, 50, 150, 300, 600, 1000]), 50.0
    rng = np.random.default_rng(4)
    power = (np.asarray(steps) + off) ** -0.5  # log κ = −0.5 log(step + 50) + const
    falling = power[None, :, None] * (1 + 0.05 * rng.random((3, 6, 5)))
    assert seed_slopes(power[None, None, :, None], steps, off) == pytest.approx(-0.5, abs=1e-12)
    res = trend_verdict(falling, steps, off, n_boot=300)
    assert res["verdict"] == "reproduced" and res["value"] == pytest.approx(-0.5, abs=0.02)
    rising = 1 / falling
    assert trend_verdict(rising, steps, off, n_boot=300)["verdict"] == "not_reproduced"
    flat = 1 + 0.05 * rng.random((3, 6, 5))
    assert trend_verdict(flat, steps, off, n_boot=300)["verdict"] == "inconclusive"


def test_trend_seed_is_the_unit_not_the_layer():
    """Three layers that are copies of one trajectory per seed; two seeds fall, one rises.
    Stacking layers as independent units would give 9 'replicates' and a confident fall;
    with the seed as the unit the answer is inconclusive."""
    steps, off = np.array([0, 50, 150, 300, 600, 1000]), 50.0
    x = np.log(steps + off)
    rng = np.random.default_rng(8)
    per_seed = np.stack([np.exp(a * x) for a in (-0.6, -0.5, 0.4)])  # (S, T)
    kappa = np.broadcast_to(per_seed[None, :, :, None], (3, 3, 6, 4)) * (
        1 + 0.02 * rng.random((3, 3, 6, 4))
    )
    res = trend_verdict(kappa, steps, off, n_boot=500)
    assert res["per_seed"] == pytest.approx([-0.6, -0.5, 0.4], abs=0.02)
    assert res["verdict"] == "inconclusive"
    # layers stacked on the seed axis (9 pseudo-replicates): an interval ≈ 3× too narrow
    stacked = trend_verdict(kappa.reshape(1, 9, 6, 4), steps, off, n_boot=500)

    def width(d):
        return d["t_ci"][1] - d["t_ci"][0]

    assert width(stacked) < 0.5 * width(res)


def test_seed_gaps_average_layers_within_a_seed():
    gs, kappa, gns = _synthetic(True, layers=2, seeds=3)
    gap, rk, rn = seed_gaps(gs, kappa, gns)
    assert gap.shape == rk.shape == rn.shape == (3,)
    per_layer = [seed_gaps(gs[li], kappa[li], gns[li])[0] for li in range(2)]
    np.testing.assert_allclose(gap, np.mean(per_layer, axis=0), rtol=1e-12)
