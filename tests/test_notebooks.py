"""Execute every notebook under notebooks/ (nbclient, the venv's ``python3`` kernel).

Notebooks run with ``GRD_NOTEBOOK_QUICK=1`` in their environment: a notebook reads it to
shrink its sizes (data subset, steps, integration time) so that it executes in well under a
minute. Each notebook gets a hard wall-clock budget (``NOTEBOOK_TIMEOUT`` seconds, or the
``GRD_NOTEBOOK_TIMEOUT`` environment variable); a cell error or an exceeded budget fails it.
The kernel runs in the notebook's own directory, as in Jupyter.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NOTEBOOK_TIMEOUT = float(os.environ.get("GRD_NOTEBOOK_TIMEOUT", "180"))
KERNEL = "python3"


def _kernel_available() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return False
    return True


async def _execute(client, timeout: float):
    await asyncio.wait_for(client.async_execute(), timeout=timeout)


@pytest.mark.skipif(not NOTEBOOKS, reason=f"no notebooks under {NOTEBOOK_DIR}")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch):
    if not _kernel_available():
        pytest.fail(
            f"the Jupyter kernel {KERNEL!r} is not installed; run "
            "'python -m ipykernel install --sys-prefix' in the venv"
        )
    monkeypatch.setenv("GRD_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "XLA_FLAGS", os.environ.get("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    )
    nb = nbformat.read(path, as_version=4)
    assert any(c.cell_type == "code" for c in nb.cells), f"{path.name} has no code cell"
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
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors[:1]
    assert elapsed < NOTEBOOK_TIMEOUT
