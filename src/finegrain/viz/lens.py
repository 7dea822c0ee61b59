"""Pictures of the logit lens (a layer x position grid of top tokens), of direct logit attribution (bars per
block, a block x head heatmap) and of attention patterns (one heatmap per head)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finegrain.viz.patching import plain
from finegrain.viz.plots import figure, save_figure


def plot_token_grid(
    values,
    labels: Sequence[Sequence[str]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    colorbar_label: str = "",
) -> Path:
    """A rows x columns grid coloured by ``values`` (in [0, 1], e.g. probabilities) with a text label in each
    cell (the logit lens: layers x positions, the top-1 token)."""
    V = np.asarray(values, dtype=float)
    if V.shape != (len(row_labels), len(col_labels)) or len(labels) != len(row_labels):
        raise ValueError(f"values of shape {V.shape} for {len(row_labels)} rows x {len(col_labels)} columns")
    w = min(max(5.0, 0.8 * len(col_labels) + 2.5), 24.0)
    h = min(max(3.0, 0.4 * len(row_labels) + 1.8), 16.0)
    with figure((w, h)) as fig:
        ax = fig.subplots()
        ax.grid(False)
        im = ax.imshow(V, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        for i, row in enumerate(labels):
            for j, text in enumerate(row):
                t = plain(repr(text)[1:-1])
                ax.text(j, i, t if len(t) <= 8 else t[:7] + "~", ha="center", va="center", fontsize=7,
                        color="#fff" if np.isfinite(V[i, j]) and V[i, j] > 0.6 else "#000")
        ax.set_xticks(np.arange(len(col_labels)))
        ax.set_xticklabels([plain(c) for c in col_labels], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(row_labels)))
        ax.set_yticklabels([plain(r) for r in row_labels], fontsize=8)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        if colorbar_label:
            cb.set_label(plain(colorbar_label))
        if title:
            ax.set_title(plain(title), fontsize=10)
        return save_figure(fig, path)


def plot_dla(
    components: Sequence[str],
    values: Sequence[float],
    heads: Sequence[Sequence[float]] | None,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Direct logit attribution: one bar per component (embedding, each block's attention and MLP) and, with
    ``heads`` (blocks x heads), a heatmap of the heads' terms on a diverging scale."""
    vals = np.asarray(values, dtype=float)
    H = None if not heads else np.asarray(heads, dtype=float)
    w = min(max(5.0, 0.35 * len(components) + 2.5), 16.0)
    with figure((w + (4.5 if H is not None else 0), 3.8)) as fig:
        axes = fig.subplots(1, 2 if H is not None else 1, squeeze=False,
                            width_ratios=[w, 4.5] if H is not None else None)[0]
        ax = axes[0]
        ax.bar(np.arange(len(vals)), vals, color=["#b2182b" if v >= 0 else "#2166ac" for v in vals])
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xticks(np.arange(len(vals)))
        ax.set_xticklabels([plain(c) for c in components], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("logit contribution")
        if title:
            ax.set_title(plain(title), fontsize=10)
        if H is not None:
            ax = axes[1]
            ax.grid(False)
            m = max(float(np.abs(H).max()), 1e-12)
            im = ax.imshow(H, cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto", interpolation="nearest")
            ax.set_xlabel("head")
            ax.set_yticks(np.arange(H.shape[0]))
            ax.set_yticklabels([f"layer.{i + 1}.attn" for i in range(H.shape[0])], fontsize=8)
            ax.set_xticks(np.arange(H.shape[1]))
            ax.set_title("heads", fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.85)
        return save_figure(fig, path)


def plot_attention(
    patterns: Sequence[Sequence[np.ndarray]],
    tokens: Sequence[str],
    layer_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Attention heatmaps: ``patterns[row][head]`` is a ``[query, key]`` matrix; rows are layers, columns heads.
    Token labels are drawn on the outer axes when the sentence is short enough to read them."""
    rows, cols = len(patterns), max(len(r) for r in patterns)
    n = len(tokens)
    cell = 2.2 if n <= 16 else 1.6
    with figure((min(1.0 + cols * cell, 30.0), min(0.8 + rows * cell, 40.0))) as fig:
        axes = fig.subplots(rows, cols, squeeze=False)
        labelled = n <= 24
        for i, row in enumerate(patterns):
            for j in range(cols):
                ax = axes[i][j]
                ax.grid(False)
                if j >= len(row):
                    ax.set_axis_off()
                    continue
                ax.imshow(np.asarray(row[j], dtype=float), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_xticks(np.arange(n) if labelled and i == rows - 1 else [])
                ax.set_yticks(np.arange(n) if labelled and j == 0 else [])
                if labelled and i == rows - 1:
                    ax.set_xticklabels([plain(t) for t in tokens], rotation=90, fontsize=6)
                if labelled and j == 0:
                    ax.set_yticklabels([plain(t) for t in tokens], fontsize=6)
                if i == 0:
                    ax.set_title(f"head {j}", fontsize=8)
                if j == 0:
                    ax.set_ylabel(plain(layer_labels[i]), fontsize=8)
        if title:
            fig.suptitle(plain(title), fontsize=10)
        return save_figure(fig, path)
