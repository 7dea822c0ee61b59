"""The one return type of every neuron-ranking method."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.errors import LayerError, ParameterError
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.results import Result


def column_neurons(index: NeuronIndex | Sequence[Neuron | str] | int) -> list[Neuron]:
    """The neuron of every column: from a NeuronIndex, an explicit list, or a width (placeholder ``x:0..``)."""
    if isinstance(index, NeuronIndex):
        return index.neurons()
    if isinstance(index, int | np.integer):
        return NeuronIndex.placeholder(int(index)).neurons()
    return [Neuron.parse(n) for n in index]


def _score(s) -> float:
    # JSON has no infinities: a score written as null (unreachable, -inf) reads back as -inf
    return float("-inf") if s is None else float(s)


@dataclass
class Ranking(Result):
    """Neurons ordered from most to least important, with their scores.

    ``scores[i]`` belongs to ``neurons[i]`` (non-increasing). ``per_class`` maps a class name to that
    class's own ordered neurons, ``per_class_scores`` to their scores; ``meta`` holds method details.
    """

    neurons: list[Neuron]
    scores: list[float]
    method: str
    per_class: dict[str, list[Neuron]] = field(default_factory=dict)
    per_class_scores: dict[str, list[float]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.neurons = [Neuron.parse(n) for n in self.neurons]
        self.scores = [_score(s) for s in self.scores]
        if len(self.neurons) != len(self.scores):
            raise ParameterError(f"{len(self.neurons)} neurons but {len(self.scores)} scores")
        if len(set(self.neurons)) != len(self.neurons):
            raise ParameterError("a ranking lists every neuron at most once")
        self.per_class = {str(c): [Neuron.parse(n) for n in ns] for c, ns in self.per_class.items()}
        self.per_class_scores = {str(c): [_score(s) for s in v] for c, v in self.per_class_scores.items()}

    def __len__(self) -> int:
        return len(self.neurons)

    def __iter__(self):
        return iter(self.neurons)

    def __repr__(self) -> str:
        head = ", ".join(str(n) for n in self.neurons[:5])
        return f"Ranking({self.method!r}, {len(self)} neurons: {head}{', ...' if len(self) > 5 else ''})"

    # -- selections -------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if not 0 <= k <= len(self):
            raise ParameterError(f"k must be in 0..{len(self)}, got {k}")
        return int(k)

    def top(self, k: int) -> list[Neuron]:
        return self.neurons[: self._check_k(k)]

    def bottom(self, k: int) -> list[Neuron]:
        """The ``k`` least important neurons (least important first)."""
        k = self._check_k(k)
        return self.neurons[::-1][:k]

    def random(self, k: int, seed: int = 0) -> list[Neuron]:
        """``k`` neurons drawn uniformly without replacement (the usual ablation baseline)."""
        k = self._check_k(k)
        idx = np.random.default_rng(seed).choice(len(self), size=k, replace=False)
        return [self.neurons[i] for i in idx]

    def top_fraction(self, p: float) -> list[Neuron]:
        """The top ``p`` (0..1) fraction, at least one neuron when ``p > 0``."""
        if not 0 <= p <= 1:
            raise ParameterError(f"fraction must be in [0, 1], got {p}")
        k = int(round(p * len(self)))
        return self.top(max(k, 1) if p > 0 and len(self) else k)

    def top_per_class(self, c: str, k: int) -> list[Neuron]:
        if str(c) not in self.per_class:
            raise ParameterError(f"no per-class detail for {c!r}; have {sorted(self.per_class)}")
        return self.per_class[str(c)][:k]

    def by_layer(self, k: int | None = None) -> dict[str, int]:
        """How many of the top ``k`` (default all ranked) neurons each layer holds."""
        return dict(Counter(n.layer for n in self.neurons[: len(self) if k is None else k]))

    def columns(self, index: NeuronIndex | Sequence[Neuron | str] | int, neurons=None) -> np.ndarray:
        """Column numbers of ``neurons`` (default: the whole ranking, in order) in a matrix whose
        columns are described by ``index``."""
        pos = {n: i for i, n in enumerate(column_neurons(index))}
        ns = self.neurons if neurons is None else [Neuron.parse(n) for n in neurons]
        missing = [str(n) for n in ns if n not in pos]
        if missing:
            raise LayerError(f"neurons not in the matrix: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return np.array([pos[n] for n in ns], dtype=np.int64)

    # -- showing -------------------------------------------------------------------------
    def table(self, k: int = 20) -> str:
        k = min(k, len(self))
        lines = [f"ranking {self.method}: {len(self)} neurons; top {k}",
                 f"{'rank':>4}  {'neuron':<20} {'score':>10}"]
        lines += [f"{i + 1:>4}  {str(n):<20} {s:>10.4g}" for i, (n, s) in enumerate(zip(self.neurons[:k], self.scores))]
        by_layer = self.by_layer(max(1, len(self) // 20))
        lines.append("layers of the top 5%: " + ", ".join(f"{lay} {c}" for lay, c in by_layer.items()))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, k: int = 30):
        """The scores of the top ``k`` neurons, coloured by layer (PNG)."""
        from finegrain.viz.probing import plot_ranking  # heavy: matplotlib, imported when a plot is drawn

        return plot_ranking(self, path, k=k)


def ranking_from_scores(
    scores: np.ndarray,
    index,
    method: str,
    per_class_scores: dict[str, np.ndarray] | None = None,
    meta: dict | None = None,
) -> Ranking:
    """Order columns by descending score (ties: lower column first)."""
    scores = np.asarray(scores, dtype=np.float64)
    neurons = column_neurons(index)
    if len(neurons) != len(scores):
        raise ParameterError(f"{len(scores)} scores for a matrix of {len(neurons)} neurons")
    order = np.argsort(-scores, kind="stable")
    per_class, pcs = {}, {}
    for c, s in (per_class_scores or {}).items():
        s = np.asarray(s, dtype=np.float64)
        o = np.argsort(-s, kind="stable")
        per_class[str(c)] = [neurons[i] for i in o]
        pcs[str(c)] = s[o].tolist()
    return Ranking(
        neurons=[neurons[i] for i in order],
        scores=scores[order].tolist(),
        method=method,
        per_class=per_class,
        per_class_scores=pcs,
        meta=meta or {},
    )


__all__ = ["Ranking", "column_neurons", "ranking_from_scores"]
