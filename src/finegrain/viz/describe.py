"""Plots of neuron descriptions (:mod:`finegrain.describe`), drawn without pyplot through
:func:`finegrain.viz.figure` / :func:`finegrain.viz.save_figure`."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from finegrain.errors import ParameterError

from .heatmap import _normalise, _text_color, _vmax, token_layout, value_rgb
from .plots import figure, save_figure

FORMULA_COLOR = "#b2182b"
OTHER_COLOR = "#9e9e9e"


def plot_formula(result, path: str | os.PathLike, log_y: bool = True) -> Path:
    """Activation histogram of a neuron split by its compositional explanation (a
    :class:`~finegrain.describe.NeuronFormula`): the rows where the formula holds against the others,
    with the neuron's "on" threshold. A formula that explains the neuron puts the mass right of the
    threshold in the formula's colour."""
    edges = np.asarray(result.hist_edges, dtype=float)
    h_in = np.asarray(result.hist_formula, dtype=float)
    h_out = np.asarray(result.hist_other, dtype=float)
    if len(edges) < 2 or len(h_in) != len(edges) - 1 or len(h_out) != len(edges) - 1:
        raise ParameterError(f"{result.neuron}: no activation histogram to plot (explain it with explain_neurons)")
    with figure((6.4, 3.8)) as fig:
        ax = fig.add_subplot()
        ax.stairs(h_out, edges, fill=True, color=OTHER_COLOR, alpha=0.6, label="formula false")
        ax.stairs(h_in, edges, fill=True, color=FORMULA_COLOR, alpha=0.7, label="formula true")
        if result.threshold is not None and np.isfinite(result.threshold):
            ax.axvline(float(result.threshold), color="#222222", ls="--", lw=1,
                       label=f"on at >= {result.threshold:.3g}")
        if log_y and (h_in.max(initial=0) + h_out.max(initial=0)) > 0:
            ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("activation")
        ax.set_ylabel("rows")
        title = textwrap.shorten(f"{result.neuron}: {result.formula}", 90)
        ax.set_title(f"{title}\nIoU {result.iou:.3f} (P {result.precision:.2f}, R {result.recall:.2f})",
                     fontsize=10)
        ax.legend(loc="upper right")
        return save_figure(fig, path)


def plot_prediction_explanation(result, path: str | os.PathLike, k: int = 10) -> Path:
    """Horizontal bars of the top ``k`` concepts of a :class:`~finegrain.explain.PredictionExplanation`:
    each concept's z against random concepts of its size, significant ones (p < 0.05) filled."""
    top = list(result.concepts[:k])
    if not top:
        raise ParameterError("the explanation has no concepts to plot")
    z = np.array([c.z if np.isfinite(c.z) else 0.0 for c in top])
    with figure((6.4, 0.9 + 0.32 * len(top))) as fig:
        ax = fig.add_subplot()
        y = np.arange(len(top))[::-1]
        colors = [FORMULA_COLOR if c.p < 0.05 else OTHER_COLOR for c in top]
        ax.barh(y, z, color=colors)
        ax.set_yticks(y, [textwrap.shorten(c.name, 40) for c in top], fontsize=8)
        ax.axvline(0, color="#222222", lw=0.8)
        ax.set_xlabel("z of the attribution mass vs random concepts of the same size")
        ax.set_title(textwrap.shorten(f"{result.target} = {result.f_x:.3g} at {result.layer}: {result.text}", 80),
                     fontsize=10)
        return save_figure(fig, path)


def plot_tcav(result, path: str | os.PathLike) -> Path:
    """TCAV scores of a concept's CAVs next to those of the random CAVs (Kim et al. 2018)."""
    with figure((4.8, 3.4)) as fig:
        ax = fig.add_subplot()
        groups = [np.asarray(result.scores, float), np.asarray(result.random_scores, float)]
        for i, (g, c) in enumerate(zip(groups, (FORMULA_COLOR, OTHER_COLOR))):
            jitter = np.linspace(-0.12, 0.12, len(g)) if len(g) > 1 else np.zeros(len(g))
            ax.scatter(np.full(len(g), i) + jitter, g, color=c, s=18, alpha=0.8)
            if len(g):
                ax.hlines(g.mean(), i - 0.25, i + 0.25, color=c, lw=2)
        ax.set_xticks([0, 1], [textwrap.shorten(f"cav:{result.concept}", 30), "random CAVs"])
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("TCAV score")
        ax.set_title(f"{result.layer}, {textwrap.shorten(result.target, 30)}: p = {result.p_value:.3g}", fontsize=10)
        return save_figure(fig, path)


def plot_score_curves(curves, path: str | os.PathLike, ylabel: str = "score") -> Path:
    """Sorted scores of neuron rankings (``{name: scores}``, e.g. MaxCorr / MinCorr / LinReg per model,
    Bau et al. 2019): how many neurons reach each score."""
    if not curves:
        raise ParameterError("no scores to plot")
    with figure((6.0, 3.6)) as fig:
        ax = fig.add_subplot()
        for name, v in curves.items():
            v = np.sort(np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))])[::-1]
            ax.plot(np.arange(1, len(v) + 1), v, lw=1.5, label=name)
        ax.set_xlabel("neurons, best first")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right")
        return save_figure(fig, path)


def plot_cluster_sizes(result, path: str | os.PathLike) -> Path:
    """Sizes of the correlation clusters of a :class:`~finegrain.unsupervised.NeuronClusters`."""
    sizes = np.sort(np.bincount(np.asarray(result.labels, dtype=np.int64)))[::-1]
    with figure((6.0, 3.4)) as fig:
        ax = fig.add_subplot()
        ax.bar(np.arange(1, len(sizes) + 1), sizes, color=OTHER_COLOR, width=1.0)
        ax.set_xlabel("cluster, largest first")
        ax.set_ylabel("neurons")
        ax.set_title(f"{len(result.neurons)} neurons, {result.n_clusters} clusters (1 - |corr| <= {result.threshold})",
                     fontsize=10)
        return save_figure(fig, path)


def plot_redundancy(result, path: str | os.PathLike) -> Path:
    """Dalvi et al. (2020) selection of a :class:`~finegrain.unsupervised.RedundancyReport`: per-layer
    dev accuracy against the oracle, and the accuracy of growing top-ranked neuron sets of the chosen
    layer against its target."""
    with figure((8.0, 3.4)) as fig:
        a1, a2 = fig.subplots(1, 2)
        layers = list(result.layer_accuracies)
        a1.bar(range(len(layers)), [result.layer_accuracies[k] for k in layers],
               color=[FORMULA_COLOR if k == result.selected_layer else OTHER_COLOR for k in layers])
        a1.axhline(result.oracle_accuracy, color="#222222", ls="--", lw=1, label="oracle (all layers)")
        a1.axhline((1 - result.delta_layer) * result.oracle_accuracy, color="#222222", ls=":", lw=1,
                   label=f"oracle x (1 - {result.delta_layer})")
        a1.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
        a1.set_ylabel("dev accuracy")
        a1.legend(loc="lower right")
        if result.curve:
            k, acc = zip(*result.curve)
            a2.plot(k, acc, marker="o", color=FORMULA_COLOR)
        a2.axhline((1 - result.delta_neuron) * result.selected_layer_accuracy, color="#222222", ls=":", lw=1,
                   label="target")
        a2.set_xlabel(f"top neurons of {result.selected_layer}")
        a2.set_ylabel("dev accuracy")
        a2.legend(loc="lower right")
        return save_figure(fig, path)


def plot_latent_concepts(result, path: str | os.PathLike, k: int = 30) -> Path:
    """The ``k`` largest clusters of a :class:`~finegrain.unsupervised.LatentConcepts` (Dalvi et al.
    2022), filled when aligned with a label, each named by its top words."""
    clusters = sorted(result.clusters, key=lambda c: -c.size)[:k]
    if not clusters:
        raise ParameterError("no clusters to plot (fit LatentConcepts first)")
    with figure((7.0, 1.0 + 0.28 * len(clusters))) as fig:
        ax = fig.add_subplot()
        y = np.arange(len(clusters))[::-1]
        aligned = [bool(c.aligned_labels()) for c in clusters]
        ax.barh(y, [c.size for c in clusters], color=[FORMULA_COLOR if a else OTHER_COLOR for a in aligned])
        names = []
        for c in clusters:
            tag = ",".join(f"{col}={v}" for col, v in c.aligned_labels().items())
            names.append(textwrap.shorten(f"c{c.id} {' '.join(c.top_words(4))}" + (f" [{tag}]" if tag else ""), 48))
        ax.set_yticks(y, names, fontsize=7)
        ax.set_xlabel("tokens")
        ax.set_title(f"latent concepts of {result.layer} (filled: aligned with a label)", fontsize=10)
        return save_figure(fig, path)


def plot_token_heatmap(tokens_list, values_list, path: str | os.PathLike, title: str | None = None,
                       vmax: float | None = None, sep: str = " ", captions=None, width: int = 100,
                       value_name: str = "activation") -> Path:
    """PNG of a token heatmap (Karpathy et al. 2015): the same boxes and colours as
    :func:`finegrain.viz.heatmap_html` (red positive, white zero, blue negative on ``[-vmax, vmax]``),
    lines of ``width`` monospace cells laid out by :func:`finegrain.viz.heatmap.token_layout`
    (``sep=""``: characters edge to edge, wrapping between words)."""
    W, V = _normalise(tokens_list, values_list)
    vm = _vmax(V, vmax)
    if captions is not None and len(captions) != len(W):
        raise ParameterError(f"{len(captions)} captions for {len(W)} sentences")
    cap_w = max((len(str(c)) for c in captions), default=0) + 1 if captions else 0
    layout, n_lines = token_layout(W, width - cap_w, sep)
    heading = None if title is None else textwrap.shorten(
        f"{title}   (red positive, blue negative; |{value_name}| up to {vm:.3g})", width)
    # as wide as the longest line and the title, at most ``width`` cells
    used = cap_w + max((x + tw for row in layout for _, x, tw in row), default=1.0)
    width = min(width, max(used, 1.1 * len(heading) if heading else 0))
    cell_in, line_in = 0.095, 0.26  # a 10-point monospace cell, and a line with its margin
    head = 0.45 if title is not None else 0.1
    with figure((width * cell_in + 0.2, n_lines * line_in + head + 0.25)) as fig:
        fig.set_layout_engine("none")  # one axes over the whole canvas: cells map to inches one to one
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.set_xlim(-1, width + 1)
        ax.set_ylim(n_lines + 0.5, -head / line_in)
        mono = {"family": "DejaVu Sans Mono", "fontsize": 10}
        if heading:
            ax.text(0, -head / line_in / 2, heading, va="center", ha="left", fontsize=10, fontweight="bold")
        for i, (ws, vs, places) in enumerate(zip(W, V, layout)):
            if captions is not None and places:
                ax.text(0, places[0][0] + 0.5, str(captions[i]), va="center", ha="left", color="#666666",
                        fontsize=8)
            for w, v, (line, x, tw) in zip(ws, vs, places):
                rgb = tuple(c / 255 for c in value_rgb(v, vm))
                ax.add_patch(Rectangle((cap_w + x, line + 0.1), tw, 0.8, facecolor=rgb, edgecolor="none"))
                if not w.isspace():
                    ax.text(cap_w + x + tw / 2, line + 0.52, w, ha="center", va="center",
                            color=_text_color(v, vm), **mono)
        return save_figure(fig, path)


__all__ = ["plot_cluster_sizes", "plot_formula", "plot_latent_concepts", "plot_prediction_explanation",
           "plot_redundancy", "plot_score_curves", "plot_tcav", "plot_token_heatmap"]
