"""Token heatmaps (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding Recurrent
Networks"): each word's background shows a neuron's activation (or an attribution score) on a
red (positive) / white (zero) / blue (negative) scale.

Outputs are self-contained: HTML fragments with inline styles and native ``title`` tooltips (no
scripts, no stylesheets, no fonts to fetch) and standalone SVG, so they embed in an offline report.

Tokens are joined by ``sep``: a space between words (the default), nothing between the characters of
a character model, whose tokens include the spaces (Karpathy et al.'s character heatmaps); with
``sep=""`` the tokens are drawn edge to edge.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from finegrain.errors import ParameterError
from finegrain.viz.html import escape, page, write_html

# ColorBrewer RdBu end points; white in the middle.
POS_RGB = (178, 24, 43)
NEG_RGB = (33, 102, 172)
NAN_RGB = (224, 224, 224)
FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"


def value_rgb(value: float, vmax: float) -> tuple[int, int, int]:
    """Colour of ``value`` on a symmetric scale [-vmax, vmax]: white at 0, saturating at |vmax|.
    Intensity (distance from white) grows monotonically with |value|."""
    if value is None or not math.isfinite(value):
        return NAN_RGB
    t = min(abs(value) / vmax, 1.0) if vmax > 0 else 0.0
    end = POS_RGB if value >= 0 else NEG_RGB
    return tuple(int(round(255 + (c - 255) * t)) for c in end)  # type: ignore[return-value]


def value_color(value: float, vmax: float) -> str:
    r, g, b = value_rgb(value, vmax)
    return f"rgb({r},{g},{b})"


def _text_color(value: float, vmax: float) -> str:
    t = abs(value) / vmax if (vmax > 0 and value is not None and math.isfinite(value)) else 0.0
    return "#fff" if t > 0.6 else "#111"


def _normalise(words_list, values_list) -> tuple[list[list[str]], list[list[float]]]:
    """Accept one sentence (list of words + list of values) or many (lists of lists)."""
    if len(words_list) and isinstance(words_list[0], str):
        words_list, values_list = [words_list], [values_list]
    if len(words_list) != len(values_list):
        raise ParameterError(f"{len(words_list)} sentences but {len(values_list)} value lists")
    W, V = [], []
    for i, (ws, vs) in enumerate(zip(words_list, values_list)):
        vs = np.asarray(vs, dtype=np.float64).ravel()
        if len(ws) != len(vs):
            raise ParameterError(f"sentence {i}: {len(ws)} words but {len(vs)} values")
        W.append([str(w) for w in ws])
        V.append([float(v) for v in vs])
    return W, V


def _vmax(values: list[list[float]], vmax: float | None) -> float:
    if vmax is not None:
        if not vmax > 0:
            raise ParameterError(f"vmax must be > 0, got {vmax}")
        return float(vmax)
    finite = [abs(v) for vs in values for v in vs if math.isfinite(v)]
    m = max(finite, default=0.0)
    return m if m > 0 else 1.0


def _fmt(v: float, fmt: str) -> str:
    return format(v, fmt) if math.isfinite(v) else "nan"


def _legend_html(vmax: float, value_name: str, fmt: str) -> str:
    grad = f"linear-gradient(to right, {value_color(-vmax, vmax)}, #fff, {value_color(vmax, vmax)})"
    return (
        '<div style="display:flex;align-items:center;gap:6px;font-size:11px;color:#555;margin:2px 0 6px 0">'
        f"<span>{escape(_fmt(-vmax, fmt))}</span>"
        f'<span style="display:inline-block;width:120px;height:10px;border:1px solid #ccc;background:{grad}"></span>'
        f"<span>{escape(_fmt(vmax, fmt))}</span><span>{escape(value_name)}</span></div>"
    )


def _check_sep(sep) -> str:
    if not isinstance(sep, str):
        raise ParameterError(f"sep must be a string (' ' between words, '' between characters), got {sep!r}")
    return sep


def _tooltip_name(token: str) -> str:
    """A token as its tooltip names it: a whitespace token (a character model's space) is quoted, since a
    bare space or newline reads as nothing."""
    return repr(token) if token.isspace() or token == "" else token


def _token_html(word: str, value: float, vmax: float, value_name: str, fmt: str, outline: bool,
                compact: bool = False) -> str:
    border = "outline:2px solid #222;" if outline else ""
    # edge to edge for characters (compact): padding would split the letters of a word apart
    box = "padding:1px 0" if compact else "padding:1px 3px;border-radius:3px"
    return (
        f'<span class="fg-tok" title="{escape(_tooltip_name(word))}: {escape(value_name)} = '
        f'{escape(_fmt(value, fmt))}" '
        f'data-value="{escape(_fmt(value, ".6g"))}" style="background:{value_color(value, vmax)};'
        f"color:{_text_color(value, vmax)};{box};{border}"
        f'white-space:pre">{escape(word)}</span>'
    )


def heatmap_html(
    words_list: Sequence[Sequence[str]] | Sequence[str],
    values_list: Sequence[Sequence[float]] | Sequence[float],
    title: str | None = None,
    vmax: float | None = None,
    value_name: str = "activation",
    captions: Sequence[str] | None = None,
    highlight: Sequence[int | None] | None = None,
    legend: bool = True,
    fmt: str = ".3g",
    sep: str = " ",
) -> str:
    """Karpathy et al. (2015)-style heatmap of sentences as a self-contained HTML fragment.

    ``words_list[i][j]`` is coloured by ``values_list[i][j]`` (activations of one neuron, or per-token
    attribution scores; one sentence may be passed as a flat list). The scale is symmetric,
    ``[-vmax, vmax]`` with ``vmax`` = max |value| by default, shared by all sentences. Hovering a
    token shows its value. ``captions`` label the sentences (e.g. the activation of the top word);
    ``highlight[i]`` outlines one word per sentence. ``sep`` goes between the tokens: ``" "`` for
    words, ``""`` for the characters of a character model (its spaces are tokens with their own
    colour; the tokens are then drawn edge to edge).
    """
    sep = _check_sep(sep)
    W, V = _normalise(words_list, values_list)
    vm = _vmax(V, vmax)
    if captions is not None and len(captions) != len(W):
        raise ParameterError(f"{len(captions)} captions for {len(W)} sentences")
    if highlight is not None and len(highlight) != len(W):
        raise ParameterError(f"{len(highlight)} highlight positions for {len(W)} sentences")
    parts = [f'<div class="fg-heatmap" style="font-family:{FONT};font-size:13px;line-height:1.9">']
    if title:
        parts.append(f'<div style="font-weight:600;margin-bottom:2px">{escape(title)}</div>')
    if legend:
        parts.append(_legend_html(vm, value_name, fmt))
    for i, (ws, vs) in enumerate(zip(W, V)):
        hl = highlight[i] if highlight is not None else None
        row = ['<div class="fg-sent" style="margin:2px 0">']
        if captions is not None:
            row.append(
                f'<span style="color:#666;font-size:11px;display:inline-block;min-width:5em">'
                f"{escape(captions[i])}</span> "
            )
        # the separator between the spans keeps words separate when the text is copied; characters carry
        # their own spaces, so copying a character heatmap gives back the text
        row.append(sep.join(_token_html(w, v, vm, value_name, fmt, j == hl, compact=sep == "")
                            for j, (w, v) in enumerate(zip(ws, vs))))
        row.append("</div>")
        parts.append("".join(row))
    parts.append("</div>")
    return "\n".join(parts)


def heatmap_multi_html(
    words: Sequence[str],
    values_by_row: Mapping[str, Sequence[float]],
    title: str | None = None,
    vmax: float | None = None,
    shared_scale: bool = True,
    value_name: str = "activation",
    fmt: str = ".3g",
) -> str:
    """One sentence, many neurons (or attribution methods): a table with one coloured row per key of
    ``values_by_row``. With ``shared_scale=False`` each row is scaled by its own max |value|."""
    words = [str(w) for w in words]
    rows = {str(k): [float(x) for x in np.asarray(v, dtype=np.float64).ravel()] for k, v in values_by_row.items()}
    for k, v in rows.items():
        if len(v) != len(words):
            raise ParameterError(f"row {k!r}: {len(v)} values for {len(words)} words")
    vm_all = _vmax(list(rows.values()), vmax)
    parts = [f'<div class="fg-heatmap-multi" style="font-family:{FONT};font-size:13px;overflow-x:auto">']
    if title:
        parts.append(f'<div style="font-weight:600;margin-bottom:2px">{escape(title)}</div>')
    if shared_scale:
        parts.append(_legend_html(vm_all, value_name, fmt))
    parts.append('<table style="border-collapse:separate;border-spacing:2px">')
    parts.append(
        "<tr><th></th>" + "".join(f'<th style="font-weight:400;color:#555">{escape(w)}</th>' for w in words) + "</tr>"
    )
    for k, vs in rows.items():
        vm = vm_all if shared_scale else _vmax([vs], vmax)
        cells = "".join(
            f'<td title="{escape(k)} | {escape(w)}: {escape(value_name)} = {escape(_fmt(v, fmt))}" '
            f'data-value="{escape(_fmt(v, ".6g"))}" style="background:{value_color(v, vm)};'
            f'color:{_text_color(v, vm)};padding:2px 4px;text-align:center;border-radius:3px">{escape(w)}</td>'
            for w, v in zip(words, vs)
        )
        parts.append(f'<tr><th style="text-align:right;font-weight:400;padding-right:6px">{escape(k)}</th>{cells}</tr>')
    parts.append("</table></div>")
    return "\n".join(parts)


def token_layout(
    tokens_list: Sequence[Sequence[str]], width: float, sep: str = " ", inner: float = 0.7, gap: float = 0.35
) -> tuple[list[list[tuple[int, float, float]]], int]:
    """Where each token of each sentence goes when the lines are ``width`` character cells wide:
    ``([(line, x, box width)] per sentence, number of lines)``, in cells of one monospace character.
    Every sentence starts a new line. With ``sep=" "`` a token's box is its characters plus
    ``inner`` and boxes are ``gap`` apart; with ``sep=""`` (characters) boxes are edge to edge and a
    line wraps before a word (the run up to the next space) that would not fit, not inside it."""
    compact = _check_sep(sep) == ""
    inner, gap = (0.0, 0.0) if compact else (inner, gap)
    out, line = [], 0
    for ws in tokens_list:
        x, row = 0.0, []
        for j, w in enumerate(ws):
            tw = max(1, len(w)) + inner
            need = tw
            if compact and not w.isspace() and (j == 0 or ws[j - 1].isspace()):
                need = sum(max(1, len(t)) for t in _word_run(ws, j))
            if x + need > width and x > 0:
                x, line = 0.0, line + 1
            row.append((line, x, tw))
            x += tw + gap
        out.append(row)
        line += 1
    return out, line


def heatmap_svg(
    words_list: Sequence[Sequence[str]] | Sequence[str],
    values_list: Sequence[Sequence[float]] | Sequence[float],
    title: str | None = None,
    vmax: float | None = None,
    value_name: str = "activation",
    font_size: int = 14,
    width: int = 800,
    fmt: str = ".3g",
    sep: str = " ",
) -> str:
    """The same heatmap as standalone SVG (tokens wrap at ``width`` px, :func:`token_layout`;
    ``<title>`` tooltips). ``sep=""`` (characters) draws the tokens edge to edge."""
    compact = _check_sep(sep) == ""
    W, V = _normalise(words_list, values_list)
    vm = _vmax(V, vmax)
    char_w = 0.62 * font_size  # monospace advance
    line_h = int(font_size * 1.8)
    pad = 6
    inner = 0.0 if compact else 6 / char_w
    items: list[str] = []
    top = pad
    if title:
        items.append(
            f'<text x="{pad}" y="{top + font_size}" font-size="{font_size}" font-weight="bold">{escape(title)}</text>'
        )
        top += line_h
    layout, n_lines = token_layout(W, (width - 2 * pad) / char_w, sep, inner=inner, gap=3 / char_w)
    for ws, vs, places in zip(W, V, layout):
        for w, v, (line, cx, cw) in zip(ws, vs, places):
            x, y, tw = pad + cx * char_w, top + line * (line_h + 4), cw * char_w
            items.append(
                f'<g><title>{escape(_tooltip_name(w))}: {escape(value_name)} = {escape(_fmt(v, fmt))}</title>'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{tw:.1f}" height="{line_h - 4}" rx="{0 if compact else 3}" '
                f'fill="{value_color(v, vm)}"/>'
                f'<text x="{x + inner * char_w / 2:.1f}" y="{y + font_size + 1:.1f}" font-size="{font_size}" '
                f'fill="{_text_color(v, vm)}" xml:space="preserve">{escape(w)}</text></g>'
            )
    height = int(top + n_lines * (line_h + 4) + pad)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{escape(FONT)}">'
        + "".join(items)
        + "</svg>"
    )


def _word_run(tokens: Sequence[str], start: int) -> list[str]:
    """The tokens from ``start`` up to (not including) the next whitespace token."""
    out = []
    for t in tokens[start:]:
        if t.isspace():
            break
        out.append(t)
    return out


def save_html(fragment: str, path: str | os.PathLike, title: str = "finegrain heatmap") -> Path:
    """Wrap an HTML fragment in a minimal standalone page and write it atomically."""
    return write_html(path, page(fragment, title, body_style="margin:16px"))


def save_svg(svg: str, path: str | os.PathLike) -> Path:
    """Write an SVG string atomically."""
    return write_html(path, svg)
