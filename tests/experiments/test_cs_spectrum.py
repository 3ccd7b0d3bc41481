"""cs_spectrum: the tiny profile end to end, and each statistic / verdict rule on spectra
whose answer is known (an exactly low-rank D, isotropic Gaussian gradients, power-law spectra
that are unchanged, changed, or indistinguishable from initialisation along training)."""

import json

import numpy as np
import pytest

from grd.experiments import VERDICTS, Context
from grd.experiments.cs_spectrum import (
    CLEARLY_ABOVE,
    EPS_FLOAT32,
    EXPERIMENT,
    REMARK13_CUT,
    TRAIN_ERROR_LIMIT,
    exact_eig,
    exact_spectrum,
    log_spectrum_distance,
    low_rank_verdict,
    remark13_verdict,
    spectrum_stats,
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
        errors = m["train_error"][0]
        assert len(errors) == len(m["snapshot_steps"]) and all(0 <= e <= 1 for e in errors)
        assert errors[-1] < errors[0]  # training trains
        for s in m["stats"][0]:
            assert 0 <= s["rank"] <= m["d"]
            assert s["sweep"] == sorted(s["sweep"])  # lower thresholds count more
            assert s["rank_eps64_fraction"] >= s["rank_fraction"] >= s["rank_paper_d_fraction"]
    # one seed: no across-seed distance, Remark 13 must not be decided
    assert out.findings[1].verdict == "inconclusive"
    # the null of the rank finding is the same net at initialisation, not a constant
    assert out.findings[0].null == pytest.approx(out.metrics["fc"]["stats"][0][0]["rank_fraction"])
    # checkpointed: the run wrote its training checkpoints under workdir
    assert list((tmp_path / "checkpoints" / "cs_spectrum").glob("*.npz"))


@pytest.mark.parametrize("n, d", [(40, 15), (15, 40)])
def test_exact_spectrum_and_vectors_match_dense_eigh(n, d):
    rng = np.random.default_rng(0)
    C = rng.normal(size=(n, d))
    C -= C.mean(axis=0)
    w, V = np.linalg.eigh(C.T @ C / n)
    want = w[::-1].clip(0)
    got = exact_spectrum(C)
    assert got.shape == (d,)
    np.testing.assert_allclose(got, want, atol=1e-12)  # float64 both ways
    lam, U = exact_eig(C, 3)
    np.testing.assert_allclose(lam, got, atol=1e-12)
    assert U.shape == (3, d)
    # the same top eigenvectors up to sign (distinct eigenvalues of a random matrix)
    cos = np.abs(np.sum(U * V[:, ::-1][:, :3].T, axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-8)


def test_stats_of_an_exactly_low_rank_spectrum():
    d = 1000
    lam = np.r_[np.ones(10), np.zeros(d - 10)]
    s = spectrum_stats(lam, d, d_paper=13338)
    assert s["rank"] == 10 and s["rank_fraction"] == 0.01
    assert s["rank_eps64_fraction"] == s["rank_paper_d_fraction"] == 0.01
    assert s["participation_ratio"] == pytest.approx(10.0)
    assert s["k99"] == 10
    assert s["top_share"]["10"] == pytest.approx(1.0)
    assert s["sweep"] == [10] * len(s["sweep"])


def test_threshold_readings_count_what_they_should():
    d = 100
    # one eigenvalue 1, then one just above each threshold: d·eps64, d·eps32, d_paper·eps32
    t64, t32, tp = d * np.finfo(np.float64).eps, d * EPS_FLOAT32, 1000 * EPS_FLOAT32
    lam = np.r_[1.0, 1.5 * tp, 1.5 * t32, 1.5 * t64, np.zeros(d - 4)]
    s = spectrum_stats(lam, d, d_paper=1000)
    assert s["rank"] == 3 and s["rank_eps64_fraction"] == 0.04
    assert s["rank_paper_d_fraction"] == 0.02


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
    # the trained-regime gate: the same ranks are undecided for a net that has not fitted
    trained, untrained = [0.005] * 3, [2 * TRAIN_ERROR_LIMIT] * 3
    assert low_rank_verdict([0.01, 0.011, 0.009], trained)[0] == "reproduced"
    assert low_rank_verdict([0.01, 0.011, 0.009], untrained)[0] == "inconclusive"
    assert low_rank_verdict(fractions, untrained)[0] == "inconclusive"
    assert low_rank_verdict(fractions, trained)[0] == "not_reproduced"


def test_log_spectrum_distance_known_values():
    a = np.array([1.0, 1.0])
    # unit-trace (0.5, 0.5) against (10/11, 1/11): |log10 0.55| and log10 5.5 sum to 1
    assert log_spectrum_distance(a, [10.0, 1.0]) == pytest.approx(0.5)
    assert log_spectrum_distance(a, a) == 0.0
    lam = np.arange(1, 101, dtype=float) ** -1.5
    assert log_spectrum_distance(lam, 7.0 * lam) == pytest.approx(0.0, abs=1e-12)  # scale-free
    # a flat spectrum against one decaying 10× per 20 indices: far apart (tenths of an order)
    assert log_spectrum_distance(np.ones(100), 10.0 ** (-np.arange(100) / 20)) > 0.3


def _spectra(rng, alphas, noise=0.05, d=200):
    """Power-law spectra i^-α with multiplicative log-normal noise per eigenvalue."""
    i = np.arange(1, d + 1, dtype=float)
    return [np.sort(i**-a * np.exp(noise * rng.normal(size=d)))[::-1] for a in alphas]


def _remark13_inputs(rng, n_seeds, init_alpha, drift, seed_sd):
    """Distances for ``n_seeds`` runs: per seed an exponent α_s = 1 + seed_sd·z, checkpoints
    at α_s + drift·(0, ½, 1), initialisation at ``init_alpha`` (or α_s if None)."""
    spec = []
    for _ in range(n_seeds):
        a = 1.0 + seed_sd * rng.normal()
        init = a if init_alpha is None else init_alpha
        spec.append(_spectra(rng, [init, a, a + drift / 2, a + drift]))
    trained, pairs = [1, 2, 3], [(1, 2), (1, 3), (2, 3)]
    along = [[log_spectrum_distance(sp[i], sp[j]) for i, j in pairs] for sp in spec]
    across = np.zeros((3, n_seeds, n_seeds))
    for k, i in enumerate(trained):
        for a in range(n_seeds):
            for b in range(a + 1, n_seeds):
                across[k, a, b] = across[k, b, a] = log_spectrum_distance(spec[a][i], spec[b][i])
    control = [log_spectrum_distance(sp[0], sp[1]) for sp in spec]
    return along, across, control


@pytest.mark.parametrize(
    "init_alpha, drift, seed_sd, want",
    [
        (2.0, 0.0, 0.1, "reproduced"),  # unchanged along training, init very different
        (2.0, 1.0, 0.01, "not_reproduced"),  # the exponent doubles along training
        (None, 0.0, 0.1, "inconclusive"),  # init indistinguishable: the test has no power
    ],
)
def test_remark13_verdicts_known_answers(init_alpha, drift, seed_sd, want):
    # stated rate: the known answer in ≥ 9 of 10 independent synthetic data sets (5 seeds)
    rng = np.random.default_rng(3)
    got = [
        remark13_verdict(
            *_remark13_inputs(rng, 5, init_alpha, drift, seed_sd), n_boot=300, seed=k
        ).verdict
        for k in range(10)
    ]
    assert got.count(want) >= 9, got


def test_remark13_undecided_without_seeds_or_training():
    rng = np.random.default_rng(4)
    along, across, control = _remark13_inputs(rng, 1, 2.0, 0.0, 0.1)
    assert remark13_verdict(along, across, control, n_boot=10).verdict == "inconclusive"
    along, across, control = _remark13_inputs(rng, 5, 2.0, 0.0, 0.1)
    ok = remark13_verdict(along, across, control, n_boot=300)
    assert ok.verdict == "reproduced" and ok.hi <= REMARK13_CUT < ok.control_interval[0]
    untrained = remark13_verdict(along, across, control, train_error=[0.5] * 5, n_boot=300)
    assert untrained.verdict == "inconclusive" and "trained regime" in untrained.reason
