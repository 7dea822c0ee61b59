"""Plots of the probing, ranking and probe-ablation results (``plot()`` of their result objects).

Drawn on :func:`finegrain.viz.figure` (an Agg canvas, no pyplot, no backend switch) and written with
:func:`finegrain.viz.save_figure`. Layer-wise accuracy and selectivity use :func:`plot_layer_accuracy`
and :func:`plot_selectivity` of :mod:`finegrain.viz.plots`.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np

from finegrain.viz.plots import CURVE_COLORS, figure, save_figure

_MODE_TITLES = {"keep": "keep k, the rest at {fill}", "remove": "remove k (set to {fill})",
                "retrain": "retrained on the k"}


def _layer_colors(layers: list[str]) -> dict[str, str]:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {lay: cycle[i % len(cycle)] for i, lay in enumerate(dict.fromkeys(layers))}


def plot_ranking(ranking, path: str | os.PathLike, k: int = 30) -> Path:
    """Scores of the top ``k`` neurons of a :class:`~finegrain.rank.Ranking`, one colour per layer."""
    k = max(1, min(k, len(ranking)))
    ns, sc = ranking.neurons[:k], np.asarray(ranking.scores[:k], dtype=float)
    colors = _layer_colors([n.layer for n in ns])
    with figure((max(5.0, 0.22 * k + 2), 3.6)) as fig:
        ax = fig.subplots()
        ax.bar(range(k), np.where(np.isfinite(sc), sc, 0.0), color=[colors[n.layer] for n in ns])
        ax.set_xticks(range(k), [str(n) for n in ns], rotation=90, fontsize=7)
        for lay, c in colors.items():
            ax.bar([0], [0], color=c, label=lay)
        ax.set_ylabel("score")
        ax.set_title(f"top {k} neurons: {ranking.method}")
        if len(colors) > 1:
            ax.legend(fontsize=7)
        return save_figure(fig, path)


def plot_minimal_set(result, path: str | os.PathLike) -> Path:
    """Dev accuracy of the probe retrained on the top-k neurons vs k (:class:`MinimalNeuronSet`)."""
    with figure((5.0, 3.5)) as fig:
        ax = fig.subplots()
        ax.plot([c["k"] for c in result.curve], [c["dev_acc"] for c in result.curve], "o-",
                color=CURVE_COLORS["top"], label="top-k retrained")
        ax.axhline(result.oracle_acc, ls="--", color=CURVE_COLORS["full"], lw=1, label="oracle (all neurons)")
        ax.axhline(result.oracle_acc - result.tolerance, ls=":", color="#999", lw=1, label="oracle - tolerance")
        ax.axvline(result.k, ls=":", color=CURVE_COLORS["bottom"], label=f"minimal set k={result.k}")
        ax.set_xscale("log")
        ax.set_xlabel("number of neurons")
        ax.set_ylabel("dev accuracy")
        ax.set_title(f"minimal neuron set ({result.method or 'ranking'})")
        ax.legend(loc="lower right", fontsize=8)
        return save_figure(fig, path)


def plot_outliers(result, path: str | os.PathLike) -> Path:
    """Ratio to the layer median of every outlier unit (:class:`OutlierDimensions`)."""
    units = result.units[:40]
    with figure((max(5.0, 0.25 * len(units) + 2), 3.5)) as fig:
        ax = fig.subplots()
        if units:
            colors = {"std": CURVE_COLORS["top"], "mean_abs": CURVE_COLORS["bottom"]}
            ax.bar(range(len(units)), [u["ratio"] for u in units], color=[colors[u["statistic"]] for u in units])
            ax.set_xticks(range(len(units)), [f"{u['neuron']} ({u['statistic']})" for u in units], rotation=90,
                          fontsize=7)
        ax.axhline(result.factor, ls="--", color="#999", lw=1, label=f"threshold {result.factor:g}x")
        ax.set_ylabel("x layer median")
        ax.set_title("outlier dimensions" if units else "no outlier dimensions")
        ax.legend(fontsize=8)
        return save_figure(fig, path)


def plot_ablation(result, path: str | os.PathLike) -> Path:
    """Accuracy vs number of neurons k for the top / random / bottom neurons of a ranking, one panel per
    mode of a probe ablation (:class:`~finegrain.evaluate.AblationResult`); the full probe dashed."""
    modes = list(result.curves)
    with figure((4.5 * len(modes), 3.6)) as fig:
        axes = np.atleast_1d(fig.subplots(1, len(modes), squeeze=False)[0])
        for ax, mode in zip(axes, modes):
            for s, accs in result.curves[mode].items():
                ax.plot(result.ks, accs, "o-", color=CURVE_COLORS.get(s), label=s)
            ax.axhline(result.full_acc, ls="--", color=CURVE_COLORS["full"], lw=0.8, label="all neurons")
            if len(result.ks) > 1 and result.ks[-1] > 3 * result.ks[0]:
                ax.set_xscale("log")
            ax.set_xlabel("number of neurons (k)")
            ax.set_ylabel("test accuracy")
            title = _MODE_TITLES.get(mode, mode).format(fill=getattr(result, "fill", "mean"))
            ok = result.ordered(mode)
            ax.set_title(f"{title}\n{'expected order' if ok else 'ORDER FAILS'}", fontsize=10)
            ax.legend(loc="best", fontsize=8)
        return save_figure(fig, path)


__all__ = ["plot_ablation", "plot_minimal_set", "plot_outliers", "plot_ranking"]
