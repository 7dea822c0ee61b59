"""Linguistic Correlation Analysis neuron selection (Dalvi et al. 2019; Durrani et al. 2020,
"Analyzing individual neurons in pre-trained language models"; Dalvi et al. 2020): retrain a probe on
growing top-ranked fractions of the neurons and keep the smallest set whose dev accuracy is within a
tolerance of the all-neuron ("oracle") probe."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from finegrain.errors import ParameterError
from finegrain.neurons import Neuron
from finegrain.probe.layers import in_memory
from finegrain.probe.probes import BaseProbe, LinearProbe, check_neurons
from finegrain.probe.sources import as_labelled
from finegrain.rank.ranking import Ranking
from finegrain.results import Result
from finegrain.store.view import ArrayView, View

DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass
class MinimalNeuronSet(Result):
    """The selected neurons and the accuracy-vs-number-of-neurons curve (``curve``: list of dicts
    ``{fraction, k, dev_acc}``). ``reached`` is false when no fraction came within ``tolerance`` of the
    oracle (then all neurons are returned)."""

    neurons: list[Neuron]
    k: int
    fraction: float
    dev_acc: float
    oracle_acc: float
    tolerance: float
    reached: bool
    curve: list[dict] = field(default_factory=list)
    method: str = ""

    def __post_init__(self) -> None:
        self.neurons = [Neuron.parse(n) for n in self.neurons]

    def table(self) -> str:
        lines = [f"minimal neuron set ({self.method or 'ranking'}): {self.k} neurons ({self.fraction:.1%}), dev "
                 f"accuracy {self.dev_acc:.4f}, oracle {self.oracle_acc:.4f}, tolerance {self.tolerance:.4f}, "
                 f"reached: {'yes' if self.reached else 'NO (all neurons returned)'}",
                 f"{'fraction':>9} {'k':>6} {'dev acc':>8}"]
        lines += [f"{c['fraction']:>9.3f} {c['k']:>6} {c['dev_acc']:>8.4f}" for c in self.curve]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike):
        """Dev accuracy of the retrained top-k probe vs k, with the oracle and the chosen k (PNG)."""
        from finegrain.viz.probing import plot_minimal_set  # heavy: matplotlib, imported when a plot is drawn

        return plot_minimal_set(self, path)


def columns_view(view: View, neurons: Sequence[Neuron]) -> View:
    """The columns of ``neurons`` of a view, in that order (an in-memory copy of those columns)."""
    sub = view.select(neurons=list(neurons))
    return sub if isinstance(sub, ArrayView) else in_memory(sub)


def minimal_neuron_set(
    train,
    dev,
    ranking: Ranking,
    tolerance: float = 0.01,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    probe: BaseProbe | None = None,
    oracle_acc: float | None = None,
) -> MinimalNeuronSet:
    """Smallest top-ranked fraction whose retrained probe reaches ``oracle - tolerance`` dev accuracy.

    ``train`` and ``dev`` are labelled views (or ``(X, y)`` pairs) over the neurons of ``ranking``.
    ``tolerance`` is absolute accuracy (0.01 = one point). The oracle probe is trained on all columns
    unless ``oracle_acc`` is given; a fitted ``probe`` serves as the oracle (its neurons must be the
    views'), an unfitted one is the template of every retrained probe. The whole curve over
    ``fractions`` is computed (stopping would hide it); the returned set is the first fraction meeting
    the tolerance (or all neurons if none). Each retrained probe reads only its own columns (streamed
    from a store view, held in memory for the epochs of training).
    """
    if not 0 <= tolerance < 1:
        raise ParameterError(f"tolerance must be in [0, 1), got {tolerance}")
    fr = sorted({float(f) for f in fractions})
    if not fr or fr[0] <= 0 or fr[-1] > 1:
        raise ParameterError(f"fractions must be in (0, 1], got {fractions}")
    tr, y_tr = as_labelled(train, "train")
    dv, y_dv = as_labelled(dev, "dev")
    ranking.columns(tr.index)  # every ranked neuron must be a column of the views
    probe = probe if probe is not None else LinearProbe()
    fitted = bool(getattr(probe, "fitted_", False))
    template = probe.clone() if fitted else probe
    if oracle_acc is None:
        if fitted:
            check_neurons(probe, tr.index, "train")
            oracle_acc = probe.score(dv, y_dv)
        else:
            oracle_acc = template.clone().fit(tr, y_tr, dev=(dv, y_dv)).score(dv, y_dv)
    curve = []
    chosen = None
    done_k: dict[int, float] = {}
    for f in fr:
        k = max(1, int(round(f * len(ranking))))
        if k not in done_k:
            ns = ranking.top(k)
            dv_k = columns_view(dv, ns)
            done_k[k] = template.clone().fit(columns_view(tr, ns), y_tr, dev=(dv_k, y_dv)).score(dv_k, y_dv)
        acc = done_k[k]
        curve.append({"fraction": f, "k": k, "dev_acc": acc})
        if chosen is None and acc >= oracle_acc - tolerance:
            chosen = (f, k, acc)
    reached = chosen is not None
    if chosen is None:
        chosen = (1.0, len(ranking), curve[-1]["dev_acc"])
    f, k, acc = chosen
    return MinimalNeuronSet(
        neurons=ranking.top(k),
        k=k,
        fraction=f,
        dev_acc=acc,
        oracle_acc=float(oracle_acc),
        tolerance=tolerance,
        reached=reached,
        curve=curve,
        method=ranking.method,
    )


__all__ = ["DEFAULT_FRACTIONS", "MinimalNeuronSet", "columns_view", "minimal_neuron_set"]
