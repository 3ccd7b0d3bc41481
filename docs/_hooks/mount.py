"""MkDocs hook: mount files that live outside ``docs/`` into the site at build time.

- ``benchmarks/results/*.md`` and ``*.png`` appear under ``results/`` (one source of truth: the
  benchmark scripts write those files; the site shows them as they are).
- ``SECURITY.md`` appears as ``SECURITY.md``.
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

import importlib.util
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

# Which repository files are mounted, and where: {repository path: site path}.
_MOUNTS: dict[str, str] = {}
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


def on_files(files: Files, config) -> Files:
    root = _repo_root(config)
    _MOUNTS.clear()
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
    src = page.file.abs_src_path or str(Path(config["docs_dir"]) / page.file.src_uri)
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
