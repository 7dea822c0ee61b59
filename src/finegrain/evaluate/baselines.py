"""Baselines that every probe accuracy is shown beside (issue 14).

* **majority**: always predict the most frequent training label;
* **word type**: predict each token's most frequent training label for its word type (case-sensitive;
  types unseen in training get the majority label). On real English POS this is about 0.92 (the
  "most frequent tag" baseline); a probe that does not beat it has shown nothing the word's identity
  does not already give.

The control-task baseline (Hewitt & Liang 2019) needs a trained probe and lives in
:mod:`finegrain.evaluate.control`.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from finegrain.errors import ParameterError
from finegrain.store.view import as_labels


def _check(words, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels = as_labels(labels)
    words = None if words is None else as_labels(words).astype(str)
    if words is not None and len(words) != len(labels):
        raise ParameterError(f"{what}: {len(words)} words but {len(labels)} labels; they must match")
    return words, labels


def majority_label(y_train) -> object:
    """The most frequent training label (ties: the smallest in sort order, so the result is deterministic)."""
    y = as_labels(y_train)
    if len(y) == 0:
        raise ParameterError("no training labels to take a majority from")
    values, counts = np.unique(y, return_counts=True)
    return values[int(np.argmax(counts))]


def majority_baseline(y_train, y_test) -> float:
    """Accuracy on ``y_test`` of always predicting the most frequent label of ``y_train``."""
    _, y_test = _check(None, y_test, "test")
    if len(y_test) == 0:
        raise ParameterError("no test labels to score a baseline on")
    return float(np.mean(y_test == majority_label(y_train)))


def word_type_predictions(words_train, y_train, words_test) -> np.ndarray:
    """Each test word's most frequent training label for its type (unseen types: the majority label).
    Ties between labels of one type go to the more frequent label overall, then to sort order."""
    words_train, y_train = _check(words_train, y_train, "train")
    words_test = as_labels(words_test).astype(str)
    overall = Counter(y_train.tolist())
    majority = majority_label(y_train)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for w, lab in zip(words_train.tolist(), y_train.tolist()):
        by_type[w][lab] += 1
    best = {w: min(c.items(), key=lambda kv: (-kv[1], -overall[kv[0]], str(kv[0])))[0] for w, c in by_type.items()}
    return np.array([best.get(w, majority) for w in words_test.tolist()], dtype=y_train.dtype)


def word_type_baseline(words_train, y_train, words_test, y_test) -> float:
    """Accuracy of :func:`word_type_predictions` on the test words."""
    words_test, y_test = _check(words_test, y_test, "test")
    if len(y_test) == 0:
        raise ParameterError("no test labels to score a baseline on")
    return float(np.mean(word_type_predictions(words_train, y_train, words_test) == y_test))


__all__ = ["majority_baseline", "majority_label", "word_type_baseline", "word_type_predictions"]
