"""Pictures of attributions, from plain data: word heatmaps as PNG (Karpathy et al. 2015-style coloured
words, one row per example, Captum's visualisation-record layout), bar charts of method comparisons
and faithfulness curves (DeYoung et al. 2020).

Every function writes a PNG through :func:`finegrain.viz.plots.save_figure` (no pyplot, no backend
switch) and returns its path. Colours follow :func:`finegrain.viz.heatmap.value_rgb` (red positive,
blue negative, white zero) so the PNGs match the HTML heatmaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from finegrain.errors import ParameterError
from finegrain.viz.heatmap import value_rgb
from finegrain.viz.plots import figure, save_figure

_CHAR_W = 0.105  # inches per character of the 10-pt monospace font
_ROW_H = 0.42


def _rgb(value: float, vmax: float) -> tuple[float, float, float]:
    return tuple(c / 255 for c in value_rgb(value, vmax))  # type: ignore[return-value]


def plot_word_heatmap(
    words_list: Sequence[Sequence[str]],
    scores_list: Sequence[Sequence[float]],
    path: str | os.PathLike,
    captions: Sequence[str] | None = None,
    title: str = "",
    vmax: float | None = None,
    max_chars: int = 110,
    svg: bool = False,
) -> Path:
    """Words coloured by their scores, one example per row (``captions[i]`` above row ``i``: e.g.
    predicted / true label and the total), on one symmetric scale shared by all rows; long texts wrap
    at ``max_chars`` characters."""
    if len(words_list) != len(scores_list):
        raise ParameterError(f"{len(words_list)} texts but {len(scores_list)} score lists")
    if captions is not None and len(captions) != len(words_list):
        raise ParameterError(f"{len(captions)} captions for {len(words_list)} texts")
    rows: list[tuple[str, list[tuple[str, float]]]] = []
    for i, (ws, ss) in enumerate(zip(words_list, scores_list)):
        ss = [float(s) for s in np.asarray(ss, dtype=float).ravel()]
        if len(ws) != len(ss):
            raise ParameterError(f"text {i}: {len(ws)} words but {len(ss)} scores")
        line: list[tuple[str, float]] = []
        width = 0
        cap = captions[i] if captions is not None else ""
        for w, s in zip(ws, ss):
            if line and width + len(w) + 1 > max_chars:
                rows.append((cap, line))
                cap, line, width = "", [], 0
            line.append((str(w), s))
            width += len(str(w)) + 1
        rows.append((cap, line))
    finite = [abs(s) for _, line in rows for _, s in line if math.isfinite(s)]
    vm = float(vmax) if vmax else (max(finite, default=0.0) or 1.0)
    n_chars = max([sum(len(w) + 1 for w, _ in line) for _, line in rows] + [20])
    n_lines = sum(2 if cap else 1 for cap, _ in rows)
    fig_w = min(16.0, 0.4 + n_chars * _CHAR_W)
    fig_h = 0.5 + n_lines * _ROW_H + (0.3 if title else 0)
    with figure((fig_w, fig_h)) as fig:
        fig.set_layout_engine("none")  # the words are placed by hand in inch coordinates
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_xlim(0, fig_w)
        ax.set_ylim(fig_h, 0)
        y = 0.25
        if title:
            ax.text(0.15, y, title, fontsize=11, fontweight="bold", va="center")
            y += 0.35
        for cap, line in rows:
            if cap:
                ax.text(0.15, y, cap, fontsize=8.5, color="#555555", va="center")
                y += _ROW_H
            x = 0.2
            for w, s in line:
                r, g, b = _rgb(s, vm)
                dark = (0.299 * r + 0.587 * g + 0.114 * b) < 0.55
                ax.text(x, y, w, family="monospace", fontsize=10, va="center", color="white" if dark else "#111111",
                        bbox={"facecolor": (r, g, b), "edgecolor": "none", "boxstyle": "round,pad=0.15"})
                x += (len(w) + 1) * _CHAR_W
            y += _ROW_H
        return save_figure(fig, path, svg=svg)


def plot_method_comparison(rows: Sequence[Mapping], path: str | os.PathLike,
                           metrics: Sequence[str] = ("comprehensiveness", "sufficiency"),
                           title: str = "Faithfulness of attribution methods", svg: bool = False) -> Path:
    """Grouped bars of ``metrics`` per method (rows as returned by ``evaluate_methods``)."""
    if not rows:
        raise ParameterError("no methods to plot")
    names = [str(r["method"]) for r in rows]
    present = [m for m in metrics if any(isinstance(r.get(m), int | float) for r in rows)]
    if not present:
        raise ParameterError(f"none of the metrics {list(metrics)} is in the rows")
    with figure((max(4.0, 1.2 * len(names) + 1.5), 3.2)) as fig:
        ax = fig.subplots()
        w = 0.8 / len(present)
        x = np.arange(len(names))
        for k, m in enumerate(present):
            vals = [float(r[m]) if isinstance(r.get(m), int | float) else np.nan for r in rows]
            ax.bar(x + (k - (len(present) - 1) / 2) * w, vals, w, label=m)
        ax.set_xticks(x, names, rotation=20, ha="right")
        ax.axhline(0, color="#444444", lw=0.8)
        ax.set_title(title)
        ax.legend()
        return save_figure(fig, path, svg=svg)


def plot_faithfulness_bins(bins: Sequence[float], comprehensiveness: np.ndarray, sufficiency: np.ndarray,
                           path: str | os.PathLike, title: str = "ERASER faithfulness", svg: bool = False) -> Path:
    """Mean comprehensiveness and sufficiency (over examples) per top-k% bin."""
    comp = np.asarray(comprehensiveness, dtype=float).reshape(-1, len(bins))
    suff = np.asarray(sufficiency, dtype=float).reshape(-1, len(bins))
    with figure((4.8, 3.2)) as fig:
        ax = fig.subplots()
        ax.plot(list(bins), comp.mean(0), "o-", color="#b2182b", label="comprehensiveness (higher: faithful)")
        ax.plot(list(bins), suff.mean(0), "s-", color="#2166ac", label="sufficiency (lower: faithful)")
        ax.set_xlabel("top-k% words")
        ax.set_ylabel("f(x) - f(perturbed)")
        ax.set_title(title)
        ax.legend()
        return save_figure(fig, path, svg=svg)


__all__ = ["plot_faithfulness_bins", "plot_method_comparison", "plot_word_heatmap"]
