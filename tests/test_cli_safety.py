"""``grd reproduce`` never loses the user's files, checks before computing, stops on divergence
and resumes after a kill (issue 15).

Cost: three ``--tiny --experiments diffusion_maps`` runs in subprocesses (one killed half way),
one diverging run, the rest in-process and refused before any computation.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, run_cli

from grd import _outdir
from grd._reproduce import _runner
from grd.cli import main

SCRIPT = Path(__file__).with_name("_reproduce_kill_script.py")
TINY = ["reproduce", "--tiny", "--quiet", "--experiments", "diffusion_maps"]
#: The checkpointed loop the kill tests interrupt: the thinned stationary run of seed 0
#: (tiny profile: 48 samples, a checkpoint every 2 → 24 checkpoints).
STAGE, STAGE_SAVES = "stationary_seed0", 24


_cli = run_cli


def _killed_cli(stage, kill_after, *args, timeout=600):
    return subprocess.run(
        [sys.executable, str(SCRIPT), stage, str(kill_after), "--", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )


def _hidden(parent: Path):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_compute(monkeypatch):
    """Fails the test if an experiment starts."""
    started = []

    def run_all(*args, **kwargs):
        started.append(True)
        raise AssertionError("an experiment started")

    monkeypatch.setattr(_runner, "_run_all", run_all)
    return started


def _refused(argv, capsys, started, fragment):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and fragment in err, err
    assert not started  # refused before any training
    return err


# ------------------------------------------------------------------ refused before compute


def test_force_never_deletes_a_directory_grd_did_not_write(tmp_path, capsys, no_compute):
    target = tmp_path / "project"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    target.chmod(0o755)
    err = _refused([*TINY, "--out", str(target), "--force"], capsys, no_compute, "not written")
    assert "thesis.tex" in err and ".grd-report" in err
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"]
    assert (target / "thesis.tex").read_text() == "years of work"
    assert _mode(target) == 0o755
    assert _hidden(tmp_path) == []  # no work directory was created


def test_force_never_deletes_a_file_added_to_a_report(tmp_path, capsys, no_compute):
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    for name in ("metrics.json", "report.html", "figures/a.png"):
        (report / name).write_text("grd")
    _outdir.write_marker(report, ["metrics.json", "report.html", "figures/a.png"])
    (report / "figures" / "my-notes.txt").write_text("mine")
    err = _refused([*TINY, "--out", str(report), "--force"], capsys, no_compute, "did not write")
    assert "figures/my-notes.txt" in err
    assert (report / "figures" / "my-notes.txt").read_text() == "mine"
    assert (report / "metrics.json").read_text() == "grd"


def test_a_report_is_not_replaced_without_force(tmp_path, capsys, no_compute):
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    _outdir.write_marker(report, ["metrics.json"], command=["grd", "reproduce"])
    # stdin is not a terminal under pytest: no prompt, a refusal naming --force
    _refused([*TINY, "--out", str(report)], capsys, no_compute, "--force")
    plan = _outdir.check_output(report, overwrite=True)
    line = plan.describe()  # what the interactive prompt shows
    assert "metrics.json" in line and "`grd reproduce`" in line and "1 files" in line


@pytest.mark.parametrize("where", [".", "..", "home", ""])
def test_current_directory_its_parents_and_home_are_refused(
    where, tmp_path, monkeypatch, capsys, no_compute
):
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    out = {"home": "~", ".": ".", "..": "..", "": ""}[where]
    _refused([*TINY, "--out", out, "--force"], capsys, no_compute, "--out")
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.txt"]
    assert list(home.iterdir()) == [] and _hidden(cwd.parent) == []


@pytest.mark.parametrize("path", ["/proc/grd-report", "/sys/grd-report", "/dev/null"])
def test_special_paths_are_refused(path, capsys, no_compute):
    _refused([*TINY, "--out", path, "--force"], capsys, no_compute, path)
    assert not Path(path).is_dir()


def test_unwritable_parent_is_refused(tmp_path, capsys, no_compute):
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: the probe directory would be created")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _refused([*TINY, "--out", str(parent / "r")], capsys, no_compute, "cannot create")
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "diffusion_maps.n_train=100000"], "n_train must be at most 1438"),
        (["--seeds", "4294967296"], "--seeds"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "1,1"], "distinct"),
        (["--set", "diffusion_maps.n_points=8"], "n_points must be at least 16"),
        (["--set", "diffusion_maps.lr=nan"], "finite"),
        (["--set", "diffusion_maps.bogus=1"], "no field 'bogus'"),
        (["--set", "nosuch.lr=1"], "unknown experiment 'nosuch'"),
        (["--set", "diffusion_maps.lr"], "EXPERIMENT.FIELD=VALUE"),
        (["--width", "8"], "--width was removed"),
    ],
)
def test_sizes_beyond_the_data_and_bad_seeds_are_refused(
    args, fragment, tmp_path, capsys, no_compute
):
    _refused([*TINY, *args, "--out", str(tmp_path / "r")], capsys, no_compute, fragment)
    assert list(tmp_path.iterdir()) == []


def test_refusal_in_a_real_process_is_one_line_before_compute(tmp_path):
    """``--out .`` in a subprocess: exit 2, one line, no traceback, nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "grd.cli", *TINY, "--out", "."],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "current directory" in proc.stderr
    assert "Traceback" not in proc.stderr and "SGD" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ divergence


def test_divergence_exit_3_and_no_report(tmp_path):
    out = tmp_path / "report"
    proc = _cli(*TINY, "--set", "diffusion_maps.lr=1e9", "--out", str(out))
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "diffusion_maps: SGD ensemble diverged at step 20" in lines[0], lines[0]
    assert "--set diffusion_maps.lr=" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and _hidden(tmp_path) == []  # nothing passes for a report


def test_debug_shows_the_traceback(tmp_path, capsys):
    # lr = 1e9 diverges in the first chunk of 20 steps: a real failure during the run,
    # in-process (the test above shows the same run without --debug: one line, no traceback)
    argv = [*TINY, "--set", "diffusion_maps.lr=1e9", "--out", str(tmp_path / "r")]
    assert main([*argv, "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DivergenceError" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("grd reproduce: diffusion_maps: SGD ensemble diverged at step 20")
    assert not (tmp_path / "r").exists() and _hidden(tmp_path) == []


# ------------------------------------------------------------------ replace, kill, resume


def _metrics(directory: Path) -> dict:
    """metrics.json less what differs between two identical runs (times, date, load, --out)."""
    m = json.loads((directory / "metrics.json").read_text())
    for key in ("runtime_seconds", "experiment_runtime_seconds", "date", "machine", "command"):
        m.pop(key)
    return m


def test_replace_keeps_permissions_and_a_killed_run_resumes_to_the_same_metrics(tmp_path):
    # 1. an uninterrupted run into an existing empty directory with unusual permissions
    ref = tmp_path / "ref"
    ref.mkdir()
    ref.chmod(0o751)
    proc = _cli(*TINY, "--out", str(ref))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _mode(ref) == 0o751
    marker = _outdir.read_marker(ref)
    assert marker is not None and "metrics.json" in marker["files"]
    files = sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file())
    assert files == sorted([*marker["files"], ".grd-report"])

    # 2. replacing a report (--force) is killed half way through training: the previous
    #    report is untouched and nothing passes for a new one
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": 1}')
    _outdir.write_marker(out, ["metrics.json"])
    out.chmod(0o705)
    killed = _killed_cli(STAGE, 10, *TINY, "--force", "--out", str(out))
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no clean-up ran
    assert json.loads((out / "metrics.json").read_text()) == {"previous": 1}
    (work,) = [tmp_path / n for n in _hidden(tmp_path) if n.startswith(".out.partial-")]
    ck = work / "work" / "diffusion_maps" / "checkpoints" / "diffusion_maps" / f"{STAGE}.npz"
    assert ck.is_file()
    assert _outdir.read_marker(work) is None  # a work directory has no completion marker

    # 3. rerun with --resume: it continues from the 10th of the 24 checkpoints of the
    #    stationary run (so it writes only the remaining 14) and replaces the previous report
    resumed = _killed_cli(STAGE, 0, *TINY, "--force", "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted run" in resumed.stderr
    assert f"saves={STAGE_SAVES - 10}" in resumed.stdout
    assert _mode(out) == 0o705
    assert _metrics(out) == _metrics(ref)  # bit for bit: JSON floats round-trip exactly
    assert _hidden(tmp_path) == []  # the work directory became the report
    assert _outdir.read_marker(out)["files"] == marker["files"]


@pytest.mark.slow
def test_run_killed_in_the_ensemble_resumes_to_the_same_metrics(tmp_path):
    """Another checkpointed loop: the vmapped SGD ensemble of seed 1 (10 chunks), after
    seed 0 finished (its loops are then loaded from their final checkpoints)."""
    args = TINY
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "out"
    killed = _killed_cli("ensemble_seed1", 4, *args, "--out", str(out))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not out.exists()
    resumed = _killed_cli("ensemble_seed1", 0, *args, "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "saves=6" in resumed.stdout  # chunks 5 to 10 only
    assert _metrics(out) == _metrics(tmp_path / "ref")
    assert _hidden(tmp_path) == []


def test_a_forged_marker_cannot_reach_outside_the_directory(tmp_path, capsys, no_compute):
    """A marker listing ``../`` paths is no marker: the directory is refused, nothing deleted."""
    outside = tmp_path / "thesis.tex"
    outside.write_text("years of work")
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    _outdir.write_marker(report, ["metrics.json", "../thesis.tex"])
    assert _outdir.read_marker(report) is None
    _refused([*TINY, "--out", str(report), "--force"], capsys, no_compute, "not written")
    assert outside.read_text() == "years of work"
    # and deletion only ever touches entries found inside the directory
    assert _outdir._remove_listed(report, ["metrics.json", "../thesis.tex"]) == []
    assert outside.read_text() == "years of work" and not report.exists()


def test_the_terminal_prompt_names_what_would_be_deleted(tmp_path):
    """On a terminal (a pty here), without --force: the prompt names the report and its files;
    answering no deletes nothing and computes nothing."""
    import pty

    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    for name in ("metrics.json", "report.html", "figures/diffusion_maps_embedding.png"):
        (report / name).write_text("grd")
    _outdir.write_marker(
        report,
        ["metrics.json", "report.html", "figures/diffusion_maps_embedding.png"],
        command=["grd", "x"],
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "grd.cli", *TINY, "--out", str(report)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=cli_env(),
    )
    os.close(slave)
    os.write(master, b"n\n")
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=600)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text
    assert "holds a grd report" in text and "`grd x`" in text and "3 files" in text, text
    assert "figures/" in text and "metrics.json" in text and "[y/N]" in text, text
    assert "not replacing it" in text and "SGD" not in text
    assert sorted(p.relative_to(report).as_posix() for p in report.rglob("*")) == [
        ".grd-report",
        "figures",
        "figures/diffusion_maps_embedding.png",
        "metrics.json",
        "report.html",
    ]
    assert _hidden(tmp_path) == []
