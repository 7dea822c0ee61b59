"""Ablation of neuron rankings (Dalvi et al. 2019; Durrani et al. 2020): accuracy when keeping only
the top / random / bottom k neurons of a ranking, in both forms, which give different numbers:

* ``zero``: the probe trained on all neurons, with the non-selected neurons zeroed at test time;
* ``retrain``: a fresh probe (same hyperparameters) trained on the selected neurons only.

A ranking that means something gives top > random > bottom.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.probe.sources import as_labels, as_source, source_index
from finegrain.rank.ranking import Ranking

MODES = ("zero", "retrain")
SELECTIONS = ("top", "random", "bottom")
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)


@dataclass
class AblationResult:
    """``curves[mode][selection]`` is the test accuracy for each ``ks`` entry."""

    method: str
    n_neurons: int
    full_acc: float
    ks: list[int]
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_random: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ordered"] = {m: self.ordered(m) for m in self.curves}
        return d

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def mean(self, mode: str, selection: str) -> float:
        return float(np.mean(self.curves[mode][selection]))

    def ordered(self, mode: str) -> bool:
        """Whether mean accuracy over ``ks`` satisfies top > random > bottom."""
        t, r, b = (self.mean(mode, s) for s in SELECTIONS)
        return bool(t > r > b)

    def table(self) -> str:
        lines = [f"ranking {self.method}: {self.n_neurons} neurons, full probe accuracy {self.full_acc:.4f}"]
        for mode, cur in self.curves.items():
            lines.append(f"[{mode}]  {'k':>6} " + " ".join(f"{s:>8}" for s in SELECTIONS))
            for i, k in enumerate(self.ks):
                lines.append(f"        {k:>6} " + " ".join(f"{cur[s][i]:>8.4f}" for s in SELECTIONS))
            lines.append(f"        top > random > bottom: {self.ordered(mode)}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        return plot_ablation(self, path)


def plot_ablation(result: AblationResult, path: str | os.PathLike) -> Path:
    """Accuracy vs number of kept neurons for top / random / bottom, one panel per mode (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result.curves)
    fig, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.5), squeeze=False)
    colors = {"top": "tab:green", "random": "tab:gray", "bottom": "tab:red"}
    for ax, mode in zip(axes[0], modes):
        for s in SELECTIONS:
            ax.plot(result.ks, result.curves[mode][s], "o-", color=colors[s], label=s)
        ax.axhline(result.full_acc, ls="--", color="black", lw=0.8, label="all neurons")
        ax.set_xscale("log")
        ax.set_xlabel("number of neurons kept")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{result.method}: {'zeroed at test' if mode == 'zero' else 'retrained'}")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _resolve_ks(ks, n: int) -> list[int]:
    ks = DEFAULT_FRACTIONS if ks is None else ks
    out = []
    for k in ks:
        if isinstance(k, float) and 0 < k <= 1:
            k = max(1, int(round(k * n)))
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k={k} out of range 1..{n}")
        out.append(k)
    return sorted(set(out))


def ablation_curves(
    X_train,
    y_train,
    X_test,
    y_test,
    ranking: Ranking,
    ks: Sequence[int | float] | None = None,
    probe: BaseProbe | None = None,
    index=None,
    modes: Sequence[str] = MODES,
    n_random: int = 3,
    seed: int = 0,
) -> AblationResult:
    """Accuracy keeping the top / random / bottom ``k`` neurons of ``ranking`` for every ``k`` in
    ``ks`` (ints, or floats in (0, 1] read as fractions; default 1, 5, 10, 20, 50%).

    ``random`` averages ``n_random`` draws. ``modes``: ``zero`` and/or ``retrain`` (see module doc).
    """
    bad = set(modes) - set(MODES)
    if bad:
        raise ValueError(f"unknown ablation modes {sorted(bad)}; use {MODES}")
    probe = probe if probe is not None else LinearProbe()
    Xtr, Xte = as_source(X_train).materialize(), as_source(X_test).materialize()
    y_train, y_test = as_labels(y_train), as_labels(y_test)
    pos = ranking.columns(index if index is not None else source_index(X_train))
    n = len(pos)
    ks_ = _resolve_ks(ks, n)
    full = probe.clone().fit(Xtr, y_train)
    full_acc = full.score(Xte, y_test)

    def selections(k: int) -> dict[str, list[np.ndarray]]:
        rng = np.random.default_rng(seed)
        return {
            "top": [pos[:k]],
            "random": [rng.choice(pos, size=k, replace=False) for _ in range(max(1, n_random))],
            "bottom": [pos[::-1][:k]],
        }

    curves: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SELECTIONS} for m in modes}
    for k in ks_:
        for s, sets in selections(k).items():
            for mode in modes:
                accs = []
                for cols in sets:
                    if mode == "zero":
                        Xz = np.zeros_like(Xte)
                        Xz[:, cols] = Xte[:, cols]
                        accs.append(full.score(Xz, y_test))
                    else:
                        accs.append(probe.clone().fit(Xtr[:, cols], y_train).score(Xte[:, cols], y_test))
                curves[mode][s].append(float(np.mean(accs)))
    return AblationResult(
        method=ranking.method,
        n_neurons=n,
        full_acc=float(full_acc),
        ks=ks_,
        curves=curves,
        n_random=n_random,
    )
