"""The documentation site: strict build, rendering in headless Chromium, theory references.

The build test needs the ``docs`` packages (in the ``dev`` extra, so CI has them); the browser
tests need ``/usr/bin/chromium`` (``.ci/run`` installs it). The reference tests read only the
repository's text and always run.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = range(1, 9)  # the theory page has sections §1–§8, anchors sec-1 … sec-8
# "theory §2", "theory §2–3", "theory §5, §6": the code's name for a section of docs/theory.md
THEORY_REF = re.compile(r"theory,?\s*§\s*(\d+)(?:\s*[–-]\s*(\d+))?((?:,\s*§\s*\d+)*)")

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium absent (apt-get install -y chromium; .ci/run installs it)",
)


# ------------------------------------------------------------------ references (no build needed)


def _theory_anchors() -> set[str]:
    text = THEORY.read_text(encoding="utf-8")
    ids = set(re.findall(r"\{#([A-Za-z][\w-]*)\}", text))
    ids |= set(re.findall(r'<a id="([A-Za-z][\w-]*)"', text))
    return ids


def _referencing_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for sub in ("src", "examples", "tests", "benchmarks"):
        files += sorted((ROOT / sub).rglob("*.py"))
    files += sorted((ROOT / "notebooks").glob("*.ipynb"))
    return [f for f in files if "_hooks" not in f.parts and f.name != "test_docs.py"]


def test_theory_has_sections_one_to_eight_with_stable_anchors():
    text = THEORY.read_text(encoding="utf-8")
    headings = re.findall(r'^<a id="(sec-\d)"></a>\n\n## (\d)\. ', text, flags=re.M)
    assert [int(n) for _, n in headings] == list(SECTIONS), headings
    assert all(anchor == f"sec-{n}" for anchor, n in headings), headings


def test_every_spec_and_theory_reference_resolves():
    """Every "theory §n" (including ranges "§2–3" and lists "§5, §6") names a section 1–8,
    every link to theory.md#anchor names an anchor the theory page defines, and nothing still
    points to "SPEC" (a document that is not in the repository)."""
    anchors = _theory_anchors()
    bad = []
    n_refs = 0
    for path in _referencing_files():
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(THEORY_REF, text):
            nums = [int(m.group(1))] + ([int(m.group(2))] if m.group(2) else [])
            nums += [int(k) for k in re.findall(r"\d+", m.group(3) or "")]
            n_refs += 1
            bad += [(path.relative_to(ROOT), m.group(0)) for k in nums if k not in SECTIONS]
        for m in re.finditer(r"theory(?:\.md)?/?#([\w-]+)", text):
            n_refs += 1
            if m.group(1) not in anchors:
                bad.append((path.relative_to(ROOT), m.group(0)))
        bad += [(path.relative_to(ROOT), m.group(0)) for m in re.finditer(r"SPEC\S*", text)]
    assert n_refs > 20, "the scan found almost no references: is the pattern still right?"
    assert not bad, f"references to no theory section: {bad}"


def test_tests_named_by_the_theory_page_exist():
    text = THEORY.read_text(encoding="utf-8")
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", text))
    assert len(cited) >= 20, "the theory page should name the tests that check its identities"
    missing = []
    for file, name in sorted(cited):
        src = ROOT / file
        if not src.exists() or not re.search(rf"^def {name}\(", src.read_text(), flags=re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"the theory page names tests that do not exist: {missing}"


# ------------------------------------------------------------------ the built site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings missing: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
         str(ROOT / "mkdocs.yml"), "-d", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_strict_build_writes_every_page_and_the_local_mathjax(site):
    for page in [
        "index.html",
        "theory/index.html",
        "robustness/index.html",
        "results/index.html",
        "results/flows/index.html",
        "api/core/index.html",
        "api/analysis/index.html",
        "assets/mathjax/tex-svg.js",
        "results/analysis_spectrum.png",
        "notebooks/index.html",
    ]:
        assert (site / page).is_file(), page
    html = (site / "theory" / "index.html").read_text(encoding="utf-8")
    for n in SECTIONS:
        assert f'id="sec-{n}"' in html
    # Offline: no page loads a script, stylesheet or font from outside the site.
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        external = re.findall(
            r'<script[^>]+src="(?:https?:)?//[^"]*"|<link[^>]+href="(?:https?:)?//[^"]*"', text
        )
        assert not external, (page.relative_to(site).as_posix(), external)
    api = (site / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert 'id="grd.diffusion_matvec"' in api  # generated from the docstring
    # The results page includes the README's results section (one source of truth).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"--8<-- \[start:results\](.*?)--8<-- \[end:results\]", readme, re.S)
    assert section, "README.md lost its results-section markers (docs/results.md includes it)"
    first_row = next(line for line in section.group(1).splitlines() if line.startswith("| "))
    cell = first_row.split("|")[1].strip()
    assert cell in (site / "results" / "index.html").read_text(encoding="utf-8"), cell
    # Every notebook has its page.
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (site / "notebooks" / nb.stem / "index.html").is_file(), nb.name
    # Every local image of every page exists in the site (the browser test below checks that
    # they also decode, on a few pages).
    missing = []
    for page in site.rglob("*.html"):
        for src in re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page.read_text(encoding="utf-8")):
            if not re.match(r"^(data:|[a-z]+://)", src):
                target = (page.parent / src.split("#")[0]).resolve()
                if not target.is_file():
                    missing.append((page.relative_to(site).as_posix(), src))
    assert not missing, missing
    # Every heading of an API page is an object of grd (a docstring line that Markdown took
    # for a heading would show up here, and in the page's table of contents).
    for page in sorted((site / "api").glob("*/index.html")):
        ids = re.findall(r'<h[2-6][^>]*\bid="([^"]+)"', page.read_text(encoding="utf-8"))
        assert ids and all(i.startswith("grd.") and "--" not in i for i in ids), (page, ids)


# A script appended to a copy of a page: once MathJax has typeset, it records on <body> how
# many formulas were rendered, how many MathJax errors, how many math spans were left raw, and
# how many images decoded.
_PROBE = """
<script>
window.addEventListener("load", () => {
  const done = () => {
    const b = document.body;
    const spans = [...document.querySelectorAll(".arithmatex")];
    const imgs = [...document.querySelectorAll("article img")];
    b.dataset.math = document.querySelectorAll("mjx-container").length;
    b.dataset.merror = document.querySelectorAll("mjx-merror").length;
    b.dataset.raw = spans.filter(s => !s.querySelector("mjx-container")).length;
    b.dataset.imgs = imgs.filter(i => i.complete && i.naturalWidth > 0).length + "/" + imgs.length;
  };
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(done, done);
  } else { done(); }
});
</script>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _probe(site: Path, server: str, page: str, tmp_path: Path, html: str | None = None) -> dict:
    """Open a copy of ``page`` (with the probe script) in headless Chromium; return the
    attributes the probe wrote on <body>, and the dumped DOM."""
    src = site / page
    probe = src.with_name("_probe.html")
    text = html if html is not None else src.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    url = f"{server}/{probe.relative_to(site).as_posix()}"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    probe.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body is not None, proc.stdout[:2000]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))
    assert "math" in attrs, f"the probe did not run on {page}: {body.group(0)}"
    return attrs | {"dom": proc.stdout}


def _raw_tex(dom: str) -> list[str]:
    """Raw TeX left in the prose of the page's article: once the typeset formulas, code and
    comments are removed, a "$", "\\(" or "\\[" is a formula that was not picked up."""
    article = re.search(r"<article.*?</article>", dom, flags=re.S).group(0)
    prose = re.sub(
        r"<mjx-container.*?</mjx-container>|<code.*?</code>|<pre.*?</pre>|<!--.*?-->",
        "",
        article,
        flags=re.S,
    )
    text = re.sub(r"<[^>]+>", "", prose)
    return [m.group(0) for m in re.finditer(r".{0,40}(\$|\\\(|\\\[).{0,40}", text)]


@needs_chromium
@pytest.mark.parametrize(
    "page, min_math",
    [("theory/index.html", 150), ("api/core/index.html", 1), ("results/index.html", 1)],
)
def test_pages_render_math_and_images_in_chromium(site, server, tmp_path, page, min_math):
    got = _probe(site, server, page, tmp_path)
    assert int(got["math"]) >= min_math, got["math"]
    assert got["merror"] == "0", "MathJax reported a TeX error on the page"
    assert got["raw"] == "0", "some formulas were left as raw TeX"
    loaded, total = (int(k) for k in got["imgs"].split("/"))
    assert loaded == total, f"{total - loaded} of {total} images did not load"
    leftovers = _raw_tex(got["dom"])
    assert not leftovers, f"raw TeX left on {page}: {leftovers[:5]}"


@needs_chromium
def test_the_notebook_page_with_most_figures_renders_in_chromium(site, server, tmp_path):
    pages = sorted((site / "notebooks").glob("*/index.html"))
    count = lambda p: len(re.findall(r"<img\b", p.read_text(encoding="utf-8")))
    page = max(pages, key=count)
    got = _probe(site, server, page.relative_to(site).as_posix(), tmp_path)
    assert got["merror"] == "0" and got["raw"] == "0"
    loaded, total = (int(k) for k in got["imgs"].split("/"))
    assert loaded == total == count(page), got["imgs"]
    assert not _raw_tex(got["dom"])


@needs_chromium
def test_probe_detects_a_broken_image_and_a_tex_error(site, server, tmp_path):
    """Negative control: the same probe on a page with a missing image and bad TeX."""
    html = (site / "index.html").read_text(encoding="utf-8")
    bad = (
        '<img src="no-such-figure.png"><span class="arithmatex">\\(\\frac{1}{\\)</span>'
        "<p>a stray $x$ formula</p>"
    )
    html = html.replace("</article>", bad + "</article>", 1)
    got = _probe(site, server, "index.html", tmp_path, html=html)
    loaded, total = (int(k) for k in got["imgs"].split("/"))
    assert loaded == total - 1
    assert got["merror"] != "0" or got["raw"] != "0"
    assert any("stray $x$" in left for left in _raw_tex(got["dom"]))


# ------------------------------------------------------------------ citations


def test_citation_file_and_readme_cite_the_implemented_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["authors"] and cff["title"]
    refs = {r["title"]: r for r in cff["references"]}
    entropy = next(r for r in refs.values() if r.get("doi") == "10.3390/e22010101")
    assert [a["family-names"] for a in entropy["authors"]] == ["Fioresi", "Chaudhari", "Soatto"]
    lee = next(t for t in refs if t.startswith("Directional Analysis of Stochastic Gradient"))
    assert [a["given-names"] for a in refs[lee]["authors"]] == ["Cheolhyoung", "Kyunghyun", "Wanmo"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for needle in [
        "10.3390/e22010101",
        "arXiv:1910.12194",
        "arXiv:1810.00150",
        "C. Lee, K. Cho, W. Kang",
    ]:
        assert needle in readme, needle


# ------------------------------------------------------------------ notebook rendering


def test_notebook_markdown_renders_stored_outputs():
    pytest.importorskip("mkdocs", reason="mkdocs not installed: pip install -e '.[docs]'")
    import base64
    import importlib.util

    spec = importlib.util.spec_from_file_location("mount", ROOT / "docs" / "_hooks" / "mount.py")
    mount = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mount)
    png = b"\x89PNG\r\n\x1a\nnot really"
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# Title\n", "Math $x^2$."]},
            {
                "cell_type": "code",
                "source": "print('hi')\n```",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["hi\n"]},
                    {"output_type": "display_data", "data": {
                        "image/png": base64.b64encode(png).decode(), "text/plain": ["<Figure>"]}},
                    {"output_type": "execute_result", "data": {"text/markdown": "## Table"}},
                    {"output_type": "error", "ename": "ValueError", "evalue": "bad"},
                ],
            },
            {"cell_type": "code", "source": "", "outputs": []},
        ]
    }  # fmt: skip
    text, images = mount.notebook_markdown(nb, "notebooks/demo")
    assert text.startswith("# Title\nMath $x^2$.")
    assert "````python\nprint('hi')\n```\n````" in text  # fence longer than the code's
    assert "```text\nhi\n```" in text and "```text\nValueError: bad\n```" in text
    assert "![output](demo_files/output_0.png)" in text and "<Figure>" not in text
    assert "## Table" in text
    assert images == {"notebooks/demo_files/output_0.png": png}
