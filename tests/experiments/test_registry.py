"""The registry of grd reproduce's experiments and the contract every module keeps."""

from __future__ import annotations

import dataclasses

import pytest

from grd import report
from grd._reproduce import FINDINGS_HEADER, findings_section, make_plan
from grd.experiments import (
    _MODULES,
    PROFILES,
    DivergenceError,
    Experiment,
    Finding,
    Outcome,
    check_divergence,
    check_outcome,
    registry,
)


def test_registry_names_are_the_module_names_and_every_profile_validates():
    reg = registry()
    assert tuple(reg) == _MODULES and len(set(reg)) == len(reg)
    for name, exp in reg.items():
        assert exp.name == name and exp.title and exp.sources
        for profile in PROFILES:
            cfg = exp.configs[profile]
            assert dataclasses.is_dataclass(cfg)
            validate = getattr(cfg, "validate", None)
            if validate is not None:
                validate()


def _finding(**kw):
    base = dict(
        claim="c",
        source="s",
        paper_setting="p",
        our_setting="o",
        measured=1.0,
        uncertainty=0.1,
        null=2.0,
        verdict="not_reproduced",
        reason="r",
    )
    return Finding(**{**base, **kw})


def test_check_outcome_rejects_what_breaks_the_report():
    exp = registry()["diffusion_maps"]
    good = Outcome(report.Section("diffusion_maps", "t"), {"x": [1.0, 2.0]}, [_finding()])
    assert check_outcome(exp, good) is good
    with pytest.raises(ValueError, match="section's key"):
        check_outcome(exp, Outcome(report.Section("other", "t"), {}))
    fig = report.Figure("spectrum", "c", b"png")
    with pytest.raises(ValueError, match="figure names"):
        check_outcome(exp, Outcome(report.Section("diffusion_maps", "t", figures=[fig]), {}))
    with pytest.raises(ValueError, match="must be finite"):
        check_outcome(exp, Outcome(report.Section("diffusion_maps", "t"), {"x": float("inf")}))
    with pytest.raises(TypeError, match="Finding"):
        check_outcome(exp, Outcome(report.Section("diffusion_maps", "t"), {}, [{"claim": 1}]))
    with pytest.raises(ValueError, match="verdict"):
        _finding(verdict="maybe")


def test_make_plan_checks_names_seeds_and_overrides_before_anything_runs():
    plan = make_plan("tiny", experiments=["diffusion_maps"], overrides=["diffusion_maps.lr=0.05"])
    assert plan.configs["diffusion_maps"].lr == 0.05 and plan.seeds == (0, 1)
    assert make_plan("default").seeds == (0, 1, 2)
    one = ["diffusion_maps"]
    same = make_plan("tiny", experiments=one, overrides=["diffusion_maps.lr=0.05"])
    assert plan.key() == same.key()
    assert plan.key() != make_plan("tiny", experiments=one).key()
    listed = ", ".join(registry())
    with pytest.raises(ValueError, match=f"unknown experiment spectrum; choose from {listed}"):
        make_plan("tiny", experiments=["spectrum"])
    with pytest.raises(ValueError, match="expects an integer"):
        make_plan("tiny", overrides=["diffusion_maps.n_points=1.5"])
    with pytest.raises(ValueError, match="distinct"):
        make_plan("tiny", seeds=[1, 1])
    with pytest.raises(ValueError, match="profile"):
        make_plan("huge")


def test_check_divergence_names_the_stage_step_and_fix():
    check_divergence([1.0, 50.0], 1.0, stage="SGD", step=3)  # fine: ≤ 100 × initial
    with pytest.raises(DivergenceError) as info:
        check_divergence([1.0, float("nan")], 1.0, stage="SGD ensemble", step=7, lr=0.5)
    e = info.value
    assert (e.stage, e.step, e.lr) == ("SGD ensemble", 7, 0.5)
    e.experiment = "diffusion_maps"
    assert str(e) == (
        "diffusion_maps: SGD ensemble diverged at step 7: loss nan (is not finite); try a "
        "smaller learning rate (now 0.5; e.g. --set diffusion_maps.lr=0.05)."
    )
    with pytest.raises(DivergenceError, match=r"> 100 × the initial 2"):
        check_divergence(201.0, 2.0, stage="SGD", step=1)


def test_findings_section_has_one_row_per_finding_in_the_contract_columns():
    fs = [("a", _finding()), ("b", _finding(verdict="reproduced", null=None, uncertainty=None))]
    sec = findings_section(fs, {"a": "A", "b": "B"})
    (table,) = sec.tables
    assert sec.key == "findings" and tuple(table.header) == FINDINGS_HEADER
    assert [r[6] for r in table.rows] == ["not reproduced", "reproduced"]
    assert table.rows[0][4] == "1.00 ± 0.10" and table.rows[1][5] == "—"
    assert "1 reproduced, 1 not reproduced, 0 inconclusive" in sec.paragraphs[0]
    assert isinstance(registry()["diffusion_maps"], Experiment)
