"""Classification metrics for probes: accuracy, macro-F1, per-class precision / recall / F1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from finegrain.probe.sources import as_labels


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = as_labels(y_true), as_labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels, y_pred {len(y_pred)}")
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def classification_metrics(y_true, y_pred, labels: Sequence | None = None) -> dict:
    """``{"accuracy", "macro_f1", "n", "per_class": {label: {precision, recall, f1, support}}}``.

    Macro-F1 averages over the classes present in ``y_true`` (a class the probe knows but the split
    lacks would otherwise count as F1 = 0).
    """
    y_true, y_pred = as_labels(y_true), as_labels(y_pred)
    acc = accuracy(y_true, y_pred)
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else as_labels(labels)
    per_class = {}
    f1s = []
    for c in labels:
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        support = tp + fn
        per_class[str(c)] = {"precision": p, "recall": r, "f1": f, "support": support}
        if support:
            f1s.append(f)
    return {
        "accuracy": acc,
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "n": int(len(y_true)),
        "per_class": per_class,
    }
