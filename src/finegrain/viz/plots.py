"""Matplotlib plots of finegrain results, from plain data (dicts, lists, arrays).

Every function takes its data and an output ``path``, writes a PNG (and, with ``svg=True``, an SVG
beside it) through a temporary file and an atomic rename, and returns the PNG path. Figures are
built on the Agg canvas directly (no pyplot state), so the functions are safe in scripts, tests and
threads. :func:`png_data_uri` / :func:`fig_to_data_uri` embed images in a self-contained HTML report.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 120
STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.family": "DejaVu Sans",
}
CURVE_COLORS = {"top": "#b2182b", "random": "#7f7f7f", "bottom": "#2166ac", "full": "#222222"}


@contextmanager
def _style():
    with matplotlib.rc_context(STYLE):
        yield


def _figure(figsize=(6.4, 4.0)) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, svg: bool) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".svg":
        path = path.with_suffix(".png")
    elif path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")  # "layer.3" must not lose its ".3"
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = [(path, "png")] + ([(path.with_suffix(".svg"), "svg")] if svg else [])
    for target, fmt in targets:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fig.savefig(tmp, format=fmt, dpi=DPI)
        os.replace(tmp, target)
    return path


@contextmanager
def figure(figsize=(6.4, 4.0)):
    """A styled matplotlib :class:`~matplotlib.figure.Figure` on its own Agg canvas, for a result's
    ``plot()``: no pyplot, no backend switch, so notebooks and threads keep their own state::

        with viz.figure((5, 3)) as fig:
            ax = fig.subplots()
            ...
        return viz.save_figure(fig, path)
    """
    with _style():
        yield _figure(figsize)


def save_figure(fig: Figure, path: str | os.PathLike, svg: bool = False) -> Path:
    """Write ``fig`` as a PNG (``.png`` appended when missing; an SVG beside it with ``svg=True``) through a
    temporary file and a rename; returns the PNG path."""
    with _style():
        return _save(fig, path, svg)


def fig_to_data_uri(fig: Figure, fmt: str = "png") -> str:
    """``data:image/png;base64,...`` (or SVG) of a matplotlib figure."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI)
    mime = "image/png" if fmt == "png" else "image/svg+xml"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def png_data_uri(path: str | os.PathLike) -> str:
    """A data URI of an image file (PNG, SVG, JPEG by extension) for a self-contained HTML page."""
    path = Path(path)
    mime = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        path.suffix.lower()
    )
    if mime is None:
        raise ValueError(f"unsupported image type {path.suffix!r} ({path})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _legend(ax) -> None:
    """Legend inside when short, outside on the right when it would cover the data."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) > 4:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(loc="best")


# -- data normalisation ------------------------------------------------------------------------
def _is_nested(d: Mapping) -> bool:
    return bool(d) and all(isinstance(v, Mapping) for v in d.values())


def _series(d: Mapping | None) -> dict[str, dict[str, float]]:
    """``{layer: v}`` -> ``{"": {layer: v}}``; ``{name: {layer: v}}`` unchanged."""
    if d is None:
        return {}
    if _is_nested(d):
        return {str(k): {str(a): float(b) for a, b in v.items()} for k, v in d.items()}
    return {"": {str(a): float(b) for a, b in d.items()}}


def _union_order(series: Sequence[Mapping[str, float]]) -> list[str]:
    order: list[str] = []
    for s in series:
        for k in s:
            if k not in order:
                order.append(k)
    return order


def _layer_axis(ax, layers: Sequence[str], xlabel: str = "layer") -> np.ndarray:
    x = np.arange(len(layers))
    ax.set_xticks(x)
    rot = 45 if len(layers) > 8 or max((len(s) for s in layers), default=0) > 10 else 0
    ax.set_xticklabels(layers, rotation=rot, ha="right" if rot else "center")
    ax.set_xlabel(xlabel)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    return x


def _y(series: Mapping[str, float], layers: Sequence[str]) -> np.ndarray:
    return np.array([series.get(la, np.nan) for la in layers], dtype=float)


# -- plots -------------------------------------------------------------------------------------
def plot_layer_accuracy(
    accuracy: Mapping,
    path: str | os.PathLike,
    control: Mapping | None = None,
    selectivity: Mapping | None = None,
    majority: float | Mapping[str, float] | None = None,
    title: str = "Probe accuracy per layer",
    ylabel: str = "accuracy",
    svg: bool = False,
) -> Path:
    """Probe accuracy per layer (``{layer: acc}`` or ``{property: {layer: acc}}``), with the control
    task accuracy (dashed) and selectivity = accuracy - control (dotted; computed from ``control``
    when not given, Hewitt & Liang 2019) and an optional majority-class baseline."""
    acc = _series(accuracy)
    if not acc:
        raise ValueError("accuracy is empty")
    ctl = _series(control)
    sel = _series(selectivity)
    if not sel and ctl:
        sel = {k: {la: acc[k][la] - ctl[k][la] for la in acc[k] if la in ctl.get(k, {})} for k in acc}
    layers = _union_order(list(acc.values()) + list(ctl.values()))
    n_entries = len(acc) * (1 + bool(ctl) + bool(sel)) + (majority is not None)
    with _style():
        fig = _figure((8.0, 4.2) if n_entries > 4 else (6.4, 4.0))  # room for an outside legend
        ax = fig.add_subplot()
        x = _layer_axis(ax, layers)
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, s) in enumerate(acc.items()):
            c = colors[i % len(colors)]
            lab = name or "probe"
            ax.plot(x, _y(s, layers), marker="o", color=c, label=lab)
            if name in ctl:
                ax.plot(x, _y(ctl[name], layers), marker="s", ls="--", color=c, alpha=0.7,
                        label=f"{lab} (control task)")
            if name in sel and sel[name]:
                ax.plot(x, _y(sel[name], layers), marker="^", ls=":", color=c, alpha=0.9,
                        label=f"{lab} selectivity")
        if majority is not None:
            maj = majority if isinstance(majority, Mapping) else {"majority": majority}
            for name, v in maj.items():
                ax.axhline(float(v), color="#999", lw=1, ls="-.", label=f"{name or 'majority'} baseline")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
        return _save(fig, path, svg)


def _curve(v) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``{n: acc}``, ``(ns, accs)``, ``(ns, accs, stds)`` or ``{"n": .., "acc": .., "std": ..}``."""
    if isinstance(v, Mapping) and "n" in v:
        ns, acc, std = v["n"], v.get("acc", v.get("accuracy")), v.get("std")
    elif isinstance(v, Mapping):
        ns, acc, std = list(v.keys()), list(v.values()), None
    else:
        ns, acc = v[0], v[1]
        std = v[2] if len(v) > 2 else None
    ns, acc = np.asarray(ns, float), np.asarray(acc, float)
    if ns.shape != acc.shape:
        raise ValueError(f"curve has {len(ns)} x values but {len(acc)} accuracies")
    order = np.argsort(ns)
    std_a = np.asarray(std, float)[order] if std is not None else None
    return ns[order], acc[order], std_a


def plot_accuracy_vs_neurons(
    curves: Mapping,
    path: str | os.PathLike,
    full: float | None = None,
    title: str = "Accuracy vs number of neurons",
    xlabel: str = "number of neurons kept",
    ylabel: str = "accuracy",
    log_x: bool = False,
    svg: bool = False,
) -> Path:
    """Ablation / selection curves (Dalvi et al. 2019): accuracy when keeping the top, random or
    bottom ranked neurons. ``curves = {"top": {10: .9, 50: .95}, "random": (ns, accs, stds), ...}``;
    a shaded band shows ``std`` when given; ``full`` draws the all-neuron accuracy."""
    if not curves:
        raise ValueError("curves is empty")
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        for i, (name, v) in enumerate(curves.items()):
            ns, acc, std = _curve(v)
            c = CURVE_COLORS.get(str(name).lower(), matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])
            ax.plot(ns, acc, marker="o", ms=4, color=c, label=str(name))
            if std is not None:
                ax.fill_between(ns, acc - std, acc + std, color=c, alpha=0.15, lw=0)
        if full is not None:
            ax.axhline(float(full), color=CURVE_COLORS["full"], ls="--", lw=1, label="all neurons")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
        return _save(fig, path, svg)


def _counts(v) -> dict[str, float]:
    if isinstance(v, Mapping):
        return {str(k): float(c) for k, c in v.items()}
    layers = [str(n).rsplit(":", 1)[0] if not hasattr(n, "layer") else n.layer for n in v]
    return {k: float(c) for k, c in Counter(layers).items()}


def _grouped_bars(ax, groups: dict[str, dict[str, float]], layers: list[str], missing: float = np.nan) -> None:
    n = max(len(groups), 1)
    width = 0.8 / n
    x = _layer_axis(ax, layers)
    for i, (name, s) in enumerate(groups.items()):
        y = np.array([s.get(la, missing) for la in layers], dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), y, width=width, label=name or None)
    if any(groups):  # only named groups get a legend
        _legend(ax)
    ax.grid(axis="x", visible=False)


def plot_layer_distribution(
    counts: Mapping | Sequence,
    path: str | os.PathLike,
    layer_order: Sequence[str] | None = None,
    normalize: bool = False,
    title: str = "Top neurons per layer",
    ylabel: str | None = None,
    svg: bool = False,
) -> Path:
    """Bar chart of how many top neurons each layer holds: ``{layer: count}``, a list of neuron
    addresses (``"layer.3:117"`` or ``Neuron``), or ``{property: either}`` for grouped bars;
    ``normalize`` shows each group's share instead of counts."""
    if isinstance(counts, Mapping) and counts and all(not isinstance(v, (int, float)) for v in counts.values()):
        groups = {str(k): _counts(v) for k, v in counts.items()}
    else:
        groups = {"": _counts(counts)}
    if normalize:
        groups = {k: {la: c / max(sum(s.values()), 1e-12) for la, c in s.items()} for k, s in groups.items()}
    layers = list(layer_order) if layer_order is not None else _union_order(list(groups.values()))
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        _grouped_bars(ax, groups, layers, missing=0.0)  # a layer with no top neuron has count 0
        if not normalize:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel or ("share of top neurons" if normalize else "number of top neurons"))
        ax.set_title(title)
        return _save(fig, path, svg)


def plot_selectivity(
    selectivity: Mapping,
    path: str | os.PathLike,
    title: str = "Selectivity per layer",
    ylabel: str = "selectivity (accuracy - control)",
    svg: bool = False,
) -> Path:
    """Bars of control-task selectivity (Hewitt & Liang 2019) per layer: ``{layer: sel}`` or
    ``{property: {layer: sel}}`` (grouped)."""
    groups = _series(selectivity)
    if not groups:
        raise ValueError("selectivity is empty")
    layers = _union_order(list(groups.values()))
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        _grouped_bars(ax, groups, layers)
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        return _save(fig, path, svg)


def _hist_data(v) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """Precomputed ``(counts, edges)`` (NeuronStats or its dict) or raw values."""
    if hasattr(v, "hist_counts"):
        return np.asarray(v.hist_counts, float), np.asarray(v.hist_edges, float)
    if isinstance(v, Mapping) and "hist_counts" in v:
        return np.asarray(v["hist_counts"], float), np.asarray(v["hist_edges"], float)
    if isinstance(v, tuple) and len(v) == 2 and len(v[1]) == len(v[0]) + 1:
        return np.asarray(v[0], float), np.asarray(v[1], float)
    return np.asarray(v, float).ravel()


def plot_activation_histogram(
    data,
    path: str | os.PathLike,
    bins: int = 50,
    threshold: float | Mapping[str, float] | None = None,
    title: str = "Activation distribution",
    xlabel: str = "activation",
    log_y: bool = False,
    svg: bool = False,
) -> Path:
    """Histogram of a neuron's activations: raw values, ``(counts, edges)``, a ``NeuronStats`` (or its
    ``to_dict()``), or ``{neuron: any of these}`` overlaid. ``threshold`` marks the "on" threshold of
    a compositional explanation (one value, or one per neuron)."""
    items = (
        {str(k): v for k, v in data.items()}
        if isinstance(data, Mapping) and "hist_counts" not in data
        else {"": data}
    )
    if not items:
        raise ValueError("no activations to plot")
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        single = len(items) == 1
        for i, (name, v) in enumerate(items.items()):
            c = colors[i % len(colors)]
            h = _hist_data(v)
            if isinstance(h, tuple):
                counts, edges = h
            else:
                h = h[np.isfinite(h)]
                if not len(h):
                    raise ValueError(f"no finite activations for {name or 'the neuron'}")
                counts, edges = np.histogram(h, bins=bins)
            if single:
                ax.stairs(counts, edges, fill=True, color=c, alpha=0.75, label=name or None)
            else:
                ax.stairs(counts, edges, color=c, lw=1.5, label=name)
            thr = threshold.get(name) if isinstance(threshold, Mapping) else threshold
            if thr is not None and math.isfinite(float(thr)):
                ax.axvline(float(thr), color=c if not single else "#b2182b", ls="--", lw=1,
                           label=f"threshold {float(thr):.3g}" + (f" ({name})" if name and not single else ""))
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.set_title(title)
        _legend(ax)
        return _save(fig, path, svg)


def plot_matrix(
    matrix,
    path: str | os.PathLike,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    center: float | None = None,
    annotate: bool | None = None,
    fmt: str = ".2f",
    colorbar_label: str = "",
    xlabel: str = "",
    ylabel: str = "",
    svg: bool = False,
) -> Path:
    """Labelled matrix heatmap (layer-by-layer CKA, mediation effects per layer x position, ...).

    ``center`` switches to a diverging map symmetric about it (red above, blue below); cells are
    annotated with their values by default when the matrix is at most 16 x 16.
    """
    M = np.asarray(matrix, dtype=float)
    if M.ndim != 2 or M.size == 0:
        raise ValueError(f"matrix must be a non-empty 2-D array, got shape {M.shape}")
    if row_labels is not None and len(row_labels) != M.shape[0]:
        raise ValueError(f"{len(row_labels)} row labels for {M.shape[0]} rows")
    if col_labels is not None and len(col_labels) != M.shape[1]:
        raise ValueError(f"{len(col_labels)} column labels for {M.shape[1]} columns")
    if annotate is None:
        annotate = max(M.shape) <= 16
    norm = None
    if center is not None:
        finite = M[np.isfinite(M)]
        span = max(abs(float(finite.max()) - center), abs(float(finite.min()) - center), 1e-12) if len(finite) else 1
        norm = TwoSlopeNorm(vcenter=center, vmin=vmin if vmin is not None else center - span,
                            vmax=vmax if vmax is not None else center + span)
        cmap = cmap or "RdBu_r"
    cmap = cmap or "viridis"
    h, w = M.shape
    figsize = (min(max(4.0, 0.55 * w + 2.5), 14), min(max(3.2, 0.45 * h + 1.8), 12))
    with _style():
        fig = _figure(figsize)
        ax = fig.add_subplot()
        ax.grid(False)
        im = ax.imshow(M, cmap=cmap, norm=norm, vmin=None if norm else vmin, vmax=None if norm else vmax,
                       aspect="auto", interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        if colorbar_label:
            cb.set_label(colorbar_label)
        ax.set_xticks(np.arange(w))
        ax.set_yticks(np.arange(h))
        if col_labels is not None:
            rot = 45 if w > 6 or max(len(str(s)) for s in col_labels) > 6 else 0
            ax.set_xticklabels([str(s) for s in col_labels], rotation=rot, ha="right" if rot else "center")
        if row_labels is not None:
            ax.set_yticklabels([str(s) for s in row_labels])
        if annotate:
            lo, hi = im.norm.vmin, im.norm.vmax
            for i in range(h):
                for j in range(w):
                    v = M[i, j]
                    if not np.isfinite(v):
                        continue
                    t = (im.norm(v) if hi != lo else 0.5)
                    dark = t > 0.6 if norm is None else abs(t - 0.5) > 0.3
                    color = ("#000" if dark else "#fff") if norm is None else ("#fff" if dark else "#000")
                    ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8, color=color)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        return _save(fig, path, svg)
