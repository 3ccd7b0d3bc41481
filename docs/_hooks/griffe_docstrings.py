"""Griffe extension: make the docstrings' reStructuredText-isms render as Markdown.

The docstrings are Google style with a few Sphinx habits: ``:func:`name``` roles, and wrapped
formulas whose continuation line can begin with ``#`` (``rank = #{λ > …}``), which Markdown
would take for a heading. This rewrites, in every docstring as it is loaded:

- ``:func:`x```, ``:class:`x```, ``:meth:`x```, ``:mod:`x```, ``:attr:`x``` → ``x`` in code;
- a line whose first non-blank character is ``#`` → the ``#`` escaped;
- ``theory §n`` (the code's name for section n of docs/theory.md) → a link to section n of the theory page
  (every API page is ``api/<name>.md``, hence ``../theory.md``).

The source files are not changed.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_HASH = re.compile(r"^(\s*)#", flags=re.M)
_THEORY = re.compile(r"(?<!\[)theory §(\d)")


class MarkdownDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is None:
            return
        text = _ROLE.sub(lambda m: f"`{m.group(1)}`", obj.docstring.value)
        text = _HASH.sub(r"\1\\#", text)
        obj.docstring.value = _THEORY.sub(r"[theory §\1](../theory.md#sec-\1)", text)
