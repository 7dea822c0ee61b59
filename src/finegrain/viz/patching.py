"""Pictures of activation patching: a component x position heatmap of normalised effects, and beside it,
when attribution patching was run too, its estimate and a scatter of estimate against exact effect."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finegrain.viz.plots import figure, save_figure


def plain(text) -> str:
    """A label as literal text: matplotlib would read ``$...$`` in a token as mathtext."""
    return str(text).replace("$", r"\$")


def _heat(fig, ax, M: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, vmax: float) -> None:
    im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.grid(False)
    ax.set_xticks(np.arange(len(cols)))
    rot = len(cols) > 4
    ax.set_xticklabels([plain(c) for c in cols], rotation=60 if rot else 0, ha="right" if rot else "center", fontsize=8)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([plain(r) for r in rows], fontsize=8)
    if M.size <= 256:
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                if np.isfinite(M[i, j]):
                    ax.text(j, i, f"{M[i, j] + 0.0:.2f}".replace("-0.00", "0.00"), ha="center", va="center", fontsize=7,
                            color="#fff" if abs(M[i, j]) > 0.6 * vmax else "#000")
    ax.set_title(plain(title), fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.85)


def plot_patching(
    normalised,
    rows: Sequence[str],
    columns: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    attribution=None,
) -> Path:
    """Heatmap of normalised patching effects (rows = components, columns = positions) on a diverging scale
    centred at 0 (at least [-1, 1]); with ``attribution`` (same shape) a second heatmap and a scatter of the
    estimate against the exact effect."""
    M = np.asarray(normalised, dtype=float)
    if M.ndim != 2 or M.shape != (len(rows), len(columns)):
        raise ValueError(f"effects of shape {M.shape} for {len(rows)} rows x {len(columns)} columns")
    A = None if attribution is None else np.asarray(attribution, dtype=float)
    finite = [x[np.isfinite(x)] for x in (M, A) if x is not None]
    vmax = max([1.0] + [float(np.abs(f).max()) for f in finite if f.size])
    w = min(max(4.0, 0.5 * len(columns) + 3.0), 14.0)
    h = min(max(3.0, 0.32 * len(rows) + 1.8), 14.0)
    if A is None:
        with figure((w, h)) as fig:
            _heat(fig, fig.subplots(), M, rows, columns, title or "patching effect (normalised)", vmax)
            return save_figure(fig, path)
    with figure((w + 4.0, 2 * h)) as fig:
        grid = fig.add_gridspec(2, 2, width_ratios=[w, 4.0])
        _heat(fig, fig.add_subplot(grid[0, 0]), M, rows, columns, title or "patching effect (normalised)", vmax)
        _heat(fig, fig.add_subplot(grid[1, 0]), A, rows, columns, "attribution patching estimate", vmax)
        ax = fig.add_subplot(grid[:, 1])
        ok = np.isfinite(M) & np.isfinite(A)
        ax.scatter(M[ok], A[ok], s=12, alpha=0.7)
        ax.plot([-vmax, vmax], [-vmax, vmax], color="#888", lw=0.8, ls="--")
        ax.set_aspect("equal")
        ax.set_xlabel("exact (activation patching)")
        ax.set_ylabel("estimate (attribution patching)")
        ax.set_title("agreement", fontsize=10)
        return save_figure(fig, path)
