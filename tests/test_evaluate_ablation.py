"""Probe-side ablation that stays on the activation distribution (issue 14, item 6): keep-k / remove-k with
the other units at their training mean, the expected-order check with its failures spelled out, zero
ablation misleading where units sit far from 0, and store views streamed without masked copies."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.evaluate import AblationResult, probe_ablation, selectivity
from finegrain.probe import ArraySource, LinearProbe
from finegrain.rank import probeless_ranking
from finegrain.store import StoreWriter

QUIET = dict(progress=False, device="cpu")


def offset(n=900, d=40, seed=0, mean=20.0):
    """10 informative units of decreasing strength and 30 noise units, every unit far from zero (mean
    ``mean``, std about 1) as transformer units are."""
    rng = np.random.default_rng(seed)
    yi = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + mean
    for j in range(10):
        X[:, j] += (1.2 - 0.1 * j) * (2 * yi - 1)
    X = X.astype(np.float32)
    y = np.array(["neg", "pos"])[yi]
    return ArraySource(X[:600], y[:600]), ArraySource(X[600:], y[600:])


def test_mean_ablation_keeps_top_above_random_above_bottom():
    train, test = offset()
    ranking = probeless_ranking(train)
    assert {n.unit for n in ranking.top(10)} == set(range(10))
    res = probe_ablation(train, test, ranking, ks=[2, 5, 10], probe=LinearProbe(**QUIET), n_random=3)
    assert res.fill == "mean" and list(res.curves) == ["keep", "remove", "retrain"]
    for mode in res.curves:
        assert res.ordered(mode), (mode, res.curves[mode])
        assert res.order_failures(mode) == []
    keep, remove = res.curves["keep"], res.curves["remove"]
    assert keep["top"][-1] > 0.9 and keep["bottom"][0] < 0.65
    assert remove["top"][-1] < 0.7 < remove["bottom"][-1]  # removing the top neurons hurts most
    assert "ORDER FAILS" not in res.table() and "bottom > random > top: True" in res.table()
    d = res.to_dict()
    assert d["order_failures"] == {"keep": [], "remove": [], "retrain": []}
    assert AblationResult.from_dict(d) == res


def test_zero_ablation_misleads_where_units_sit_far_from_zero():
    """Zeroing units whose mean is 20 moves the probe's input far off its distribution: every selection
    collapses to one class, and the ranking looks meaningless although it is right; the table says so."""
    train, test = offset()
    ranking = probeless_ranking(train)
    probe = LinearProbe(**QUIET).fit(train)
    zero = probe_ablation(train, test, ranking, ks=[2, 5], probe=probe, modes=("keep",), fill="zero")
    mean = probe_ablation(train, test, ranking, ks=[2, 5], probe=probe, modes=("keep",), fill="mean")
    majority = max(np.mean(test.y == c) for c in ("neg", "pos"))
    assert max(zero.curves["keep"]["top"]) <= majority + 0.05  # the best neurons look useless when zeroed
    assert not zero.ordered("keep") and "ORDER FAILS" in zero.table()
    assert "ORDER FAILS" not in mean.table()
    assert mean.ordered("keep") and min(mean.curves["keep"]["top"]) > 0.8


def test_ablation_streams_store_views_like_arrays(tmp_path):
    train, test = offset(n=900, d=12)
    n = 900
    X = np.concatenate([train.X, test.X])
    y = np.concatenate([train.y, test.y])
    w = StoreWriter(tmp_path / "a.fgstore", {"layer.0": 12}, n, label_columns=["y"], dtype="float32")
    w.write({"layer.0": X}, np.arange(n), np.zeros(n, int), [f"w{i % 50}" for i in range(n)], {"y": y})
    store = w.commit()
    tr_v = store.view(label="y", rows=np.arange(600), block_rows=64)
    te_v = store.view(label="y", rows=np.arange(600, n), block_rows=64)
    probe = LinearProbe(**QUIET).fit(tr_v)
    ranking = probeless_ranking(tr_v)
    from finegrain.neurons import NeuronIndex

    idx = NeuronIndex({"layer.0": 12})
    arrays = (ArraySource(train.X, train.y, index=idx), ArraySource(test.X, test.y, index=idx))
    streamed = probe_ablation(tr_v, te_v, ranking, ks=[2, 4], probe=probe, modes=("keep", "remove"))
    in_memory = probe_ablation(*arrays, ranking, ks=[2, 4], probe=probe, modes=("keep", "remove"))
    for mode in ("keep", "remove"):
        for sel in ("top", "random", "bottom"):
            assert streamed.curves[mode][sel] == pytest.approx(in_memory.curves[mode][sel])
    with pytest.raises(ValueError, match="fill"):
        probe_ablation(tr_v, te_v, ranking, fill="median")


def test_selectivity_reads_words_from_the_views():
    rng = np.random.default_rng(0)
    wid = rng.integers(0, 30, 1200)
    words = np.array([f"w{i}" for i in wid])
    labels = np.array(["N", "V", "D"])[rng.integers(0, 3, 30)][wid]
    X = (np.eye(30)[wid] + 0.05 * rng.normal(size=(1200, 30))).astype(np.float32)
    tr = ArraySource(X[:900], labels[:900], words=words[:900])
    te = ArraySource(X[900:], labels[900:], words=words[900:])
    s = selectivity(tr, te, probe=LinearProbe(**QUIET))
    assert s.task_acc > 0.95 and s.control_acc > 0.9 and s.selectivity < 0.1  # a lookup table
    assert "selectivity" in s.table() and type(s).from_json(s.to_json()) == s
    with pytest.raises(ValueError, match="words"):
        selectivity(ArraySource(X[:900], labels[:900]), ArraySource(X[900:], labels[900:]))
