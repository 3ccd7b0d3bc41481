"""MkDocs hook: mount files that live outside ``docs/`` into the site at build time.

- ``benchmarks/results/*.md`` and ``*.png`` appear under ``results/`` (one source of truth: the
  benchmark scripts write those files; the site shows them as they are).
- ``SECURITY.md`` appears as ``SECURITY.md``.
- ``notebooks/*.ipynb`` appear as pages under ``notebooks/``, rendered from their stored
  outputs (nothing is executed at build time): markdown cells as Markdown (their math goes
  through arithmatex like every page), code cells as Python blocks, text outputs as text
  blocks, PNG outputs as images, ``text/markdown`` outputs as Markdown; and an index page
  lists them, so a notebook added or renamed needs no change here.
- MathJax 3 (``tex-svg.js`` and its TeX extensions) is taken from the installed
  ``django-static-mathjax`` package (the ``docs`` extra) and served from ``assets/mathjax/``:
  the site renders math offline, with no CDN, and no JavaScript is committed.

Relative Markdown links in the pages that point at a mounted repository file (for example
``../benchmarks/results/flows.md`` from ``docs/results.md``, or ``../SECURITY.md`` from
``docs/robustness.md``) are rewritten to the mounted copy, so the same link works on the code
host and in the site. Every other link is left alone, so a broken one still fails
``mkdocs build --strict``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files, InclusionLevel

# Which repository files are mounted, and where: {repository path: site path}.
_MOUNTS: dict[str, str] = {}
# Where each generated page comes from, to resolve its relative links: {site path: file}.
_SOURCES: dict[str, Path] = {}
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(
            "MathJax is not installed: the site serves it locally from the "
            "django-static-mathjax package. Install the docs extra: pip install -e '.[docs]'"
        )
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-svg.js").is_file():
        raise PluginError(f"MathJax found at {es5.parent} but without es5/tex-svg.js")
    return es5


def _text(x) -> str:
    return "".join(x) if isinstance(x, list) else str(x)


def _fence(body: str, lang: str) -> str:
    ticks = "```"
    while ticks in body:
        ticks += "`"
    return f"{ticks}{lang}\n{body.rstrip()}\n{ticks}\n"


def notebook_markdown(nb: dict, stem: str) -> tuple[str, dict[str, bytes]]:
    """A notebook as Markdown from its stored outputs; returns (markdown, {image name: PNG})."""
    parts: list[str] = []
    images: dict[str, bytes] = {}
    for cell in nb.get("cells", []):
        source = _text(cell.get("source", ""))
        if cell["cell_type"] == "markdown":
            parts.append(source.rstrip() + "\n")
            continue
        if cell["cell_type"] != "code" or not source.strip():
            continue
        parts.append(_fence(source, "python"))
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                parts.append(_fence(_text(out.get("text", "")), "text"))
            elif kind == "error":
                parts.append(_fence(f"{out.get('ename')}: {out.get('evalue')}", "text"))
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "image/png" in data:
                    name = f"{stem}_files/output_{len(images)}.png"
                    images[name] = base64.b64decode(_text(data["image/png"]))
                    parts.append(
                        f"![output]({posixpath.basename(stem)}_files/{posixpath.basename(name)})\n"
                    )
                elif "text/markdown" in data:
                    parts.append(_text(data["text/markdown"]).rstrip() + "\n")
                elif "text/plain" in data:
                    parts.append(_fence(_text(data["text/plain"]), "text"))
    return "\n".join(parts), images


def _notebooks(root: Path, files: Files, config) -> None:
    rows = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        stem = f"notebooks/{path.stem}"
        text, images = notebook_markdown(nb, stem)
        if not text.lstrip().startswith("# "):
            text = f"# {path.stem}\n\n{text}"
        title = text.lstrip().splitlines()[0][2:].strip()
        has_out = any(c.get("outputs") for c in nb.get("cells", []) if c["cell_type"] == "code")
        note = "" if has_out else " (no stored outputs yet: run it to see them)"
        text = (
            f"<!-- rendered from notebooks/{path.name} by docs/_hooks/mount.py -->\n\n"
            f"{text}\n\n---\n\n*Source: `notebooks/{path.name}`.*\n"
        )
        uri = f"{stem}.md"
        _MOUNTS[path.relative_to(root).as_posix()] = uri
        _SOURCES[uri] = path
        files.append(File.generated(config, uri, content=text, inclusion=InclusionLevel.NOT_IN_NAV))
        for name, png in images.items():
            files.append(File.generated(config, name, content=png))
        rows.append(f"| [{title}]({path.stem}.md) | `notebooks/{path.name}` |{note} |")
    index = (
        "# Notebooks\n\nThe notebooks under `notebooks/`, rendered from their stored outputs "
        "(nothing is executed when the site is built; `tests/test_notebooks.py` executes each "
        "one at a reduced size).\n\n| notebook | file | |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    files.append(File.generated(config, "notebooks/index.md", content=index))


# Before the other plugins see the files, so that the mounted pages are like any other.
@event_priority(100)
def on_files(files: Files, config) -> Files:
    root = _repo_root(config)
    _MOUNTS.clear()
    _SOURCES.clear()
    _notebooks(root, files, config)
    mounted: list[tuple[Path, str, InclusionLevel]] = []
    for path in sorted((root / "benchmarks" / "results").glob("*")):
        if path.suffix in {".md", ".png"}:
            mounted.append((path, f"results/{path.name}", InclusionLevel.NOT_IN_NAV))
    security = root / "SECURITY.md"
    if security.is_file():
        mounted.append((security, "SECURITY.md", InclusionLevel.INCLUDED))
    for path, uri, inclusion in mounted:
        _MOUNTS[path.relative_to(root).as_posix()] = uri
        files.append(File.generated(config, uri, abs_src_path=str(path), inclusion=inclusion))

    es5 = _mathjax_dir()
    # SVG output: the glyphs are paths inside the page, so no web font has to load.
    assets = [es5 / "tex-svg.js"]
    assets += sorted((es5 / "input" / "tex" / "extensions").glob("*.js"))
    for path in assets:
        uri = "assets/mathjax/" + path.relative_to(es5).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = _repo_root(config)
    src = _SOURCES.get(page.file.src_uri) or page.file.abs_src_path
    src = src or str(Path(config["docs_dir"]) / page.file.src_uri)
    here = Path(src).resolve().parent
    page_dir = posixpath.dirname(page.file.src_uri)
    docs_prefix = Path(config["docs_dir"]).resolve().relative_to(root).as_posix() + "/"

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        try:
            rel = (here / path).resolve().relative_to(root).as_posix()
        except ValueError:
            return match.group(0)
        uri = _MOUNTS.get(rel)
        if uri is None and rel.startswith(docs_prefix):
            uri = rel[len(docs_prefix) :]  # a mounted file linking back into docs/
        if uri is None:
            return match.group(0)
        new = posixpath.relpath(uri, page_dir or ".") + (f"#{anchor}" if anchor else "")
        return f"{match.group(1)}{new}{match.group(3)}"

    return _LINK.sub(rewrite, markdown)
