"""Output: terminal tables, self-contained HTML word heatmaps, interaction heatmaps (PNG), JSON."""

from __future__ import annotations

import html as _html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def text_table(att) -> str:
    """Word table with scores and a bar, plus f(x), f(x'), delta and evaluations."""
    scores = np.asarray(att.word_scores, dtype=float)
    top = float(np.max(np.abs(scores))) if len(scores) else 0.0
    width = max([4] + [len(w) for w in att.words])
    lines = [f"method={att.method}  target={att.target}",
             f"{'word'.ljust(width)}  {'score':>10}  "]
    for w, s in zip(att.words, scores):
        n = int(round(10 * abs(s) / top)) if top > 0 else 0
        bar = ("+" if s >= 0 else "-") * n
        lines.append(f"{w.ljust(width)}  {s:>10.4g}  {bar}")
    lines.append(f"sum={_fmt(float(scores.sum()))}  f(x)={_fmt(att.f_x)}  f(x')={_fmt(att.f_baseline)}  "
                 f"f(x)-f(x')={_fmt(att.f_x - att.f_baseline)}  delta={_fmt(att.delta)}  "
                 f"evaluations={att.n_evaluations}")
    return "\n".join(lines)


def interaction_table(inter, k: int = 10) -> str:
    lines = [f"method={inter.method}  target={inter.target}  f(x)={_fmt(inter.f_x)}  "
             f"f(x')={_fmt(inter.f_baseline)}  delta={_fmt(inter.delta)}  evaluations={inter.n_evaluations}",
             "main effects:"]
    width = max([4] + [len(w) for w in inter.words])
    for w, s in zip(inter.words, inter.main):
        lines.append(f"  {w.ljust(width)}  {s:>10.4g}")
    if inter.sets:
        lines.append("sets (ArchAttribute):")
        for s, sc in zip(inter.sets, inter.set_scores):
            lines.append(f"  {{{', '.join(inter.words[i] for i in s)}}}  {sc:.4g}")
    lines.append("strongest pairs:")
    for a, b, v in inter.pairs(k):
        lines.append(f"  {a} x {b}  {v:.4g}")
    return "\n".join(lines)


def _color(s: float, top: float) -> str:
    a = min(1.0, abs(s) / top) if top > 0 else 0.0
    return f"rgba(220,40,40,{a:.2f})" if s >= 0 else f"rgba(40,90,220,{a:.2f})"


def html_heatmap(atts: Sequence, title: str = "finegrain attributions") -> str:
    """Self-contained HTML: one line per example, words shaded by score (red +, blue -)."""
    rows = []
    for att in atts:
        top = float(np.max(np.abs(att.word_scores))) if len(att.word_scores) else 0.0
        spans = " ".join(
            f'<span title="{s:.4g}" style="background:{_color(s, top)};padding:2px;border-radius:3px">'
            f"{_html.escape(w)}</span>" for w, s in zip(att.words, att.word_scores))
        meta = (f"{_html.escape(att.method)} | {_html.escape(att.target)} | f(x)={_fmt(att.f_x)} "
                f"f(x')={_fmt(att.f_baseline)} delta={_fmt(att.delta)} evals={att.n_evaluations}")
        rows.append(f'<div style="margin:8px 0"><div style="font-size:11px;color:#666">{meta}</div>'
                    f'<div style="font-size:16px;line-height:1.8">{spans}</div></div>')
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif'><h3>{_html.escape(title)}</h3>{''.join(rows)}</body></html>")


def save_interaction_png(inter, path: str | Path) -> Path:
    """Heatmap image of an interaction matrix (diverging colours, symmetric scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(inter.matrix, dtype=float)
    lim = float(np.max(np.abs(m))) or 1.0
    n = len(inter.words)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 1 + 0.45 * n))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(n), inter.words, rotation=60, ha="right")
    ax.set_yticks(range(n), inter.words)
    ax.set_title(inter.method)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_json(items, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps([x.to_dict() for x in items], indent=1))
    return path
