"""Neuron rankings: Dalvi ordering by hand, planted ground truth for every method, AP, Gaussian MAP,
probeless means, the Ranking type and the LCA minimal neuron set."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.neurons import Neuron, NeuronIndex
from finegrain.probe import ArraySource as ArrayView
from finegrain.probe import LinearProbe
from finegrain.rank import (
    GaussianProbe,
    Ranking,
    ap_ranking,
    average_precision_columns,
    entry_thresholds,
    gaussian_ranking,
    greedy_select,
    minimal_neuron_set,
    probe_weight_ranking,
    probeless_ranking,
    top_neurons_per_class,
)

FAST = dict(epochs=15, lr=1e-2, batch_size=64, progress=False, device="cpu")
CLASSES = np.array(["A", "B", "C"])
PLANTED = [3, 10, 17]  # planted unit of class A, B, C


def planted(n=450, d=20, strength=4.0, seed=0):
    rng = np.random.default_rng(seed)
    yi = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    for c, j in enumerate(PLANTED):
        X[:, j] += strength * (yi == c)
    return X, CLASSES[yi]


INDEX = NeuronIndex({"layer.1": 8, "layer.2": 12})  # column 10 = layer.2:2


# -- Dalvi et al. 2019 ordering -------------------------------------------------------------------------
def test_neurox_toy_case():
    r = probe_weight_ranking(np.array([[4.0, 1, 5], [1, 1, 10]]))
    assert [n.unit for n in r.neurons] == [2, 0, 1]
    assert [n.unit for n in probe_weight_ranking(np.array([[4.0, 1, 5], [1, 1, 10]]), step=0.001).neurons] == [2, 0, 1]


def test_dalvi_order_differs_from_global_abs_sort():
    W = np.array([[10.0, 9.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]])
    # a global |w| sort gives 0, 1, 2, 3; by class mass: class 1's top unit (2) holds 2/3 of its mass
    # and enters at p = 0 like unit 0, unit 1 enters at p > 10/19, unit 3 at p > 1/1.5
    E = entry_thresholds(W)
    assert E[0, 0] == 0 and E[0, 1] == pytest.approx(10 / 19) and np.isinf(E[0, 2])
    assert E[1, 2] == 0 and E[1, 3] == pytest.approx(2 / 3)
    exact = probe_weight_ranking(W)
    assert [n.unit for n in exact.neurons] == [2, 0, 1, 3]
    assert exact.scores == pytest.approx([1, 1, 1 - 10 / 19, 1 / 3])
    grid = probe_weight_ranking(W, step=0.001)  # NeuroX sweep: same-step ties by column
    assert [n.unit for n in grid.neurons] == [0, 2, 1, 3]
    union, per = top_neurons_per_class(W, 0.5)
    assert [n.unit for n in union] == [0, 2]
    assert [n.unit for n in per["0"]] == [0] and [n.unit for n in per["1"]] == [2]
    union, per = top_neurons_per_class(W, 0.9)
    assert [n.unit for n in per["0"]] == [0, 1] and [n.unit for n in per["1"]] == [2, 3]
    assert [n.unit for n in exact.per_class["1"][:2]] == [2, 3]


def test_zero_weight_neurons_come_last():
    r = probe_weight_ranking(np.array([[0.0, 1.0, 0.0, 2.0]]))
    assert [n.unit for n in r.neurons] == [3, 1, 0, 2]
    assert r.scores[2:] == [0.0, 0.0]


# -- planted ground truth: every method ranks the planted units first ---------------------------------------
def test_planted_neurons_rank_first_for_every_method():
    X, y = planted()
    tr, dv = slice(0, 300), slice(300, None)
    want = {Neuron("layer.1", 3), Neuron("layer.2", 2), Neuron("layer.2", 9)}
    probe = LinearProbe(**FAST).fit(X[tr], y[tr])
    train, dev = ArrayView(X[tr], y[tr], index=INDEX), ArrayView(X[dv], y[dv], index=INDEX)
    rankings = [
        probe_weight_ranking(probe, INDEX),
        probeless_ranking(X[tr], y[tr], index=INDEX),
        gaussian_ranking(train, dev, max_dims=4, progress=False),
        gaussian_ranking(train, dev, criterion="accuracy", max_dims=4, progress=False),
        gaussian_ranking(train, dev, criterion="mi", max_dims=4, progress=False),
    ]
    for r in rankings:
        assert set(r.top(3)) == want, r
        assert len(r) == 20
    # per-class detail (|W[c]| also counts the large negative weights on other classes' units)
    pw = rankings[0]
    assert set(pw.per_class["A"][:3]) == want and set(pw.per_class["C"][:3]) == want
    assert rankings[1].per_class["B"][0] == Neuron("layer.2", 2)
    # AP: one concept at a time, token and sentence level
    for c, j in zip(CLASSES, PLANTED):
        assert ap_ranking(X, y == c, index=INDEX).top(1) == INDEX.neurons([j])
    sent = np.repeat(np.arange(len(X) // 3), 3)
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(len(X), 20))
    concept = np.zeros(len(X), bool)
    pos_sent = rng.random(len(X) // 3) < 0.3
    hit_rows = np.flatnonzero(np.repeat(pos_sent, 3)).reshape(-1, 3)[:, 1]
    concept[hit_rows] = True
    Xs[hit_rows, 5] += 4.0  # only one token of each positive sentence fires
    r = ap_ranking(Xs, concept, level="sentence", sent_ids=sent)
    assert r.top(1) == [Neuron("x", 5)]
    assert r.meta["positive_fraction"] == pytest.approx(pos_sent.mean())


def test_gaussian_selection_curve_is_the_direct_loglik():
    X, y = planted(n=300, d=18)
    g = GaussianProbe().fit(X[:200], y[:200])
    sel, curve, _ = greedy_select(g, X[200:], y[200:], max_dims=3, progress=False)
    for k in range(1, 4):
        assert curve[k - 1] == pytest.approx(g.log_likelihood(X[200:], y[200:], dims=sel[:k]), abs=1e-8)
    mi = g.mutual_information(X[200:], y[200:], dims=sel)
    assert 0 < mi <= g.prior_entropy() + 1e-9


def test_gaussian_map_niw_estimate_by_hand():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.2], [0, 0, 0.5]])
    y = np.array(["p", "q"])[rng.integers(0, 2, 40)]
    g = GaussianProbe().fit(X, y)
    d, k0, nu0 = 3, 0.01, 5
    mu0, lam0 = X.mean(0), np.diag(X.var(0))
    for c, name in enumerate(["p", "q"]):
        Xc = X[y == name]
        n = len(Xc)
        xbar = Xc.mean(0)
        S = (Xc - xbar).T @ (Xc - xbar)
        mu = (k0 * mu0 + n * xbar) / (k0 + n)
        lam = lam0 + S + k0 * n / (k0 + n) * np.outer(xbar - mu0, xbar - mu0)
        sigma = lam / (nu0 + n + d + 2)
        np.testing.assert_allclose(g.means_[c], mu, atol=1e-7)
        np.testing.assert_allclose(g.covariance(c, [0, 1, 2]), sigma, atol=1e-7)
        np.testing.assert_allclose(g.covariance(c, [2, 0], [1]), sigma[[2, 0]][:, [1]], atol=1e-7)
        # a subset of dimensions is the sub-mean / sub-covariance, no refit
        lj = g.log_joint(X[:5], dims=[0, 2])[:, c]
        ref = np.log(n / 40) + multivariate_normal(mu[[0, 2]], sigma[np.ix_([0, 2], [0, 2])]).logpdf(X[:5, [0, 2]])
        np.testing.assert_allclose(lj, ref, atol=1e-7)


# -- probeless and AP by hand ---------------------------------------------------------------------------
def test_probeless_scores_are_pairwise_mean_differences():
    X = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 1.0], [2.0, 2.0]])
    y = np.array(["a", "a", "b", "b", "c"])
    # means: a=(2,0) b=(0,3) c=(2,2); unit 0: |2-0|+|2-2|+|0-2| = 4; unit 1: 3+2+1 = 6
    r = probeless_ranking(X, y, standardize=False)  # the paper's raw variant
    assert [n.unit for n in r.neurons] == [1, 0] and r.scores == pytest.approx([6, 4])
    assert r.per_class_scores["a"] == pytest.approx([5, 2])  # unit1: 3+2, unit0: 2+0
    # standardised (the default): divided by each unit's std over all rows (unit 0: sqrt(1.36), unit 1:
    # sqrt(3.44)), which puts unit 0 first: 4 / 1.166 = 3.43 > 6 / 1.855 = 3.23
    s0, s1 = X[:, 0].std(), X[:, 1].std()
    r = probeless_ranking(X, y)
    assert [n.unit for n in r.neurons] == [0, 1] and r.scores == pytest.approx([4 / s0, 6 / s1])
    assert r.meta["standardized"] and not probeless_ranking(X, y, standardize=False).meta["standardized"]


def test_average_precision_matches_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    S = np.round(rng.normal(size=(200, 7)), 0)  # many ties
    m = rng.random(200) < 0.2
    want = [average_precision_score(m, S[:, j]) for j in range(7)]
    np.testing.assert_allclose(average_precision_columns(S, m, chunk=3), want)
    # a random unit's AP is about the positive fraction, not 0.5
    big = rng.normal(size=(4000, 3))
    mm = rng.random(4000) < 0.1
    assert np.all(np.abs(average_precision_columns(big, mm) - mm.mean()) < 0.03)
    with pytest.raises(ValueError, match="positive and negative"):
        average_precision_columns(S, np.zeros(200, bool))


# -- the Ranking type ---------------------------------------------------------------------------------
def test_ranking_api_and_json(tmp_path):
    ns = INDEX.neurons()
    r = Ranking(neurons=ns[::-1], scores=list(range(20, 0, -1)), method="m", per_class={"A": ns[:2]}, meta={"x": 1})
    assert r.top(2) == [ns[19], ns[18]] and r.bottom(2) == [ns[0], ns[1]]
    assert len(r.top_fraction(0.1)) == 2 and len(r.top_fraction(0.001)) == 1
    assert r.random(5, seed=1) == r.random(5, seed=1) and len(set(r.random(20))) == 20
    assert r.by_layer() == {"layer.1": 8, "layer.2": 12} and r.by_layer(3) == {"layer.2": 3}
    np.testing.assert_array_equal(r.columns(INDEX)[:3], [19, 18, 17])
    back = Ranking.from_json(r.to_json(tmp_path / "r.json"))
    assert Ranking.from_json(tmp_path / "r.json").neurons == r.neurons
    assert back.neurons == r.neurons and back.scores == r.scores and back.per_class == r.per_class
    assert back.meta == {"x": 1}
    with pytest.raises(ValueError, match="at most once"):
        Ranking(neurons=[ns[0], ns[0]], scores=[1, 1], method="m")
    with pytest.raises(ValueError, match="k must be"):
        r.top(21)
    with pytest.raises(KeyError, match="not in the matrix"):
        r.columns(NeuronIndex({"layer.1": 8}))


# -- LCA minimal neuron set --------------------------------------------------------------------------------
def test_minimal_neuron_set_on_planted_data():
    X, y = planted(n=600, d=60)
    tr, dv = slice(0, 400), slice(400, None)
    probe = LinearProbe(**FAST)
    ranking = probe_weight_ranking(probe.clone().fit(X[tr], y[tr]))
    res = minimal_neuron_set((X[tr], y[tr]), (X[dv], y[dv]), ranking, tolerance=0.02,
                             fractions=(0.02, 0.05, 0.1, 0.5, 1.0), probe=probe)
    assert res.reached and res.k == 3 and set(n.unit for n in res.neurons) == set(PLANTED)
    assert res.dev_acc >= res.oracle_acc - 0.02
    assert [c["k"] for c in res.curve] == [1, 3, 6, 30, 60]
    # top 5% retrained ~ full probe; a random 5% is far below
    rand = ranking.random(3, seed=0)
    cols = ranking.columns(60, rand)
    rand_acc = probe.clone().fit(X[tr][:, cols], y[tr]).score(X[dv][:, cols], y[dv])
    assert rand_acc < res.oracle_acc - 0.2 or set(cols) == set(PLANTED)
