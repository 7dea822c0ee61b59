"""Linguistic Correlation Analysis neuron selection (Dalvi et al. 2019; Durrani et al. 2020,
"Analyzing individual neurons in pre-trained language models"; Dalvi et al. 2020): retrain a probe on
growing top-ranked fractions of the neurons and keep the smallest set whose dev accuracy is within a
tolerance of the all-neuron ("oracle") probe."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from finegrain.neurons import Neuron
from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.probe.sources import as_source, source_index
from finegrain.rank.ranking import Ranking

DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass
class MinimalNeuronSet:
    """The selected neurons and the accuracy-vs-number-of-neurons curve (``curve``: list of dicts
    ``{fraction, k, dev_acc}``)."""

    neurons: list[Neuron]
    k: int
    fraction: float
    dev_acc: float
    oracle_acc: float
    tolerance: float
    reached: bool
    curve: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neurons"] = [str(n) for n in self.neurons]
        return d

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def plot(self, path: str | os.PathLike) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([c["k"] for c in self.curve], [c["dev_acc"] for c in self.curve], "o-", label="top-k retrained")
        ax.axhline(self.oracle_acc, ls="--", color="gray", label="oracle (all neurons)")
        ax.axvline(self.k, ls=":", color="tab:red", label=f"minimal set k={self.k}")
        ax.set_xscale("log")
        ax.set_xlabel("number of neurons")
        ax.set_ylabel("dev accuracy")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _take(X, cols: np.ndarray) -> np.ndarray:
    return as_source(X).materialize()[:, cols]


def minimal_neuron_set(
    X_train,
    y_train,
    X_dev,
    y_dev,
    ranking: Ranking,
    tolerance: float = 0.01,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    probe: BaseProbe | None = None,
    index=None,
    oracle_acc: float | None = None,
) -> MinimalNeuronSet:
    """Smallest top-ranked fraction whose retrained probe reaches ``oracle - tolerance`` dev accuracy.

    ``tolerance`` is absolute accuracy (0.01 = one point). The oracle probe is trained on all columns
    unless ``oracle_acc`` is given. The whole curve over ``fractions`` is computed (stopping would
    hide it); the returned set is the first fraction meeting the tolerance (or all neurons if none).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    fr = sorted({float(f) for f in fractions})
    if not fr or fr[0] <= 0 or fr[-1] > 1:
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    probe = probe if probe is not None else LinearProbe()
    Xtr, Xdv = as_source(X_train).materialize(), as_source(X_dev).materialize()
    cols_all = ranking.columns(index if index is not None else source_index(X_train))
    if oracle_acc is None:
        oracle_acc = probe.clone().fit(Xtr, y_train).score(Xdv, y_dev)
    curve = []
    chosen = None
    done_k: dict[int, float] = {}
    for f in fr:
        k = max(1, int(round(f * len(ranking))))
        if k not in done_k:
            cols = cols_all[:k]
            done_k[k] = probe.clone().fit(Xtr[:, cols], y_train).score(Xdv[:, cols], y_dev)
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
    )
