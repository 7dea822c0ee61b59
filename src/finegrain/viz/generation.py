"""Pictures of a generated continuation's attribution (inseq-style, Sarti et al. 2023): the token x
token matrix whose row ``t`` attributes generated token ``t`` to the prompt and to the tokens
generated before it, as a PNG heatmap and as a self-contained HTML table.

Both take plain data (labels, a matrix with NaN where a row cannot read a column) so they do not depend
on the analysis modules. Colours follow :func:`finegrain.viz.heatmap.value_rgb` (red positive, blue
negative, white zero; grey for the masked upper triangle), so the PNG and the HTML agree. Every label
is escaped in the HTML.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap, TwoSlopeNorm

from finegrain.errors import ParameterError
from finegrain.viz.heatmap import NAN_RGB, value_color, value_rgb
from finegrain.viz.html import escape, page, token_label
from finegrain.viz.plots import figure, save_figure


def _check(matrix, row_labels: Sequence[str], col_labels: Sequence[str], n_prompt: int) -> np.ndarray:
    M = np.asarray(matrix, dtype=float)
    if M.ndim != 2 or M.size == 0:
        raise ParameterError(f"the attribution matrix must be a non-empty 2-D array, got shape {M.shape}")
    if len(row_labels) != M.shape[0] or len(col_labels) != M.shape[1]:
        raise ParameterError(f"{len(row_labels)} row and {len(col_labels)} column labels for a matrix of shape "
                             f"{M.shape}")
    if not 0 < n_prompt <= M.shape[1]:
        raise ParameterError(f"n_prompt must be in 1..{M.shape[1]}, got {n_prompt}")
    return M


def _vmax(M: np.ndarray) -> float:
    finite = np.abs(M[np.isfinite(M)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def plot_generation_matrix(
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    n_prompt: int,
    path: str | os.PathLike,
    title: str = "",
    row_notes: Sequence[str] | None = None,
    annotate: bool | None = None,
    svg: bool = False,
) -> Path:
    """Heatmap of ``matrix [generated, prompt + generated]`` (NaN cells, the masked upper triangle, in
    grey) with a line between the prompt's columns and the generated ones; ``row_notes[t]`` (e.g.
    ``"p=0.42 Δ=1e-4"``) is written right of row ``t``. Cells carry their values when the matrix is at
    most 14 columns wide (``annotate``)."""
    M = _check(matrix, row_labels, col_labels, n_prompt)
    if row_notes is not None and len(row_notes) != M.shape[0]:
        raise ParameterError(f"{len(row_notes)} row notes for {M.shape[0]} rows")
    h, w = M.shape
    vm = _vmax(M)
    annotate = w <= 14 if annotate is None else annotate
    note_w = 1.6 if row_notes is not None else 0.0
    fig_w = min(18.0, max(4.5, 0.5 * w + 2.4 + note_w))
    fig_h = min(14.0, max(2.6, 0.42 * h + 1.9))
    with figure((fig_w, fig_h)) as fig:
        ax = fig.add_subplot()
        ax.grid(False)
        # the HTML heatmaps' own scale, so that PNG and HTML show a value in the same colour
        cmap = ListedColormap([tuple(c / 255 for c in value_rgb(v, 1.0)) for v in np.linspace(-1, 1, 256)])
        cmap = cmap.with_extremes(bad=tuple(c / 255 for c in NAN_RGB))
        im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, norm=TwoSlopeNorm(0.0, -vm, vm), aspect="auto",
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02 + 0.12 * bool(row_notes))
        cb.set_label("attribution")
        ax.set_xticks(np.arange(w), [token_label(c) for c in col_labels], rotation=60 if w > 5 else 0,
                      ha="right" if w > 5 else "center", fontsize=8, family="monospace")
        ax.set_yticks(np.arange(h), [token_label(r) for r in row_labels], fontsize=8, family="monospace")
        ax.axvline(n_prompt - 0.5, color="#222222", lw=1.2)
        ax.set_xlabel("input token (prompt | generated)")
        ax.set_ylabel("generated token")
        if annotate:
            for i in range(h):
                for j in range(w):
                    v = M[i, j]
                    if math.isfinite(v):
                        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7,
                                color="#fff" if abs(v) > 0.6 * vm else "#111")
        if row_notes is not None:
            for i, note in enumerate(row_notes):
                ax.text(w - 0.4, i, f"  {note}", ha="left", va="center", fontsize=7, color="#444444",
                        clip_on=False)
        if title:
            ax.set_title(title, fontsize=10)
        return save_figure(fig, path, svg=svg)


_TD = "border:1px solid #e0e0e0;padding:2px 5px;text-align:center;font-size:12px"


def generation_html(
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    n_prompt: int,
    title: str = "",
    text: str | None = None,
    row_info: Sequence[Mapping[str, str]] | None = None,
    standalone: bool = False,
) -> str:
    """The matrix as an HTML table (escaped labels, values in tooltips and cells, masked cells grey),
    one row per generated token followed by the columns of ``row_info[t]`` (e.g. ``f(x)``, ``delta``,
    ``complete``); ``text`` (the prompt and continuation) above it. ``standalone`` wraps it in a page."""
    M = _check(matrix, row_labels, col_labels, n_prompt)
    vm = _vmax(M)
    info_cols = list(row_info[0]) if row_info else []
    head = [f'<th style="{_TD}"></th>']
    for j, c in enumerate(col_labels):
        side = "#f3f3f3" if j < n_prompt else "#fff8e6"
        sep = "border-left:2px solid #222;" if j == n_prompt else ""
        kind = "prompt" if j < n_prompt else "generated"
        head.append(f'<th style="{_TD};{sep}background:{side};font-family:monospace" '
                    f'title="{kind} token {j}">{escape(token_label(c))}</th>')
    head += [f'<th style="{_TD}">{escape(k)}</th>' for k in info_cols]
    rows = []
    for i, r in enumerate(row_labels):
        cells = [f'<th style="{_TD};font-family:monospace;background:#fff8e6">{escape(token_label(r))}</th>']
        for j in range(M.shape[1]):
            v = M[i, j]
            sep = "border-left:2px solid #222;" if j == n_prompt else ""
            if not math.isfinite(v):
                cells.append(f'<td style="{_TD};{sep}background:rgb{NAN_RGB}"></td>')
                continue
            color = "#fff" if abs(v) > 0.6 * vm else "#111"
            cells.append(f'<td style="{_TD};{sep}background:{value_color(v, vm)};color:{color}" '
                         f'title="{escape(token_label(r))} &lt;- {escape(token_label(col_labels[j]))}: {v:.6g}">'
                         f"{v:.2g}</td>")
        info = row_info[i] if row_info else {}
        cells += [f'<td style="{_TD};text-align:right">{escape(info.get(k, ""))}</td>' for k in info_cols]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts = []
    if title:
        parts.append(f"<h3 style='font-family:sans-serif'>{escape(title)}</h3>")
    if text is not None:
        parts.append(f'<p style="font-family:monospace;white-space:pre-wrap">{escape(text)}</p>')
    parts.append('<table class="fg-generation" style="border-collapse:collapse;font-family:sans-serif">'
                 f"<tr>{''.join(head)}</tr>{''.join(rows)}</table>")
    body = "\n".join(parts)
    if not standalone:
        return f'<div class="finegrain-generation">{body}</div>'
    return page(body, title or "finegrain")


__all__ = ["generation_html", "plot_generation_matrix", "token_label"]
