"""The ``grd`` command line end to end: the report, its rendering, bad arguments, interrupts."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_env, run_cli

from grd import _reproduce as rp, report
from grd.cli import main

CHROMIUM = Path("/usr/bin/chromium")
TINY = ["reproduce", "--tiny", "--quiet"]


_run_cli = run_cli


def _numbers(obj, path="$"):
    """Every number in a JSON tree, with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def _rendered_image_status(html_path: Path, tmp_path: Path):
    """Open ``html_path`` in headless Chromium; return (body figure count, [img data-loaded])."""
    profile = tmp_path / f"chromium-profile-{html_path.stem}"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    body = re.search(r'<body[^>]*data-figures-loaded="(\d+)/(\d+)"', dom)
    imgs = re.findall(r"<img\b[^>]*>", dom)
    status = [re.search(r'data-loaded="(\w+)"', tag) for tag in imgs]
    return body, [s.group(1) if s else None for s in status]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "report"
    start = time.perf_counter()
    proc = _run_cli(*TINY, "--keep-trajectory", "--out", str(out))
    elapsed = time.perf_counter() - start
    return out, proc, elapsed


def test_reproduce_keeps_the_recorded_trajectories(tiny_report):
    from grd.analysis import load_trajectory

    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    train = load_trajectory(out / "trajectory" / "training")
    assert len(train) == cfg["steps"] // cfg["record_every"] + 1
    assert list(train.steps) == list(range(0, cfg["steps"] + 1, cfg["record_every"]))
    cont = load_trajectory(out / "trajectory" / "continuation")
    assert len(cont) == cfg["cycle_steps"] + 1
    # the continuation starts where training ended
    assert (cont[0] == train[-1]).all()


def test_reproduce_tiny_writes_every_file(tiny_report):
    out, proc, elapsed = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in ("report.html", "report.md", "metrics.json"):  # trajectories checked below
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"figures/{png.name}" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.count("<img ") == len(pngs)
    assert html.count("data:image/png;base64,") == len(pngs)
    # self-contained: no file or network reference other than data URIs and anchors
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    # no partial directory left beside the report
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    # (no timing assertion: the run took 309 s of wall time on 2 cores under a load of 13)
    del elapsed


def test_reproduce_tiny_metrics_are_complete_and_finite(tiny_report):
    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "config",
        "versions",
        "devices",
        "x64",
        "runtime_seconds",
        "sections",
        "training",
        *rp.SECTIONS,
    ):
        assert key in metrics, key
    assert metrics["sections"] == ["training", *rp.SECTIONS]
    numbers = list(_numbers(metrics))
    assert len(numbers) > 100
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]
    train = metrics["training"]
    assert train["final_train_loss"] < train["history"]["train_loss"][0]
    spec = metrics["spectrum"]["checkpoints"]
    n = metrics["config"]["n_train"]
    for ck in spec:
        lam = ck["eigenvalues"]
        assert lam == sorted(lam, reverse=True)
        assert 1 <= ck["rank_relative"] <= min(n - 1, train["d"])
        assert ck["trace_D"] == pytest.approx(ck["trace_from_eigenvalues"], rel=1e-3)
        assert ck["noise_scale_B_simple"] == pytest.approx(
            ck["trace_D"] / ck["mean_grad_sq_norm"], rel=1e-6
        )
    # every table number in the Markdown report comes from metrics.json
    md = (out / "report.md").read_text()
    assert f"{train['d']}" in md


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium absent (apt-get install -y chromium; .ci/run installs it)",
)
def test_report_renders_every_figure_in_chromium(tiny_report, tmp_path):
    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_png = len(list((out / "figures").glob("*.png")))
    body, status = _rendered_image_status(out / "report.html", tmp_path)
    assert body is not None, "the page script did not run (no data-figures-loaded on <body>)"
    assert (int(body.group(1)), int(body.group(2))) == (n_png, n_png)
    assert status == ["yes"] * n_png


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent")
def test_chromium_check_detects_a_broken_figure(tmp_path):
    """Negative control: a figure that does not decode is reported as not loaded."""
    good = report.Figure("good", "a real PNG", _tiny_png())
    broken = report.Figure("broken", "not a PNG", b"this is not an image")
    page = tmp_path / "page.html"
    page.write_text(report.render_html("t", [report.Section("s", "S", figures=[good, broken])]))
    body, status = _rendered_image_status(page, tmp_path)
    assert body is not None and (body.group(1), body.group(2)) == ("1", "2")
    assert status == ["yes", "no"]


def _tiny_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    return report.figure_png(fig, dpi=30)


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["reproduce", "--sections", "spectrum,nonsense"], "unknown section"),
        (["reproduce", "--eps", "-0.5"], "--eps"),
        (["reproduce", "--eps", "0.1,0"], "--eps"),
        (["reproduce", "--width", "0"], "--width"),
        (["reproduce", "--checkpoints", "1.5"], "--checkpoints"),
        (["reproduce", "--batch-size", "64", "--n-train", "32"], "batch_size"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, fragment, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err and "Traceback" not in err


def test_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code = main([*TINY, "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a directory" in err
    assert target.read_text() == "keep me"


def test_non_empty_output_refused_without_force(tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    proc = _run_cli(*TINY, "--out", str(target))  # stdin is not a terminal here
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_bad_argument_in_a_real_process_has_no_traceback():
    proc = _run_cli("reproduce", "--sections", "bogus")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "bogus" in proc.stderr


def test_help_explains_every_option():
    proc = _run_cli("reproduce", "--help")
    assert proc.returncode == 0
    for opt in (
        "--out",
        "--force",
        "--sections",
        "--width",
        "--n-train",
        "--eps",
        "--seed",
        "--float64",
        "--tiny",
    ):
        assert opt in proc.stdout
    for section in rp.SECTIONS:
        assert section in proc.stdout
    top = _run_cli("--help")
    assert top.returncode == 0
    for cmd in ("reproduce", "bench", "info"):
        assert cmd in top.stdout


def test_info_prints_versions_devices_and_x64():
    proc = _run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for name in ("grd", "jax", "jaxlib", "optax", "diffrax", "flax", "devices", "x64"):
        assert re.search(rf"^{name}\s+\S", proc.stdout, re.M), name


def test_bench_runs_scripts_and_passes_quick(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_a.py").write_text(
        "import sys\nquick = '--quick' in sys.argv\nprint(f'| a | quick={quick} |')\n"
    )
    (bench / "bench_b.py").write_text("print('| b | 1.0 |')\n")
    (bench / "bench_fail.py").write_text("import sys\nsys.exit('boom')\n")
    proc = _run_cli("bench", "--dir", str(bench), "-k", "bench_a")
    assert proc.returncode == 0, proc.stderr
    assert "| a | quick=True |" in proc.stdout
    proc = _run_cli("bench", "--dir", str(bench))
    assert "| b | 1.0 |" in proc.stdout
    assert proc.returncode == 1 and "bench_fail.py failed" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ interrupted runs


def _partials(parent: Path):
    return [p for p in parent.iterdir() if ".partial-" in p.name]


def test_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt in the middle of writing the report: no directory appears."""
    real_write = report.write_report

    written_dirs = []

    def write_then_interrupt(directory, *a, **kw):
        # without --keep-trajectory the stores are gone before the report is written
        assert not (Path(directory) / "trajectory").exists()
        real_write(directory, *a, **kw)
        written_dirs.append(Path(directory))
        assert (Path(directory) / "report.html").exists()  # a full report was in the temp dir
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", write_then_interrupt)
    out = tmp_path / "report"
    code = main([*TINY, "--out", str(out), "--sections", "spectrum"])
    assert code == 130
    assert written_dirs  # the report was fully written before the interrupt
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert not _partials(tmp_path)


def test_interrupted_overwrite_keeps_previous_report(tmp_path, monkeypatch):
    from grd._outdir import write_marker

    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": 1}')
    write_marker(out, ["metrics.json"])  # a report grd wrote: --force may replace it

    def fail(run):
        raise KeyboardInterrupt

    monkeypatch.setitem(rp._SECTION_FUNCS, "spectrum", fail)
    code = main([*TINY, "--out", str(out), "--force"])
    assert code == 130
    assert json.loads((out / "metrics.json").read_text()) == {"previous": 1}
    assert sorted(p.name for p in out.iterdir()) == [".grd-report", "metrics.json"]
    assert not _partials(tmp_path)


def test_killed_run_leaves_no_complete_looking_directory(tmp_path):
    """SIGKILL during training (no cleanup possible): the target never appears."""
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grd.cli",
            "reproduce",
            "--tiny",
            "--steps",
            "100000",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        start_new_session=True,
    )
    try:
        buf = b""
        deadline = time.monotonic() + 300
        while b"SGD training" not in buf and time.monotonic() < deadline:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        assert b"SGD training" in buf, buf.decode(errors="replace")[-2000:]
        assert _partials(tmp_path), "the run should be writing into a hidden partial directory"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = _partials(tmp_path)
    assert all(p.name.startswith(".") for p in leftovers)
    for p in leftovers:
        shutil.rmtree(p)
