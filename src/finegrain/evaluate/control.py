"""Control tasks and selectivity (Hewitt & Liang 2019, "Designing and interpreting probes with
control tasks", EMNLP).

A control task gives every word *type* (case-sensitive) one random label drawn from the task's
empirical label distribution; every token of the type carries it, in every split. A probe that reaches
high control accuracy memorises word identity; selectivity = task accuracy - control accuracy, with
the same probe and hyperparameters, measures how much of the task accuracy the representation (rather
than the probe) explains. Shuffling labels per token is a different, wrong, baseline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from finegrain.probe.layers import resolve_splits
from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.probe.sources import as_labels, as_source
from finegrain.store import ActivationStore


def control_mapping(words, labels, seed: int = 0, dist_rows=None) -> dict[str, str]:
    """``{word type: control label}``. Types are sorted before drawing so that the mapping depends
    only on the set of types, the label distribution and ``seed`` (not on row order). The label
    distribution is the empirical one over ``labels`` (or over ``labels[dist_rows]``, e.g. the
    training rows)."""
    words = as_labels(words).astype(str)
    labels = as_labels(labels)
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} words but {len(labels)} labels; they must match")
    if len(words) == 0:
        raise ValueError("no words to build a control task from")
    ref = labels if dist_rows is None else labels[np.asarray(dist_rows)]
    values, counts = np.unique(ref, return_counts=True)
    types = np.unique(words)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(values), size=len(types), p=counts / counts.sum())
    return {str(t): values[i].item() if hasattr(values[i], "item") else values[i] for t, i in zip(types, drawn)}


def control_labels(words, labels, seed: int = 0, dist_rows=None) -> np.ndarray:
    """Control-task label for every token (Hewitt & Liang 2019): constant per word type."""
    mapping = control_mapping(words, labels, seed, dist_rows)
    labels = as_labels(labels)
    return np.array([mapping[str(w)] for w in as_labels(words).astype(str)], dtype=labels.dtype)


def selectivity(
    X,
    labels,
    words,
    train,
    test,
    probe: BaseProbe | None = None,
    seed: int = 0,
    control=None,
) -> dict:
    """Train ``probe`` (cloned twice: identical hyperparameters) on the task and on its control task
    over the ``train`` rows; report test accuracies and selectivity = task - control.

    Control labels are built over all rows of ``X`` (fixed across splits) from the training label
    distribution, unless given as ``control`` (one per row).
    """
    probe = probe if probe is not None else LinearProbe()
    Xm = as_source(X).materialize()
    labels, words = as_labels(labels), as_labels(words)
    if not (len(Xm) == len(labels) == len(words)):
        raise ValueError(f"X has {len(Xm)} rows, labels {len(labels)}, words {len(words)}; they must match")
    train, test = np.asarray(train), np.asarray(test)
    ctrl = control_labels(words, labels, seed, dist_rows=train) if control is None else np.asarray(control)
    if len(ctrl) != len(labels):
        raise ValueError(f"control has {len(ctrl)} labels for {len(labels)} rows")
    task_acc = probe.clone().fit(Xm[train], labels[train]).score(Xm[test], labels[test])
    control_acc = probe.clone().fit(Xm[train], ctrl[train]).score(Xm[test], ctrl[test])
    return {
        "task_acc": float(task_acc),
        "control_acc": float(control_acc),
        "selectivity": float(task_acc - control_acc),
        "probe": repr(probe),
    }


@dataclass
class SelectivityResult:
    """Per-layer task / control accuracy and selectivity (``rows`` is pandas-friendly)."""

    label: str
    probe: str
    seed: int
    rows: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def table(self) -> str:
        head = f"{'layer':<16} {'task':>7} {'control':>8} {'selectivity':>12}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['layer']:<16} {r['task_acc']:>7.4f} {r['control_acc']:>8.4f} {r['selectivity']:>12.4f}")
        return "\n".join(lines)


def selectivity_layers(
    store: ActivationStore,
    label: str,
    layers: Sequence[str] | None = None,
    probe: BaseProbe | None = None,
    splits=None,
    seed: int = 0,
    include_all: bool = False,
) -> SelectivityResult:
    """``selectivity`` for every layer of a store (train on the train split, report on the test
    split; splits by sentence). Words come from the store's ``word`` column."""
    if not isinstance(store, ActivationStore):
        raise TypeError(f"selectivity_layers needs an ActivationStore, got {type(store).__name__}")
    if store.level != "word":
        raise ValueError("control tasks assign labels per word type: they need a word-level store")
    probe = probe if probe is not None else LinearProbe()
    layers = list(layers) if layers is not None else list(store.layers)
    parts = resolve_splits(store, splits, seed)
    train, test = parts[0], parts[-1]
    y, words = store.labels(label), store.words
    groups = [(lay, [lay]) for lay in layers]
    if include_all and len(layers) > 1:
        groups.append(("all", layers))
    res = SelectivityResult(label=label, probe=repr(probe), seed=seed)
    rows = np.concatenate([train, test])
    # one control mapping for the whole store, so a word type has the same control label everywhere
    ctrl = control_labels(words, y, seed, dist_rows=train)
    for name, lays in groups:
        X = store.matrix(lays, rows=rows)
        tr, te = np.arange(len(train)), np.arange(len(train), len(rows))
        r = selectivity(X, y[rows], words[rows], tr, te, probe=probe, seed=seed, control=ctrl[rows])
        res.rows.append({"layer": name, **{k: v for k, v in r.items() if k != "probe"}})
    return res
