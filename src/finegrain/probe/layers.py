"""Layer-wise probing: one probe per layer plus one on all layers concatenated, in one call."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.probe.sources import StoreSource
from finegrain.store import ActivationStore

ALL = "all"


def resolve_splits(store: ActivationStore, splits=None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Row indices of (train, dev, test) — always by sentence.

    ``splits`` is ``None`` (80/10/10), a tuple of fractions, or a tuple of row-index arrays made by
    the caller (e.g. ``store.split(...)``); 2 index arrays mean (train, test) with no dev split.
    """
    if splits is None:
        return store.split((0.8, 0.1, 0.1), seed=seed)
    splits = tuple(splits)
    if all(np.isscalar(s) for s in splits):
        return store.split(tuple(float(s) for s in splits), seed=seed)
    out = tuple(np.asarray(s) for s in splits)
    if len(out) not in (2, 3):
        raise ValueError(f"splits must be (train, test) or (train, dev, test) row arrays, got {len(out)}")
    sent = store.sent_ids
    seen: dict[int, int] = {}
    for i, rows in enumerate(out):
        for sid in np.unique(sent[rows]):
            if seen.setdefault(int(sid), i) != i:
                raise ValueError(f"sentence {int(sid)} appears in splits {seen[int(sid)]} and {i}; split by sentence")
    return out


@dataclass
class LayerProbeResult:
    """Accuracy per layer (and for all layers concatenated); ``rows`` is pandas-friendly."""

    label: str
    probe: str
    rows: list[dict] = field(default_factory=list)
    split_sizes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LayerProbeResult:
        return cls(**json.loads(Path(path).read_text()))

    def accuracy(self, split: str = "test") -> dict[str, float]:
        return {r["layer"]: r[f"{split}_acc"] for r in self.rows}

    def table(self) -> str:
        head = f"{'layer':<16} {'neurons':>8} {'train':>7} {'dev':>7} {'test':>7} {'macroF1':>8}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            dev = "-" if r.get("dev_acc") is None else f"{r['dev_acc']:.4f}"
            lines.append(
                f"{r['layer']:<16} {r['n_neurons']:>8} {r['train_acc']:>7.4f} {dev:>7} "
                f"{r['test_acc']:>7.4f} {r['test_macro_f1']:>8.4f}"
            )
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        return plot_layer_accuracy(self, path)


def plot_layer_accuracy(result: LayerProbeResult, path: str | os.PathLike) -> Path:
    """Bar plot of test accuracy per layer (the concatenation drawn as a dashed line); saves a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r["layer"] != ALL]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.5))
    ax.bar(range(len(rows)), [r["test_acc"] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=45, ha="right")
    for r in result.rows:
        if r["layer"] == ALL:
            ax.axhline(r["test_acc"], ls="--", color="tab:red", label="all layers")
            ax.legend(loc="lower right")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result.label}: {result.probe.split('(')[0]} per layer")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def probe_group(store: ActivationStore, y, name: str, lays: Sequence[str], probe: BaseProbe, train, dev, test,
                stream: bool = False) -> dict:
    """Fit a clone of ``probe`` on ``lays`` (train rows) and score it: one row of :func:`probe_layers`."""
    Xtr = StoreSource(store, lays, rows=train) if stream else store.matrix(lays, rows=train)
    p = probe.clone()
    p.fit(Xtr, y[train])
    m_test = p.evaluate(store.matrix(lays, rows=test), y[test])
    return {
        "layer": name,
        "n_neurons": int(sum(store.layers[lay] for lay in lays)),
        "train_acc": p.score(Xtr, y[train]),
        "dev_acc": None if dev is None else p.score(store.matrix(lays, rows=dev), y[dev]),
        "test_acc": m_test["accuracy"],
        "test_macro_f1": m_test["macro_f1"],
        "test_per_class": m_test["per_class"],
    }


def probe_layers(
    store: ActivationStore,
    label: str,
    layers: Sequence[str] | None = None,
    probe: BaseProbe | None = None,
    splits=None,
    include_all: bool = True,
    stream: bool = False,
    seed: int = 0,
) -> LayerProbeResult:
    """Train one probe per layer (and on all ``layers`` concatenated) and report accuracies.

    Dalvi et al. 2019 / Durrani et al. 2020 layer-wise analysis. ``probe`` is a template (default
    ``LinearProbe()``), cloned for every layer so that all share hyperparameters. Splits are by
    sentence (``resolve_splits``); the dev split, if any, is reported too. ``stream=True`` reads the
    training rows block by block from the store instead of loading them.
    """
    if not isinstance(store, ActivationStore):
        raise TypeError(f"probe_layers needs an ActivationStore, got {type(store).__name__}")
    probe = probe if probe is not None else LinearProbe()
    layers = list(layers) if layers is not None else list(store.layers)
    if not layers:
        raise ValueError("no layers to probe")
    y = store.labels(label)
    parts = resolve_splits(store, splits, seed)
    train, test = parts[0], parts[-1]
    dev = parts[1] if len(parts) == 3 else None
    groups: list[tuple[str, list[str]]] = [(lay, [lay]) for lay in layers]
    if include_all and len(layers) > 1:
        groups.append((ALL, layers))
    result = LayerProbeResult(
        label=label,
        probe=repr(probe),
        split_sizes={"train": len(train), "dev": 0 if dev is None else len(dev), "test": len(test)},
    )
    for name, lays in groups:
        row = probe_group(store, y, name, lays, probe, train, dev, test, stream)
        result.rows.append(row)
    return result
