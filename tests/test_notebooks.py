"""The notebooks under notebooks/: each executes, each stores its outputs, each uses the public API.

Execution (nbclient, the venv's ``python3`` kernel) runs with ``GRD_NOTEBOOK_SMALL=1`` in the
environment: a notebook reads it to shrink its sizes (data subset, steps, integration time)
so that it executes in about 20 s; the outputs stored in the file come from the full-size run.
Each notebook gets a hard wall-clock budget (``NOTEBOOK_TIMEOUT`` seconds, or the
``GRD_NOTEBOOK_TIMEOUT`` environment variable); a cell error or an exceeded budget fails it.
The kernel runs in the notebook's own directory, as in Jupyter.

The static checks need no kernel: every code cell has stored outputs where it prints or
plots (a notebook renders on a code host and in the documentation site without being run),
at least one figure is stored, no error output is stored, and no cell reaches into grd's
private modules (``grd._…``), edits ``sys.path`` or imports from ``examples/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NOTEBOOK_TIMEOUT = float(os.environ.get("GRD_NOTEBOOK_TIMEOUT", "600"))  # wall clock, shared CPUs
KERNEL = "python3"
# A private grd module, a sys.path edit, or a module of examples/ loaded by path or by name.
FORBIDDEN = re.compile(
    r"\bgrd\._|from\s+grd\s+import\s+_|\bsys\.path\b|spec_from_file_location|examples/|"
    r"^\s*(?:from|import)\s+(?:geodesics_digits|rbm_digits|sgd_analysis_digits)\b",
    re.M,
)
ids = [p.name for p in NOTEBOOKS]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_stores_outputs_and_uses_the_public_api(path: Path):
    nb = nbformat.read(path, as_version=4)
    cells = _code_cells(nb)
    assert cells, f"{path.name} has no code cell"
    bad = [m.group(0) for c in cells for m in FORBIDDEN.finditer(c.source)]
    assert not bad, f"{path.name} uses private/out-of-package code: {bad}"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    kinds = [o.get("output_type") for o in outputs]
    assert "error" not in kinds, f"{path.name} stores an error output"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} stores no figure: run it at full size and save its outputs"
    # Every cell that prints or plots was run: a cell calling print/plt/display has output.
    silent = [
        c.source.splitlines()[0]
        for c in cells
        if re.search(r"\bprint\(|plt\.show\(|display\(", c.source) and not c.get("outputs")
    ]
    assert not silent, f"{path.name}: cells without their stored output: {silent}"
    # Executed in order, top to bottom, in one session (the outputs belong together).
    counts = [c.get("execution_count") for c in cells]
    assert all(isinstance(n, int) for n in counts), f"{path.name}: unexecuted cells {counts}"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    # The stored outputs come from the full-size run, not the reduced one the test uses.
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "GRD_NOTEBOOK_SMALL" not in text


def _kernel_available() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return False
    return True


async def _execute(client, timeout: float):
    await asyncio.wait_for(client.async_execute(), timeout=timeout)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_executes_at_reduced_size(path: Path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    if not _kernel_available():
        pytest.fail(
            f"the Jupyter kernel {KERNEL!r} is not installed; run "
            "'python -m ipykernel install --sys-prefix' in the venv"
        )
    monkeypatch.setenv("GRD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # figures are drawn but not encoded
    monkeypatch.setenv(
        "XLA_FLAGS", os.environ.get("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    )
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=int(NOTEBOOK_TIMEOUT),  # per cell; the whole notebook is bounded below
        resources={"metadata": {"path": str(path.parent)}},
        allow_errors=False,
    )
    start = time.perf_counter()
    try:
        asyncio.run(_execute(client, NOTEBOOK_TIMEOUT))
    except TimeoutError:
        pytest.fail(f"{path.name} did not finish within {NOTEBOOK_TIMEOUT:.0f} s")
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} raised in a cell:\n{str(e)[-3000:]}")
    elapsed = time.perf_counter() - start
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[:1]
    assert elapsed < NOTEBOOK_TIMEOUT
