"""Probe-side ablation of neuron rankings (Dalvi et al. 2019; Durrani et al. 2020): accuracy of a probe
that sees only some of the neurons of a ranking — the top, a random or the bottom ``k`` — in three modes,
which give different numbers:

* ``keep``: the probe trained on all neurons; every neuron but the ``k`` reads as ``fill``;
* ``remove``: the same probe; the ``k`` neurons read as ``fill`` (the rest as they are);
* ``retrain``: a fresh probe (same hyperparameters) trained on the ``k`` neurons only.

``fill="mean"`` (default) sets an ablated unit to its mean over the training rows, which keeps the
probe's input on the activation distribution; ``fill="zero"`` is the classic zero-ablation, which moves
units whose mean is far from 0 (most transformer units) off-distribution, so that even the probe's best
neurons can look useless. Ablation happens in the probe's first-layer weights (the removed columns'
weights are zeroed and their contribution at ``fill`` moves into the bias): no masked copy of the data is
made, and a store view is streamed. (In-model ablation, which edits the network, is
``finegrain.intervene``.)

A ranking that means something gives top > random > bottom for ``keep`` and ``retrain``, and the reverse
for ``remove`` (removing the top neurons hurts most); :meth:`AblationResult.order_failures` lists every
``k`` where that fails.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.errors import ParameterError
from finegrain.probe.probes import BaseProbe, LinearProbe, check_neurons
from finegrain.probe.sources import as_labelled
from finegrain.probe.stats import column_stats
from finegrain.rank.lca import columns_view
from finegrain.rank.methods import rank_neurons
from finegrain.rank.ranking import Ranking
from finegrain.results import Result

MODES = ("keep", "remove", "retrain")
SELECTIONS = ("top", "random", "bottom")
FILLS = ("mean", "zero")
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)


@dataclass
class AblationResult(Result):
    """``curves[mode][selection]`` is the test accuracy for each ``ks`` entry (``random``: the mean of
    ``n_random`` draws); ``full_acc`` the probe on all neurons; ``fill`` what ablated units read as."""

    method: str
    n_neurons: int
    full_acc: float
    ks: list[int]
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_random: int = 1
    fill: str = "mean"
    n_test: int = 0

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["ordered"] = {m: self.ordered(m) for m in self.curves}
        d["order_failures"] = {m: self.order_failures(m) for m in self.curves}
        return d

    def mean(self, mode: str, selection: str) -> float:
        return float(np.mean(self.curves[mode][selection]))

    @staticmethod
    def expected(mode: str) -> tuple[str, str, str]:
        """The selections from highest to lowest expected accuracy in ``mode``."""
        return ("bottom", "random", "top") if mode == "remove" else ("top", "random", "bottom")

    def ordered(self, mode: str) -> bool:
        """Whether the mean accuracy over ``ks`` is in the expected order (top > random > bottom; the reverse
        for ``remove``)."""
        a, b, c = (self.mean(mode, s) for s in self.expected(mode))
        return bool(a > b > c)

    def order_failures(self, mode: str) -> list[str]:
        """One line per ``k`` (below all neurons) where the expected order is reversed, e.g.
        ``"k=10: random 0.8100 > top 0.7900"``; empty when it holds everywhere.

        A reversal counts when it exceeds two standard errors of the difference of two accuracies on
        ``n_test`` rows (about a 2% chance for two equal accuracies): random and bottom neurons both at chance
        for small ``k``, or top and random both near the full accuracy where neurons are redundant, are ties,
        not failures (:meth:`ordered` still reports whether the mean accuracies are in order)."""
        hi, mid, lo = self.expected(mode)
        cur = self.curves[mode]
        out = []
        for i, k in enumerate(self.ks):
            if k >= self.n_neurons:  # every selection is every neuron: nothing to order
                continue
            bad = []
            for a, b in ((hi, mid), (mid, lo)):
                va, vb = cur[a][i], cur[b][i]
                se = np.sqrt((va * (1 - va) + vb * (1 - vb)) / self.n_test) if self.n_test else 0.0
                if va < vb - 2 * se:
                    bad.append(f"{b} {vb:.4f} > {a} {va:.4f}")
            if bad:
                out.append(f"k={k}: " + ", ".join(bad))
        return out

    def table(self) -> str:
        lines = [f"ranking {self.method}: {self.n_neurons} neurons, full probe accuracy {self.full_acc:.4f}, "
                 f"ablated units set to their {'training mean' if self.fill == 'mean' else 'zero'}"]
        for mode, cur in self.curves.items():
            lines.append(f"[{mode}]  {'k':>6} " + " ".join(f"{s:>8}" for s in SELECTIONS))
            for i, k in enumerate(self.ks):
                lines.append(f"        {k:>6} " + " ".join(f"{cur[s][i]:>8.4f}" for s in SELECTIONS))
            hi, mid, lo = self.expected(mode)
            lines.append(f"        {hi} > {mid} > {lo}: {self.ordered(mode)}")
            fails = self.order_failures(mode)
            if not self.ordered(mode) or fails:
                where = ("reversed at " + "; ".join(fails)) if fails else "no single k reverses it beyond noise"
                lines.append(f"        ORDER FAILS: the mean accuracies are {'' if self.ordered(mode) else 'not '}"
                             f"{hi} > {mid} > {lo}; {where}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike):
        """Accuracy vs k for top / random / bottom, one panel per mode (PNG)."""
        from finegrain.viz.probing import plot_ablation  # heavy: matplotlib, imported when a plot is drawn

        return plot_ablation(self, path)


def _resolve_ks(ks, n: int) -> list[int]:
    ks = DEFAULT_FRACTIONS if ks is None else ks
    out = []
    for k in ks:
        if isinstance(k, float) and 0 < k <= 1:
            k = max(1, int(round(k * n)))
        k = int(k)
        if not 1 <= k <= n:
            raise ParameterError(f"k={k} out of range 1..{n}")
        out.append(k)
    return sorted(set(out))


def probe_ablation(
    train,
    test,
    ranking: Ranking | str = "probe",
    ks: Sequence[int | float] | None = None,
    probe: BaseProbe | None = None,
    modes: Sequence[str] = MODES,
    fill: str = "mean",
    n_random: int = 3,
    seed: int = 0,
    dev=None,
    **rank_options,
) -> AblationResult:
    """Accuracy of a probe keeping / removing the top, random and bottom ``k`` neurons of ``ranking``, or
    retrained on them, for every ``k`` in ``ks`` (ints, or floats in (0, 1] read as fractions; default 1,
    5, 10, 20, 50%).

    ``train`` / ``test`` (and ``dev``, where probes stop) are labelled views or ``(X, y)`` pairs over the
    same neurons. ``ranking``: a :class:`Ranking` of those neurons, or a method name for
    :func:`finegrain.rank.rank_neurons` (computed on ``train``; ``rank_options`` are passed on). ``probe``:
    a fitted probe is the full probe (its neurons must be ``train``'s) and its unfitted clone the template
    of retrained probes; an unfitted one (default ``LinearProbe()``) is fitted on ``train``. ``random``
    averages ``n_random`` draws. See the module docstring for ``modes`` and ``fill``.
    """
    bad = set(modes) - set(MODES)
    if bad or not modes:
        raise ParameterError(f"unknown ablation modes {sorted(bad)}; use {MODES}")
    if fill not in FILLS:
        raise ParameterError(f"fill must be one of {FILLS}, got {fill!r}")
    if n_random < 1:
        raise ParameterError(f"n_random must be >= 1, got {n_random}")
    tr, y_tr = as_labelled(train, "train")
    te, y_te = as_labelled(test, "test")
    dv, y_dv = as_labelled(dev, "dev") if dev is not None else (None, None)
    for name, v in (("test", te), ("dev", dv)):
        if v is not None and v.index != tr.index and not (v.index.is_placeholder or tr.index.is_placeholder):
            raise ParameterError(f"{name} must have the same neurons (columns) as train")
    probe = probe if probe is not None else LinearProbe()
    fitted = bool(getattr(probe, "fitted_", False))
    if fitted:
        check_neurons(probe, tr.index, "train")
        full, template = probe, probe.clone()
    else:
        template = probe
        full = probe.clone().fit(tr, y_tr, dev=None if dv is None else (dv, y_dv))
    if {"keep", "remove"} & set(modes) and not hasattr(full, "masked"):
        raise ParameterError(f"keep / remove ablation needs a probe that can mask its inputs (LinearProbe, "
                             f"LogisticProbe, MLPProbe), not {type(full).__name__}")
    if isinstance(ranking, str):
        ranking = rank_neurons((tr, y_tr), ranking, dev=None if dv is None else (dv, y_dv), probe=full,
                               **rank_options)
    elif rank_options:
        raise ParameterError(f"rank options {sorted(rank_options)} only apply when ranking is a method name")
    pos = ranking.columns(tr.index)
    n = len(pos)
    ks_ = _resolve_ks(ks, n)
    full_acc = full.score(te, y_te)
    d = tr.n_features
    fill_values = column_stats(tr).mean if fill == "mean" else np.zeros(d)
    names = tr.index.neurons()

    def selections(k: int) -> dict[str, list[np.ndarray]]:
        rng = np.random.default_rng(seed)
        return {
            "top": [pos[:k]],
            "random": [rng.choice(pos, size=k, replace=False) for _ in range(n_random)],
            "bottom": [pos[::-1][:k]],
        }

    def score(mode: str, cols: np.ndarray) -> float:
        if mode == "keep":
            return full.masked(cols, fill_values).score(te, y_te)
        if mode == "remove":
            return full.masked(np.setdiff1d(np.arange(d), cols), fill_values).score(te, y_te)
        ns = [names[c] for c in cols]
        dev_k = None if dv is None else (columns_view(dv, ns), y_dv)
        return template.clone().fit(columns_view(tr, ns), y_tr, dev=dev_k).score(columns_view(te, ns), y_te)

    curves: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SELECTIONS} for m in modes}
    for k in ks_:
        for s, sets in selections(k).items():
            for mode in modes:
                curves[mode][s].append(float(np.mean([score(mode, cols) for cols in sets])))
    return AblationResult(method=ranking.method, n_neurons=n, full_acc=float(full_acc), ks=ks_, curves=curves,
                          n_random=n_random, fill=fill, n_test=len(te))


__all__ = ["DEFAULT_FRACTIONS", "FILLS", "MODES", "SELECTIONS", "AblationResult", "probe_ablation"]
