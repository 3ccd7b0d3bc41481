"""The ``grd`` command line end to end: the report, its rendering, bad arguments, interrupts."""

from __future__ import annotations

import html
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

from grd import report
from grd._reproduce import FINDINGS_HEADER, _runner
from grd.cli import main
from grd.experiments import VERDICTS

CHROMIUM = Path("/usr/bin/chromium")
#: One experiment pinned, so these tests do not grow with the registry.
# every registered experiment end to end at its tiny size, once (≈ 150–250 s of CPU on 2 cores)
TINY = ["reproduce", "--tiny", "--quiet"]
# one quick experiment, for the tests of the run's plumbing (refusals, interrupts, kills)
ONE = [*TINY, "--experiments", "diffusion_maps"]


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
    return body, [s.group(1) if s else None for s in status], dom


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "report"
    start = time.perf_counter()
    proc = _run_cli(*TINY, "--out", str(out))
    elapsed = time.perf_counter() - start
    return out, proc, elapsed


def test_findings_in_metrics_follow_the_schema(tiny_report):
    """metrics.json's top-level ``findings``: the keys of the contract, a verdict from the
    three, numbers or null where numbers belong, the experiment that found it."""
    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    findings = metrics["findings"]
    assert isinstance(findings, list) and findings
    for f in findings:
        for key in ("claim", "source", "measured", "uncertainty", "null", "verdict"):
            assert key in f, key
        assert f["verdict"] in VERDICTS
        assert isinstance(f["claim"], str) and f["claim"].strip()
        assert isinstance(f["source"], str) and f["source"].strip()
        assert isinstance(f["reason"], str) and f["reason"].strip()
        assert isinstance(f["measured"], float) and math.isfinite(f["measured"])
        for key in ("uncertainty", "null"):
            assert f[key] is None or (isinstance(f[key], float) and math.isfinite(f[key]))
        assert f["experiment"] in metrics["experiments"]
    assert metrics["profile"] == "tiny" and metrics["seeds"] == [0, 1]
    assert set(metrics["experiment_runtime_seconds"]) == set(metrics["experiments"])
    assert metrics["runtime_seconds"] == pytest.approx(
        sum(metrics["experiment_runtime_seconds"].values())
    )


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
    # the report opens with the Findings table, one row per finding
    md = (out / "report.md").read_text()
    assert md.index("## Findings") < md.index("## Diffusion maps")
    n = len(json.loads((out / "metrics.json").read_text())["findings"])
    assert html.count("<tr>") >= n + 1
    # no partial directory left beside the report
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    # (no timing assertion: the run took 309 s of wall time on 2 cores under a load of 13)
    del elapsed


def test_reproduce_tiny_metrics_are_complete_and_finite(tiny_report):
    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "command",
        "profile",
        "seeds",
        "experiments_run",
        "findings",
        "experiments",
        "configs",
        "runtime_seconds",
        "experiment_runtime_seconds",
        "versions",
        "machine",
        "devices",
        "x64",
        "date",
    ):
        assert key in metrics, key
    names = list(_runner.registry())
    assert metrics["experiments_run"] == names == list(metrics["experiments"])
    assert {f["experiment"] for f in metrics["findings"]} == set(names)  # each ends in findings
    assert metrics["machine"]["cpu_count"] >= 1 and metrics["machine"]["platform"]
    numbers = list(_numbers(metrics))
    assert len(numbers) > 100
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]
    md = (out / "report.md").read_text()
    for line in ("Command: grd reproduce --tiny", "Profile: tiny; seeds: 0, 1", "Machine: "):
        assert line in md, line
    dm = metrics["experiments"]["diffusion_maps"]
    # every dimension of the table is in metrics.json, beside its three nulls
    for s in ("ensemble", "stationary", "circle"):
        assert set(dm["dimensions"][s]) == {"set", "random_walk", "random_walk_drift", "ou_matched"}
        assert all(len(v) == 2 for v in dm["dimensions"][s].values())
    assert dm["verdicts"]["circle"]["verdict"] == "reproduced"  # the positive control
    section = md[md.index("## Diffusion maps") :]
    section = section[: section.index("\n## ", 3)] if "\n## " in section[3:] else section
    assert "ln n" in section and "ε" not in section  # ε is the metric's; kernels have bandwidths


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium absent (apt-get install -y chromium; .ci/run installs it)",
)
def test_report_renders_every_figure_in_chromium(tiny_report, tmp_path):
    out, proc, _ = tiny_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_png = len(list((out / "figures").glob("*.png")))
    body, status, dom = _rendered_image_status(out / "report.html", tmp_path)
    assert body is not None, "the page script did not run (no data-figures-loaded on <body>)"
    assert (int(body.group(1)), int(body.group(2))) == (n_png, n_png)
    assert status == ["yes"] * n_png
    # the rendered page opens with the Findings table: its header, one row per finding
    findings = json.loads((out / "metrics.json").read_text())["findings"]
    sections = re.findall(r'<section id="([a-z0-9_]+)"', dom)
    assert sections[0] == "findings" and "diffusion_maps" in sections
    block = dom[dom.index('<section id="findings"') :]
    block = block[: block.index("</section>")]
    header = re.findall(r"<th>(.*?)</th>", block)
    assert [html.unescape(h) for h in header] == list(FINDINGS_HEADER)
    rows = re.findall(r"<tr>(.*?)</tr>", block, re.S)[1:]
    assert len(rows) == len(findings)
    for row, f in zip(rows, findings, strict=True):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        assert cells[0] == f["claim"] and cells[6] == f["verdict"].replace("_", " ")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent")
def test_chromium_check_detects_a_broken_figure(tmp_path):
    """Negative control: a figure that does not decode is reported as not loaded."""
    good = report.Figure("good", "a real PNG", _tiny_png())
    broken = report.Figure("broken", "not a PNG", b"this is not an image")
    page = tmp_path / "page.html"
    page.write_text(report.render_html("t", [report.Section("s", "S", figures=[good, broken])]))
    body, status, _ = _rendered_image_status(page, tmp_path)
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
        (["reproduce", "--experiments", "diffusion_maps,nonsense"], "unknown experiment nonsense"),
        (["reproduce", "--experiments", ","], "--experiments"),
        (["reproduce", "--seeds", "0,x"], "--seeds"),
        (["reproduce", "--tiny", "--full"], "not allowed with"),
        (["reproduce", "--set", "diffusion_maps.lr=-1"], "lr must be positive"),
        (["reproduce", "--sections", "spectrum"], "--sections was removed: use --experiments"),
        (["reproduce", "--eps", "0.1"], "--eps was removed"),
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
    code = main([*ONE, "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a directory" in err
    assert target.read_text() == "keep me"


def test_non_empty_output_refused_without_force(tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    proc = _run_cli(*ONE, "--out", str(target))  # stdin is not a terminal here
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_bad_argument_in_a_real_process_has_no_traceback():
    proc = _run_cli("reproduce", "--experiments", "bogus")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "bogus" in proc.stderr
    assert "choose from " + ", ".join(_runner.registry()) in proc.stderr  # the registry is listed


def test_help_explains_every_option():
    proc = _run_cli("reproduce", "--help")
    assert proc.returncode == 0
    for opt in (
        "--out",
        "--force",
        "--resume",
        "--full",
        "--tiny",
        "--experiments",
        "--seeds",
        "--set",
        "--list",
        "--float64",
    ):
        assert opt in proc.stdout
    for name in _runner.registry():
        assert name in proc.stdout
    listed = _run_cli("reproduce", "--list", "--tiny")
    assert listed.returncode == 0, listed.stderr
    assert "diffusion_maps:" in listed.stdout and "tiny: DiffusionMapsConfig(" in listed.stdout
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
        # the experiments' scratch directories are gone before the report is written
        assert not (Path(directory) / "work").exists()
        real_write(directory, *a, **kw)
        written_dirs.append(Path(directory))
        assert (Path(directory) / "report.html").exists()  # a full report was in the temp dir
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", write_then_interrupt)
    out = tmp_path / "report"
    code = main([*ONE, "--out", str(out)])
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

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_runner, "run_experiment", fail)
    code = main([*ONE, "--out", str(out), "--force"])
    assert code == 130
    assert json.loads((out / "metrics.json").read_text()) == {"previous": 1}
    assert sorted(p.name for p in out.iterdir()) == [".grd-report", "metrics.json"]
    assert not _partials(tmp_path)


def test_killed_run_leaves_no_complete_looking_directory(tmp_path):
    """SIGKILL during an experiment (no cleanup possible): the target never appears."""
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grd.cli",
            *[a for a in ONE if a != "--quiet"],
            "--set",
            "diffusion_maps.train_steps=200000",
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
        while b"[1/1] diffusion_maps" not in buf and time.monotonic() < deadline:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        assert b"[1/1] diffusion_maps" in buf, buf.decode(errors="replace")[-2000:]
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
