"""Every Python block of README.md runs as shown.

The ```python blocks are executed in order in one fresh interpreter (a later block may use
the names of an earlier one, as a reader who pastes them one after the other would), each
block reporting its own failure — except the blocks after the first that start with their own
imports: those must run on their own, and do, in a second fresh interpreter (so that no block
is run twice). The sizes are the ones printed in the README.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))

RUNNER = """
import sys, traceback
blocks = {blocks!r}
ns = {{"__name__": "__main__"}}
for k, src in enumerate(blocks):
    print(f"--- README python block {{k + 1}} ---", flush=True)
    try:
        exec(compile(src, f"README.md python block {{k + 1}}", "exec"), ns)
    except Exception:
        traceback.print_exc()
        sys.exit(10 + k)
"""


def _self_contained(k: int) -> bool:
    return k > 0 and re.match(r"\s*(import|from)\s", BLOCKS[k]) is not None


def _run(blocks, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", RUNNER.format(blocks=blocks)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip


def test_readme_has_the_blocks_it_promises():
    assert len(BLOCKS) >= 3, BLOCKS
    assert "grd.integrate" in BLOCKS[0] and "print(" in BLOCKS[0]  # the ten-line example
    assert any("diffusion_ngd" in b and "per_example_loss_fn" in b for b in BLOCKS)


def test_readme_python_blocks_run_in_order(tmp_path):
    proc = _run([b for k, b in enumerate(BLOCKS) if not _self_contained(k)], tmp_path)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = proc.stdout
    # The ten-line example prints its results: numbers, not an empty line.
    assert re.search(r"vᵀDv = [-+0-9.e]+", out), out
    assert re.search(r"mean loss [0-9.]+ at t = 0, [0-9.]+ at t = 1 along GRD", out), out


def test_readme_self_contained_blocks_run_on_their_own(tmp_path):
    alone = [b for k, b in enumerate(BLOCKS) if _self_contained(k)]
    assert alone, "the optax block should start with its imports (it runs on its own)"
    proc = _run(alone, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert re.search(r"minibatch loss [0-9.]+ after 100 steps", proc.stdout), proc.stdout


def test_readme_findings_table_is_quoted_from_the_committed_report():
    """README's findings table is the committed default report's ``metrics.json`` rendered by
    ``readme_findings_table`` (one source of truth: rerun, commit the report, paste the table)."""
    import json

    from grd._reproduce._findings import readme_findings_table

    report = ROOT / "docs" / "results" / "default"
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["profile"] == "default" and len(metrics["seeds"]) >= 3
    assert (report / "report.md").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_findings_table(metrics) in readme
