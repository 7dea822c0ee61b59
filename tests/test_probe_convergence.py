"""Probes that converge by default (issue 14, item 4): the default probe within 1 point of scikit-learn's
LogisticRegression on a tiny random model and on the embedded textgenrnn LSTM (where NeuroX's fixed 10
epochs at lr 1e-3 stopped at 0.645), and the exact scikit-learn optimum at matched regularisation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import finegrain
from finegrain.data import builtin_corpus
from finegrain.probe import ArraySource, LinearProbe

QUIET = dict(progress=False, device="cpu")


def sentence_folds(sent_ids: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Row positions of ``k`` test folds, by sentence."""
    sids = np.random.default_rng(seed).permutation(np.unique(sent_ids))
    return [np.flatnonzero(np.isin(sent_ids, part)) for part in np.array_split(sids, k)]


def sklearn_fit(view):
    """scikit-learn's defaults (C=1) on standardised inputs; one BLAS thread (on a busy machine its threads
    spin: 30x slower)."""
    with threadpool_limits(1):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(view.X, view.y)


FITS = {  # ours stop on 10% of the training sentences, held out inside fit(), as a user's fit(X, y) does
    "default": lambda view: LinearProbe(**QUIET).fit(view),
    "neurox": lambda view: LinearProbe.neurox(**QUIET).fit(view),
    "sklearn": sklearn_fit,
}


def cross_validated(store, layer: str, k: int) -> dict[str, float]:
    """Mean test accuracy over ``k`` sentence folds of every entry of ``FITS`` (fitted on the other folds)."""
    X, y, sent = store.matrix([layer]), store.labels("pos").astype(str), store.sent_ids
    acc: dict[str, list[float]] = {name: [] for name in FITS}
    for test in sentence_folds(sent, k):
        train = np.setdiff1d(np.arange(len(y)), test)
        view = ArraySource(X[train], y[train], sent_ids=sent[train])
        for name, fit in FITS.items():
            acc[name].append(fit(view).score(X[test], y[test]))
    return {name: float(np.mean(v)) for name, v in acc.items()}


@pytest.mark.slow
def test_default_probe_within_a_point_of_sklearn_on_a_tiny_model(tmp_path):
    from finegrain.testing import tiny_bert

    corpus = builtin_corpus("synthetic", n_sentences=500, seed=0)
    store = finegrain.extract(tiny_bert(seed=0), corpus, tmp_path / "tiny.fgstore", layers=["layer.2"],
                              progress=False)
    acc = cross_validated(store, "layer.2", k=3)
    assert acc["default"] >= acc["sklearn"] - 0.01, acc
    assert acc["neurox"] < acc["default"] - 0.03, acc  # 10 epochs at lr 1e-3 under-train a small model


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("textgenrnn") is None, reason="textgenrnn not installed")
def test_default_probe_within_a_point_of_sklearn_on_textgenrnn(tmp_path):
    from finegrain.models import load_model

    corpus = builtin_corpus("synthetic", n_sentences=150, seed=0)
    store = finegrain.extract(load_model("textgenrnn", device="cpu"), corpus, tmp_path / "tg.fgstore",
                              layers=["lstm.2"], progress=False)
    acc = cross_validated(store, "lstm.2", k=4)
    assert acc["default"] >= acc["sklearn"] - 0.01, acc
    # the bug: NeuroX's configuration stops far short on LSTM states in [-1, 1] (0.645 vs 0.953 in the issue)
    assert acc["neurox"] < acc["default"] - 0.1, acc
