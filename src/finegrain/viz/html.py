"""The HTML every producer shares: escaping, tables, standalone pages and writing them.

Everything a user supplies (words, labels, targets, neuron and method names, titles) goes through
:func:`escape`; :func:`table` escapes every cell unless it is an :class:`~finegrain.results.HtmlFragment`
(markup finegrain built, its data already escaped), so a table cannot render a user's text as markup by
mistake. Outputs are self-contained: inline styles, no scripts, stylesheets or fonts to fetch.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from finegrain.results import HtmlFragment, write_text_atomic

# characters XML 1.0 forbids (a standalone SVG with one is not well formed) and lone surrogates (unwritable
# as UTF-8): shown as U+FFFD
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


_VISIBLE = {" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5", "\r": "\u240d"}


def escape(s) -> str:
    """A user string (word, title, neuron or method name; anything, through ``str``) as HTML or SVG text or
    attribute value: ``html.escape`` with quotes, and the characters XML 1.0 forbids as U+FFFD."""
    return html.escape(_NOT_XML.sub("\ufffd", str(s)), quote=True)


def token_label(token: str) -> str:
    """A token as a label: spaces, tabs and newlines made visible (``" cat"`` -> ``"␣cat"``), so that a
    character model's space or a word piece's leading space does not read as nothing."""
    return "".join(_VISIBLE.get(c, c) for c in str(token)) or "\u2205"


def cell(value) -> str:
    """A table cell's content: an :class:`~finegrain.results.HtmlFragment` as it is, anything else escaped."""
    return str(value) if isinstance(value, HtmlFragment) else escape(value)


def table(head: Sequence, rows: Iterable[Sequence], *, cell_style: str = "", caption: str | None = None,
          cls: str | None = None, style: str = "border-collapse:collapse", row_style: str = "") -> HtmlFragment:
    """An HTML ``<table>``: a header row of ``head`` and one row per item of ``rows``, every cell through
    :func:`cell`; ``cell_style`` styles every ``th``/``td``, ``row_style`` every body ``tr``, ``caption`` (escaped)
    is shown above the table (left-aligned, bold)."""
    td = f' style="{escape(cell_style)}"' if cell_style else ""
    tr = f' style="{escape(row_style)}"' if row_style else ""
    cls_attr = f' class="{escape(cls)}"' if cls else ""
    parts = [f'<table{cls_attr} style="{escape(style)}">']
    if caption:
        parts.append(f'<caption style="text-align:left;font-weight:600">{escape(caption)}</caption>')
    parts.append("<tr>" + "".join(f"<th{td}>{cell(h)}</th>" for h in head) + "</tr>")
    parts += [f"<tr{tr}>" + "".join(f"<td{td}>{cell(c)}</td>" for c in r) + "</tr>" for r in rows]
    parts.append("</table>")
    return HtmlFragment("".join(parts))


def page(body: str, title: str = "finegrain", body_style: str = "") -> str:
    """A minimal standalone page (UTF-8, the escaped ``title``) around the HTML fragment ``body``."""
    style = f' style="{escape(body_style)}"' if body_style else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>'
            f"<body{style}>\n{body}\n</body></html>\n")


def write_html(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (a page, a fragment or an SVG) to ``path``, its directory created, through a temporary
    file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text)


__all__ = ["cell", "escape", "page", "table", "token_label", "write_html"]
