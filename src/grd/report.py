"""A self-contained report directory: ``report.html``, ``report.md``, PNG figures, ``metrics.json``.

The HTML file embeds every figure as a base64 PNG data URI, so it opens in a browser from
disk with no server and no other file. A small inline script marks each ``<img>`` with
``data-loaded="yes"`` once the browser has decoded it (``naturalWidth > 0``) and writes the
count into ``<body data-figures-loaded="k/n">``: a headless browser can then check from the
rendered page that every figure loaded.

Building blocks: :class:`Figure`, :class:`Table` and :class:`Section` hold the content;
:func:`write_report` writes the four kinds of file into a directory.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "Figure",
    "Table",
    "Section",
    "figure_png",
    "to_jsonable",
    "write_report",
    "render_html",
    "render_markdown",
]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One PNG figure: ``name`` (file stem, ``[a-z0-9_]``), a caption and the PNG bytes."""

    name: str
    caption: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"figures/{self.name}.png"

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Table:
    """A small table of already formatted cells."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclasses.dataclass(frozen=True)
class Section:
    """A report section: a title, paragraphs (plain text), tables and figures, in that order."""

    key: str
    title: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()


def figure_png(fig, *, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def to_jsonable(obj, path: str = "metrics"):
    """Convert numpy/jax scalars and arrays (nested in dicts, lists, tuples) to JSON types.

    Non-finite floats raise ``ValueError`` naming their path: a report shows numbers, and
    JSON has no NaN.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            raise ValueError(f"{path} must be finite; got {x}.")
        return x
    arr = np.asarray(obj)
    if arr.dtype == bool:
        return arr.tolist()
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(int).tolist()
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{path}{list(first)} must be finite; got {arr[first]}.")
        return arr.astype(float).tolist()
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in metrics.json.")


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 980px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 92%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 90%; color: #555; }
.meta { color: #666; font-size: 90%; }
#findings table { font-size: 85%; }
#findings td, #findings th { text-align: left; vertical-align: top; }
nav a { margin-right: 1em; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    var good = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute('data-loaded', good ? 'yes' : 'no');
    if (good) { ok++; }
  }
  document.body.setAttribute('data-figures-loaded', ok + '/' + imgs.length);
});
"""


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_html(title: str, sections: Sequence[Section], meta: Sequence[str] = ()) -> str:
    """The report as one HTML page with the figures embedded as data URIs."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    for line in meta:
        out.append(f'<p class="meta">{_esc(line)}</p>')
    out.append("<nav>" + "".join(f'<a href="#{_esc(s.key)}">{_esc(s.title)}</a>' for s in sections))
    out.append("</nav>")
    for s in sections:
        out.append(f'<section id="{_esc(s.key)}"><h2>{_esc(s.title)}</h2>')
        for p in s.paragraphs:
            out.append(f"<p>{_esc(p)}</p>")
        for t in s.tables:
            out.append("<table>")
            out.append(f"<caption>{_esc(t.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in t.header) + "</tr>")
            for row in t.rows:
                out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
        for f in s.figures:
            out.append(
                f'<figure id="fig-{_esc(f.name)}"><img src="{f.data_uri()}" '
                f'alt="{_esc(f.caption)}"><figcaption>{_esc(f.caption)}</figcaption></figure>'
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: Sequence[Section], meta: Sequence[str] = ()) -> str:
    """The report as Markdown, linking the PNG files under ``figures/``."""
    out = [f"# {title}", ""]
    for line in meta:
        out += [f"_{line}_", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [f"**{t.caption}**", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join("---" for _ in t.header) + "|")
            for row in t.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("")
        for f in s.figures:
            out += [f"![{_md_cell(f.caption)}]({f.filename})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


def write_report(
    directory, title: str, sections: Sequence[Section], metrics: dict, meta: Sequence[str] = ()
) -> list[Path]:
    """Write ``report.html``, ``report.md``, ``figures/*.png`` and ``metrics.json``.

    Args:
      directory: an existing, empty directory.
      title: page title.
      sections: the content, in order.
      metrics: every number shown (converted by :func:`to_jsonable`; must be finite).
      meta: short lines printed under the title (command line, versions, run time).

    Returns:
      The paths written, relative to ``directory``.
    """
    directory = Path(directory)
    names = [f.name for s in sections for f in s.figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names must be unique; got {names}.")
    written = []
    (directory / "figures").mkdir(exist_ok=True)
    for s in sections:
        for f in s.figures:
            (directory / f.filename).write_bytes(f.png)
            written.append(Path(f.filename))
    (directory / "metrics.json").write_text(
        json.dumps(to_jsonable(metrics), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    (directory / "report.md").write_text(render_markdown(title, sections, meta), encoding="utf-8")
    (directory / "report.html").write_text(render_html(title, sections, meta), encoding="utf-8")
    written += [Path("metrics.json"), Path("report.md"), Path("report.html")]
    return written
