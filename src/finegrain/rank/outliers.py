"""Outlier ("rogue") dimensions (Timkey & van Schijndel 2021, "All bark and no bite: rogue dimensions in
transformer language models obscure representational quality", EMNLP): a few units of BERT-like models
have a variance or a mean magnitude an order of magnitude above the rest, and dominate distance-,
mean-difference- and AP-style analyses of raw activations. Listed for a model summary, and the reason
finegrain's probeless ranking and probe-weight ranking standardise units by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from finegrain.errors import ParameterError
from finegrain.neurons import Neuron
from finegrain.probe.stats import column_stats
from finegrain.results import Result
from finegrain.store.view import as_view

STATISTICS = ("std", "mean_abs")


@dataclass
class OutlierDimensions(Result):
    """Units whose ``std`` or ``mean_abs`` (mean |activation|) exceeds ``factor`` x the median over the
    units of their layer. ``units``: one dict per outlier ``{neuron, statistic, value, median, ratio}``
    (a unit outlying on both statistics appears twice), largest ratio first; ``medians[layer][statistic]``."""

    factor: float
    n_rows: int
    units: list[dict] = field(default_factory=list)
    medians: dict = field(default_factory=dict)

    def neurons(self) -> list[Neuron]:
        """The outlying neurons, each once, in the order of ``units``."""
        return list(dict.fromkeys(Neuron.parse(u["neuron"]) for u in self.units))

    def table(self) -> str:
        if not self.units:
            return (f"no outlier dimensions: no unit's std or mean |activation| is above {self.factor:g}x the "
                    f"median of its layer ({self.n_rows} rows)")
        lines = [f"outlier dimensions (> {self.factor:g}x the layer median, {self.n_rows} rows)",
                 f"{'neuron':<20} {'statistic':<9} {'value':>9} {'median':>9} {'ratio':>7}"]
        lines += [f"{u['neuron']:<20} {u['statistic']:<9} {u['value']:>9.4g} {u['median']:>9.4g} {u['ratio']:>7.1f}"
                  for u in self.units]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike):
        from finegrain.viz.probing import plot_outliers  # heavy: matplotlib, imported when a plot is drawn

        return plot_outliers(self, path)


def outlier_dimensions(X, factor: float = 5.0, statistics=STATISTICS) -> OutlierDimensions:
    """The outlier units of ``X`` (a view, a store or an array): one streaming pass (:func:`column_stats`).

    A unit is an outlier when its standard deviation (``"std"``) or its mean absolute activation
    (``"mean_abs"``) is more than ``factor`` times the median of that statistic over the units of its layer
    (Timkey & van Schijndel 2021 report rogue units at 10-100x; 5x flags them with room to spare)."""
    if not factor > 1:
        raise ParameterError(f"factor must be > 1, got {factor}")
    bad = set(statistics) - set(STATISTICS)
    if bad:
        raise ParameterError(f"unknown statistics {sorted(bad)}; use {STATISTICS}")
    view, _ = as_view(X)
    stats = column_stats(view)
    index = view.index
    units, medians = [], {}
    for layer in index.layers:
        cols = np.asarray(index.layer_columns(layer))
        medians[layer] = {}
        for name in statistics:
            values = getattr(stats, name)[cols]
            med = float(np.median(values))
            medians[layer][name] = med
            if med <= 0:
                continue
            for c, v in zip(cols, values):
                if v > factor * med:
                    units.append({"neuron": str(index.neuron(int(c))), "statistic": name, "value": float(v),
                                  "median": med, "ratio": float(v / med)})
    units.sort(key=lambda u: -u["ratio"])
    return OutlierDimensions(factor=float(factor), n_rows=stats.n, units=units, medians=medians)


__all__ = ["STATISTICS", "OutlierDimensions", "outlier_dimensions"]
