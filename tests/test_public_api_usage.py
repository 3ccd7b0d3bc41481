"""What a user reads and copies uses grd's public API only.

No file a user is meant to read or run — ``examples/*.py``, the notebooks' code cells, the
Python blocks of ``README.md`` and of the documentation pages — imports or calls a private
module of grd (``grd._…``, ``from grd import _…``, ``from grd._x import …``). Private modules
are an implementation detail: their names and signatures change without notice.

``tests/`` and ``benchmarks/`` are not scanned: white-box tests check private helpers on
purpose, and the benchmarks time the unvalidated kernels (``_diffusion_matvec`` …) to
separate their cost from validation's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = re.compile(r"\bgrd\._\w+|from\s+grd(?:\.\w+)*\s+import\s+\(?\s*_\w+|from\s+\._")
PY_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _sources():
    for path in sorted((ROOT / "examples").rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for k, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                yield Path(f"{path}#cell{k}"), "".join(cell["source"])
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in PY_BLOCK.findall(path.read_text(encoding="utf-8")):
            yield path, block


def test_the_scan_sees_the_files_it_should():
    names = {p.name.split("#")[0] for p, _ in _sources()}
    assert {"geodesics_digits.py", "geodesics.ipynb", "README.md"} <= names, names


def test_the_pattern_catches_private_imports():
    for line in (
        "from grd._optim import diffusion_ngd",
        "import grd._flows",
        "x = grd._diffusion._diffusion_matvec",
        "from grd import _optim",
        "from grd.analysis import _checks",
    ):
        assert PRIVATE.search(line), line
    for line in ("from grd import diffusion_ngd", "import grd", "grd.analysis.areal_velocity"):
        assert not PRIVATE.search(line), line


def test_no_private_grd_import_outside_src():
    bad = [
        f"{path.relative_to(ROOT) if path.is_absolute() and path.exists() else path}: {m.group(0)}"
        for path, text in _sources()
        for m in PRIVATE.finditer(text)
    ]
    assert not bad, "private grd modules used outside src/:\n" + "\n".join(bad)
