"""Probe-weight neuron ranking (Dalvi et al. 2019, "What is one grain of sand in the desert?").

For every class c, sort neurons by |W[c]| and take the smallest prefix whose cumulative |weight|
reaches p% of that class's total mass. The union over classes grows as p grows; the order in which
neurons enter the union is the global ranking. This is *not* a global sort by |w|: a neuron that
dominates a class with little total mass enters before a larger weight of a class with a lot of mass.
"""

from __future__ import annotations

import numpy as np

from finegrain.errors import ParameterError
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.probe.probes import check_neurons
from finegrain.rank.ranking import Ranking, column_neurons, ranking_from_scores


def _weights_and_classes(probe) -> tuple[np.ndarray, list[str]]:
    if isinstance(probe, np.ndarray | list | tuple):
        W = np.asarray(probe, dtype=np.float64)
        classes = [str(c) for c in range(W.shape[0])] if W.ndim == 2 else []
    else:
        # a finegrain probe ranks by the weights its penalty saw (per unit std when standardised)
        attr = "penalized_coef_" if hasattr(type(probe), "penalized_coef_") else "coef_"
        if not hasattr(type(probe), attr) and not hasattr(probe, attr):
            raise ParameterError(f"ranking by probe weights needs a fitted linear probe or a weight matrix, got "
                                 f"{type(probe).__name__}")
        W = np.asarray(getattr(probe, attr), dtype=np.float64)  # an unfitted finegrain probe: NotFittedError
        classes = [str(c) for c in getattr(probe, "classes_", range(W.shape[0]))]
        if W.shape[0] == 1 and len(classes) == 2:  # binary logistic: the row belongs to classes_[1]
            classes = classes[1:]
    if W.ndim != 2:
        raise ParameterError(f"probe weights must be [n_classes, n_neurons], got shape {W.shape}")
    if len(classes) != W.shape[0]:
        raise ParameterError(f"{W.shape[0]} weight rows but {len(classes)} class names")
    return np.abs(W), classes


def _columns(probe, index, d: int) -> list[Neuron]:
    """The neurons of the weight columns: the probe's own (``neurons_in_``), checked against ``index`` when
    both are given; ``index`` alone for a weight matrix or a probe fitted on a bare array."""
    if getattr(probe, "neurons_in_", None) is not None:
        given = None if index is None else (
            index if isinstance(index, NeuronIndex) else NeuronIndex.from_neurons(column_neurons(index)))
        return check_neurons(probe, given if given is not None else probe.neurons_in_, "index").neurons()
    neurons = column_neurons(index if index is not None else d)
    if len(neurons) != d:
        raise ParameterError(f"probe has {d} weights per class but the index describes {len(neurons)} neurons")
    return neurons


def entry_thresholds(weights) -> np.ndarray:
    """``[n_classes, n_neurons]``: the percentage (0..1) above which each neuron is in its class's
    smallest prefix reaching that percentage of the class's |weight| mass (NeuroX ``get_top_neurons``:
    the neuron at sorted position r is in the prefix iff p * total > cumsum before r; the top one is
    always in). Neurons with zero weight never enter (``inf``)."""
    A = np.abs(np.asarray(weights, dtype=np.float64))
    E = np.full(A.shape, np.inf)
    for c in range(A.shape[0]):
        total = A[c].sum()
        if total <= 0:
            continue
        order = np.argsort(-A[c], kind="stable")
        before = np.concatenate([[0.0], np.cumsum(A[c, order])[:-1]]) / total
        e = np.where(A[c, order] > 0, before, np.inf)
        E[c, order] = e
    return E


def top_neurons_per_class(probe, percentage: float, index=None) -> tuple[list[Neuron], dict[str, list[Neuron]]]:
    """NeuroX ``get_top_neurons``: per class the smallest |W[c]| prefix reaching ``percentage``
    (0..1) of the class mass, and their union (ordered by column)."""
    if not 0 <= percentage <= 1:
        raise ParameterError(f"percentage must be in [0, 1], got {percentage}")
    A, classes = _weights_and_classes(probe)
    neurons = _columns(probe, index, A.shape[1])
    E = entry_thresholds(A)
    per = {}
    union: set[int] = set()
    for c, name in enumerate(classes):
        order = np.argsort(-A[c], kind="stable")
        sel = [int(j) for j in order if E[c, j] < percentage or (E[c, j] == 0 and np.isfinite(E[c, j]))]
        per[name] = [neurons[j] for j in sel]
        union.update(sel)
    return [neurons[j] for j in sorted(union)], per


def probe_weight_ranking(probe, index=None, step: float | None = None) -> Ranking:
    """Global neuron order of Dalvi et al. 2019 from a trained linear probe (or a weight matrix).

    ``probe``: a fitted :class:`LinearProbe` / :class:`LogisticProbe` (its ``penalized_coef_`` — the
    weights per standard deviation of each unit when it standardised its inputs, so a high-variance unit
    gains nothing from its scale — ``classes_`` and ``neurons_in_``), another fitted linear model with
    ``coef_``, or an ``[n_classes, n_neurons]`` array. The neurons come from the probe; ``index`` is only
    needed for a weight matrix or a probe fitted on a bare array, and must match the probe's own neurons
    otherwise (a different index is an error, not a relabelling).

    ``step=None`` gives the limit of an infinitely fine sweep of p: neurons ordered by the smallest p
    at which any class admits them (ties: larger share of some class's mass first, then column).
    ``step=0.001`` reproduces NeuroX's grid sweep (p = 0, step, 2*step, ..., 1; neurons entering at
    the same grid point ordered by column). Neurons with zero weight for every class come last.
    ``score`` = 1 - entry percentage. Per-class detail: neurons sorted by |W[c]|.
    """
    A, classes = _weights_and_classes(probe)
    d = A.shape[1]
    neurons = _columns(probe, index, d)
    E = entry_thresholds(A)
    entry = E.min(axis=0)
    share = (A / np.maximum(A.sum(1, keepdims=True), 1e-300)).max(0)
    cols = np.arange(d)
    if step is None:
        key_entry = entry
        order = np.lexsort((cols, -share, key_entry))
    else:
        if not 0 < step <= 1:
            raise ParameterError(f"step must be in (0, 1], got {step}")
        n_steps = int(round(1 / step))
        grid = np.arange(n_steps + 1) * step
        # first grid p admitting the neuron: p > e, or p == 0 for a class's top neuron (e == 0)
        g = np.where(entry == 0, 0, np.searchsorted(grid, entry, side="right")).astype(float)
        g[~np.isfinite(entry) | (g > n_steps)] = np.inf
        key_entry = np.where(np.isfinite(g), g * step, np.inf)
        order = np.lexsort((cols, key_entry))
    score = np.where(np.isfinite(key_entry), 1.0 - np.minimum(key_entry, 1.0), 0.0)
    per_class = {name: A[c] for c, name in enumerate(classes)}
    detail = ranking_from_scores(np.zeros(d), neurons, "probe_weights", per_class_scores=per_class)
    return Ranking(
        neurons=[neurons[j] for j in order],
        scores=score[order].tolist(),
        method="probe_weights",
        per_class=detail.per_class,
        per_class_scores=detail.per_class_scores,
        meta={
            "paper": "Dalvi et al. 2019",
            "step": step,
            "entry_percentage": [float(x) if np.isfinite(x) else None for x in entry[order]],
            "classes": classes,
            "standardized": bool(getattr(probe, "standardize", False)),
        },
    )
