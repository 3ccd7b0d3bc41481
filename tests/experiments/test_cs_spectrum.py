"""cs_spectrum: the tiny profile end to end, and each statistic / verdict rule on spectra
whose answer is known (an exactly low-rank D, isotropic Gaussian gradients, identical and
deliberately changed spectra)."""

import json

import numpy as np
import pytest

from grd.experiments import VERDICTS, Context
from grd.experiments.cs_spectrum import (
    CLEARLY_ABOVE,
    EXPERIMENT,
    exact_spectrum,
    low_rank_verdict,
    remark13_verdict,
    spectrum_stats,
    total_variation,
)
from grd.report import to_jsonable


@pytest.mark.slow  # ≈ 30 s of CPU; tests/test_cli.py runs every experiment's tiny profile
def test_tiny_end_to_end(tmp_path):
    out = EXPERIMENT.run(EXPERIMENT.configs["tiny"], Context("cs_spectrum", tmp_path, seeds=(0,)))
    assert out.section.key == "cs_spectrum"
    assert all(f.name.startswith("cs_spectrum_") for f in out.section.figures)
    assert all(f.png.startswith(b"\x89PNG") for f in out.section.figures)
    json.dumps(to_jsonable(dict(out.metrics)))  # every number JSON-able and finite
    assert len(out.findings) == 4  # (low rank, Remark 13) × (FC, LeNet)
    assert {f.verdict for f in out.findings} <= set(VERDICTS)
    for name in ("fc", "lenet"):
        m = out.metrics[name]
        assert m["n"] > m["d"]  # the design: N > d, so rank D is bounded by d, not N − 1
        for s in m["stats"][0]:
            assert 0 <= s["rank"] <= m["d"]
            assert s["sweep"] == sorted(s["sweep"])  # lower thresholds count more
    # one seed: no across-seed distance, Remark 13 must not be decided
    assert out.findings[1].verdict == "inconclusive"
    # checkpointed: the run wrote its training checkpoints under workdir
    assert list((tmp_path / "checkpoints" / "cs_spectrum").glob("*.npz"))


@pytest.mark.parametrize("n, d", [(40, 15), (15, 40)])
def test_exact_spectrum_matches_dense_eigh(n, d):
    rng = np.random.default_rng(0)
    C = rng.normal(size=(n, d))
    C -= C.mean(axis=0)
    want = np.sort(np.linalg.eigvalsh(C.T @ C / n))[::-1].clip(0)
    got = exact_spectrum(C)
    assert got.shape == (d,)
    np.testing.assert_allclose(got, want, atol=1e-12)  # float64 both ways


def test_stats_of_an_exactly_low_rank_spectrum():
    d = 1000
    lam = np.r_[np.ones(10), np.zeros(d - 10)]
    s = spectrum_stats(lam, d)
    assert s["rank"] == 10 and s["rank_fraction"] == 0.01
    assert s["participation_ratio"] == pytest.approx(10.0)
    assert s["k99"] == 10
    assert s["top_share"]["10"] == pytest.approx(1.0)
    assert s["sweep"] == [10] * len(s["sweep"])


def test_low_rank_verdicts_known_answers():
    # rank 1 % of d in every seed: the paper's claim holds
    assert low_rank_verdict([0.01, 0.011, 0.009])[0] == "reproduced"
    # isotropic Gaussian gradients with N > d are full rank: the claim fails on them
    rng = np.random.default_rng(1)
    fractions = []
    for _ in range(3):
        G = rng.normal(size=(400, 100))
        fractions.append(spectrum_stats(exact_spectrum(G - G.mean(0)), 100)["rank_fraction"])
    assert fractions == [1.0, 1.0, 1.0]
    assert low_rank_verdict(fractions)[0] == "not_reproduced"
    # an interval straddling the cut cannot decide
    assert low_rank_verdict([0.01, 0.2, 0.02])[0] == "inconclusive"
    assert CLEARLY_ABOVE > 0.02


def test_total_variation_known_values():
    assert total_variation([1.0, 0.0], [0.0, 2.0]) == pytest.approx(1.0)
    assert total_variation([3.0, 1.0], [6.0, 2.0]) == pytest.approx(0.0)  # scale-free


def _power_law(alpha, d=200):
    return np.arange(1, d + 1, dtype=float) ** -alpha


def test_remark13_verdicts_known_answers():
    rng = np.random.default_rng(2)
    seeds = [1.0 + 0.05 * rng.normal(size=3) for _ in range(4)]  # exponent per seed, per ckpt
    # unchanged along training: the exponent is fixed per seed, differs between seeds
    along = [total_variation(_power_law(a[0]), _power_law(a[0] + 1e-3)) for a in seeds]
    across = [
        total_variation(_power_law(a[0]), _power_law(b[0]))
        for i, a in enumerate(seeds)
        for b in seeds[i + 1 :]
    ]
    assert remark13_verdict(along, across, n_boot=500)[0] == "reproduced"
    # the exponent doubles along training, seeds agree to 1e-3: changed
    along = [total_variation(_power_law(1.0), _power_law(2.0)) + 0.01 * k for k in range(4)]
    across = [total_variation(_power_law(1.0), _power_law(1.0 + 1e-3 * k)) for k in range(1, 5)]
    assert remark13_verdict(along, across, n_boot=500)[0] == "not_reproduced"
    # no across-seed distance (one seed): undecided
    assert remark13_verdict([0.1], [], n_boot=10)[0] == "inconclusive"
