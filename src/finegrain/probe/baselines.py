"""Baselines that every probe accuracy is shown beside (issue 14), and the test of "above baseline".

* **majority**: always predict the most frequent training label;
* **word type**: predict each token's most frequent training label for its word type (case-sensitive;
  types unseen in training get the majority label). On real English POS this is about 0.92 (the
  "most frequent tag" baseline); a probe that does not beat it has shown nothing the word's identity
  does not already give;
* **control task** (Hewitt & Liang 2019, "Designing and interpreting probes with control tasks"): one
  random label per word *type*, drawn from the task's empirical label distribution and fixed across
  splits; the probe's accuracy on it is the control accuracy, and selectivity = task - control accuracy.

:func:`paired_bootstrap` decides "above baseline": the probe and a baseline are scored on the *same* test
tokens, so their accuracy difference is resampled over test sentences (tokens of one sentence are not
independent) and the probe counts as above the baseline only when the whole 95% interval of the
difference is above zero.

These live below :mod:`finegrain.evaluate` (which re-exports them) because :func:`finegrain.probe.probe_layers`
puts them beside every accuracy, and the probe package sits below evaluate in the dependency order.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from finegrain.errors import ParameterError
from finegrain.store.view import as_labels

#: resamples and interval of the paired bootstrap behind ``above_baseline``
N_BOOTSTRAP = 1000
CONFIDENCE = 0.95


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


# -- control tasks (Hewitt & Liang 2019) --------------------------------------------------------------
def control_mapping(words, labels, seed: int = 0, dist_rows=None) -> dict[str, object]:
    """``{word type: control label}``. Types are sorted before drawing so that the mapping depends
    only on the set of types, the label distribution and ``seed`` (not on row order). The label
    distribution is the empirical one over ``labels`` (or over ``labels[dist_rows]``, e.g. the
    training rows)."""
    words = as_labels(words).astype(str)
    labels = as_labels(labels)
    if len(words) != len(labels):
        raise ParameterError(f"{len(words)} words but {len(labels)} labels; they must match")
    if len(words) == 0:
        raise ParameterError("no words to build a control task from")
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


# -- is a probe above a baseline? --------------------------------------------------------------------
def paired_bootstrap(correct, baseline_correct, groups=None, n_boot: int = N_BOOTSTRAP,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, float]:
    """Accuracy difference ``mean(correct) - mean(baseline_correct)`` on the same test tokens, with a
    percentile interval from resampling ``groups`` (sentence ids; default: every token its own group).

    Returns ``{"diff", "low", "high"}``. Resampling sentences, not tokens, keeps the correlation of the
    tokens of one sentence (Efron & Tibshirani 1993; the paired design of Berg-Kirkpatrick et al. 2012)."""
    a = np.asarray(correct, dtype=np.float64)
    b = np.asarray(baseline_correct, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ParameterError(f"need two equal-length non-empty vectors of correctness, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ParameterError(f"confidence must be in (0, 1), got {confidence}")
    groups = np.arange(len(a)) if groups is None else np.asarray(groups)
    if len(groups) != len(a):
        raise ParameterError(f"{len(groups)} group ids for {len(a)} tokens")
    _, gi = np.unique(groups, return_inverse=True)
    d = np.bincount(gi, weights=a - b)
    n = np.bincount(gi).astype(np.float64)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 100):  # 100 resamples at a time: memory stays 100 x n_sentences
        idx = rng.integers(0, len(d), size=(min(100, n_boot - start), len(d)))
        diffs.append(d[idx].sum(1) / n[idx].sum(1))
    diffs = np.concatenate(diffs)
    tail = (1 - confidence) / 2
    return {"diff": float(d.sum() / n.sum()), "low": float(np.quantile(diffs, tail)),
            "high": float(np.quantile(diffs, 1 - tail))}


__all__ = [
    "CONFIDENCE",
    "N_BOOTSTRAP",
    "control_labels",
    "control_mapping",
    "majority_baseline",
    "majority_label",
    "paired_bootstrap",
    "word_type_baseline",
    "word_type_predictions",
]
