"""Pictures of interventions: in-model ablation curves, single-unit sweeps, causal mediation
heatmaps, and steering against random units. Every function takes plain data and a path, draws on
its own Agg figure (:func:`finegrain.viz.plots.figure`) and returns the PNG path."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from finegrain.viz.plots import CURVE_COLORS, figure, save_figure


def _plain(text) -> str:
    """A label as literal text (matplotlib would read ``$...$`` as mathtext)."""
    return str(text).replace("$", r"\$")


def plot_model_ablation(ks: Sequence[int], scores: Mapping[str, Sequence[float]], baseline: float,
                        path: str | os.PathLike, objective: str = "score",
                        spread: Mapping[str, Sequence[float]] | None = None, title: str = "") -> Path:
    """The model's own score after ablating the top / random / bottom ``k`` neurons of a ranking
    (random: mean over draws, shaded ± one standard deviation)."""
    with figure((5.6, 3.8)) as fig:
        ax = fig.subplots()
        for mode, ys in scores.items():
            color = CURVE_COLORS.get(mode)
            ax.plot(ks, ys, marker="o", color=color, label=f"{mode} k ablated")
            sd = (spread or {}).get(mode)
            if sd:
                lo, hi = np.asarray(ys) - np.asarray(sd), np.asarray(ys) + np.asarray(sd)
                ax.fill_between(ks, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.axhline(baseline, color="#444", ls="--", lw=1, label="no ablation")
        ax.set_xlabel("k neurons ablated")
        ax.set_ylabel(_plain(objective))
        ax.set_title(_plain(title or "ablation inside the model"))
        ax.legend(fontsize=8)
        return save_figure(fig, path)


def plot_sweep(units: Sequence[int], damage: Sequence[float], path: str | os.PathLike, layer: str = "",
               objective: str = "score", label_top: int = 5) -> Path:
    """Damage (drop of the objective) from ablating each unit of a layer alone; the strongest units
    are labelled."""
    d = np.asarray(damage, dtype=float)
    with figure((6.4, 3.6)) as fig:
        ax = fig.subplots()
        ax.bar(units, d, width=1.0, color=np.where(d >= 0, "#b2182b", "#2166ac"))
        for i in np.argsort(-d, kind="stable")[:label_top]:
            ax.annotate(str(units[i]), (units[i], d[i]), fontsize=7, ha="center", va="bottom")
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xlabel(_plain(f"unit of {layer}" if layer else "unit"))
        ax.set_ylabel(_plain(f"damage to {objective}"))
        ax.set_title("single-unit ablation sweep")
        return save_figure(fig, path)


def plot_effect_heatmap(matrix, row_labels: Sequence[str], path: str | os.PathLike, xlabel: str = "",
                        title: str = "", caveat: str = "") -> Path:
    """Rows of effects (layers x neuron rank, layers x heads) on a diverging scale centred at 0; a
    caveat, when given, is printed under the title."""
    M = np.asarray(matrix, dtype=float)
    finite = M[np.isfinite(M)]
    vmax = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-12)
    w = min(max(4.5, M.shape[1] * 0.15 + 2.5), 14.0)
    h = min(max(3.0, M.shape[0] * 0.35 + 1.8), 12.0)
    with figure((w, h)) as fig:
        ax = fig.subplots()
        im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.grid(False)
        ax.set_yticks(range(M.shape[0]))
        ax.set_yticklabels([_plain(r) for r in row_labels], fontsize=7)
        ax.set_xlabel(_plain(xlabel))
        ax.set_title(_plain(title) + (f"\n{_plain(caveat)}" if caveat else ""), fontsize=9)
        fig.colorbar(im, ax=ax)
        return save_figure(fig, path)


def plot_control(measures: Mapping[str, tuple[float, Sequence[float]]], path: str | os.PathLike,
                 title: str = "", verdict: str = "") -> Path:
    """For each measure (e.g. "concept log-prob gain"): the edited units' value (a red diamond) over
    the values of the random unit sets of the same size (grey dots, their mean as a bar)."""
    names = list(measures)
    with figure((max(4.0, 1.8 * len(names) + 2.0), 3.8)) as fig:
        ax = fig.subplots()
        rng = np.random.default_rng(0)  # jitter only
        for i, name in enumerate(names):
            value, random = measures[name]
            r = np.asarray(random, dtype=float)
            if r.size:
                ax.scatter(i + rng.uniform(-0.12, 0.12, r.size), r, color="#7f7f7f", s=14, alpha=0.8,
                           label="random units" if i == 0 else None)
                ax.hlines(r.mean(), i - 0.2, i + 0.2, color="#444", lw=2)
            ax.scatter([i], [value], marker="D", color="#b2182b", s=50, zorder=3,
                       label="edited units" if i == 0 else None)
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_plain(n) for n in names], fontsize=8)
        ax.set_ylabel("change (nats)")
        ax.set_title(_plain(title or "steering vs random units") + (f"\n{_plain(verdict)}" if verdict else ""),
                     fontsize=9)
        ax.legend(fontsize=8)
        return save_figure(fig, path)


def plot_expert_ap(ap_all: Sequence[float], ap_top: Sequence[float], positive_fraction: float,
                   path: str | os.PathLike, title: str = "") -> Path:
    """Histogram of every unit's AP as a concept detector, the experts' APs marked, and the positive
    fraction (about a random unit's AP) as a line (Suau et al. 2020)."""
    with figure((5.6, 3.6)) as fig:
        ax = fig.subplots()
        ax.hist(np.asarray(ap_all, dtype=float), bins=40, color="#7f7f7f", alpha=0.8, label="all units")
        for i, a in enumerate(ap_top):
            ax.axvline(a, color="#b2182b", lw=1, alpha=0.8, label="experts" if i == 0 else None)
        if np.isfinite(positive_fraction):
            ax.axvline(positive_fraction, color="#222", ls="--", lw=1, label="positive fraction")
        ax.set_xlabel("average precision")
        ax.set_ylabel("units")
        ax.set_title(_plain(title or "expert units"))
        ax.legend(fontsize=8)
        return save_figure(fig, path)


__all__ = ["plot_control", "plot_expert_ap", "plot_effect_heatmap", "plot_model_ablation", "plot_sweep"]
