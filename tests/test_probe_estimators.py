"""Probes as scikit-learn estimators that remember their neurons (issue 17): clone / GridSearchCV /
cross_val_score / pipelines, validated parameters, NotFittedError, no global RNG or thread state,
neurons_in_ checked by rankings, predictions and ablations, the stopping rule, masking, and the exact
scikit-learn optimum at matched regularisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from finegrain.errors import NotFittedError, ParameterError
from finegrain.evaluate import probe_ablation
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.probe import ArraySource, LinearProbe, LogisticProbe, MLPProbe, RidgeProbe, StoreSource
from finegrain.rank import probe_weight_ranking, probeless_ranking
from finegrain.store import StoreWriter
from test_probe import planted

QUIET = dict(progress=False, device="cpu")


def two_layer_store(tmp_path, n_sent=60, seed=0):
    """layer.2 and layer.3, both 4 wide; layer.3 unit 2 carries the label, layer.2 is noise."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(4, 8, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    pos = np.concatenate([np.arange(k) for k in lens])
    n = len(sent)
    yi = rng.integers(0, 2, n)
    l2 = rng.normal(size=(n, 4)).astype(np.float32)
    l3 = rng.normal(size=(n, 4)).astype(np.float32)
    l3[:, 2] += 3.0 * yi
    w = StoreWriter(tmp_path / "two.fgstore", {"layer.2": 4, "layer.3": 4}, n, label_columns=["y"], dtype="float32")
    w.write({"layer.2": l2, "layer.3": l3}, sent, pos, [f"w{i % 17}" for i in range(n)],
            {"y": np.array(["a", "b"])[yi]})
    return w.commit()


def test_probes_are_scikit_learn_estimators():
    X, y = planted(n=300)
    p = LinearProbe(l2=1e-3, **QUIET)
    assert is_classifier(p) and is_classifier(MLPProbe()) and is_regressor(RidgeProbe())
    c = clone(p)
    assert c.get_params() == p.get_params() and c is not p
    assert p.set_params(l1=0.0) is p and p.l1 == 0.0
    scores = cross_val_score(LinearProbe(**QUIET), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    grid = GridSearchCV(LinearProbe(**QUIET), {"l2": [1e-5, 10.0]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"l2": 1e-5}  # a huge penalty flattens the weights: the search sees it
    pipe = make_pipeline(StandardScaler(), LinearProbe(**QUIET)).fit(X, y)
    assert pipe.score(X, y) > 0.85
    t = X @ np.linspace(-1, 1, X.shape[1])
    assert cross_val_score(RidgeProbe(alpha=1.0), X, t, cv=3).min() > 0.99  # R^2


def test_not_fitted_and_invalid_parameters():
    X, y = planted(n=60)
    for probe in (LinearProbe(), LogisticProbe(), MLPProbe(), RidgeProbe()):
        with pytest.raises(NotFittedError, match="not fitted"):
            probe.predict(X)
        assert not hasattr(probe, "coef_") or isinstance(probe, RidgeProbe)  # NotFittedError is an AttributeError
    with pytest.raises(Exception, match="not fitted"):
        check_is_fitted(LinearProbe())
    check_is_fitted(LinearProbe(**QUIET).fit(X, y))
    bad = [dict(epochs=0), dict(lr=-1.0), dict(batch_size=0), dict(validation_fraction=0.7), dict(solver="sgd"),
           dict(n_threads=0), dict(random_state=-1), dict(patience=0), dict(tol=-1.0), dict(l2="big")]
    for kw in bad:
        probe = LinearProbe(**kw, **QUIET)  # constructing never raises (scikit-learn's convention) ...
        with pytest.raises(ParameterError):
            probe.fit(X, y)  # ... fitting validates
    with pytest.raises(ParameterError, match="no labels"):
        LinearProbe(**QUIET).fit(ArraySource(X))


def test_no_global_rng_or_thread_changes():
    X, y = planted(n=300)
    torch.manual_seed(123)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    fits = [LinearProbe(solver=s, random_state=r, **QUIET).fit(X, y) for s in ("adam", "lbfgs") for r in (0, 0, 1)]
    MLPProbe(hidden=(8,), dropout=0.2, epochs=3, **QUIET).fit(X, y)
    LinearProbe(n_threads=1, **QUIET).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_num_threads() == threads
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)  # random_state makes a fit reproducible
    assert not np.array_equal(fits[0].coef_, fits[2].coef_)  # and it matters for Adam
    with pytest.warns(DeprecationWarning, match="random_state"):
        old = LinearProbe(seed=1, solver="adam", **QUIET).fit(X, y)
    np.testing.assert_array_equal(old.coef_, fits[2].coef_)


def test_probe_remembers_its_neurons(tmp_path):
    store = two_layer_store(tmp_path)
    view = StoreSource(store, ["layer.3"], label="y")
    probe = LinearProbe(**QUIET).fit(view)  # labels from the view
    assert probe.neurons_in_ == NeuronIndex({"layer.3": 4}) and probe.neurons_[2] == Neuron("layer.3", 2)
    # the bug: a probe fitted on layer.3 ranked [x:2, ...]; now the ranking names layer.3's units
    ranking = probe_weight_ranking(probe)
    assert ranking.neurons[0] == Neuron("layer.3", 2)
    with pytest.raises(ParameterError, match="not the neurons"):
        probe_weight_ranking(probe, NeuronIndex({"layer.2": 4}))  # same width, other neurons
    with pytest.raises(ParameterError, match="not the neurons"):
        probe.predict(StoreSource(store, ["layer.2"]))
    assert len(probe.predict(store.matrix(["layer.3"]))) == store.n_rows  # a bare array: width checked only
    with pytest.raises(ParameterError, match="columns"):
        probe.predict(store.matrix())
    other = StoreSource(store, ["layer.2"], label="y")
    with pytest.raises(ParameterError, match="not the neurons"):
        probe_ablation(other, other, ranking, probe=probe, modes=("keep",))
    # a probe fitted on a bare array takes the index that names its columns
    bare = LinearProbe(**QUIET).fit(store.matrix(["layer.3"]), store.labels("y"))
    assert probe_weight_ranking(bare, NeuronIndex({"layer.3": 4})).neurons[0] == Neuron("layer.3", 2)
    assert probe_weight_ranking(bare).neurons[0] == Neuron("x", 2)
    assert probeless_ranking(view).neurons[0] == Neuron("layer.3", 2)


def test_stopping_rule_and_its_report():
    X, y = planted(n=3000)  # Adam steps per epoch grow with the rows; 300 rows are 3 steps an epoch
    tr, dv = slice(0, 2400), slice(2400, None)
    for solver in ("adam", "lbfgs"):
        p = LinearProbe(solver=solver, l2=1e-5, **QUIET).fit(X[tr], y[tr], dev=(X[dv], y[dv]))
        assert p.solver_ == solver and p.monitor_ == "dev" and p.converged_ is True
        assert 1 <= p.best_epoch_ <= p.n_epochs_ == p.n_iter_ == len(p.dev_loss_history_) < p.epochs
        # the weights kept are those of the best dev loss
        assert min(p.dev_loss_history_) == pytest.approx(p.dev_loss_history_[p.best_epoch_ - 1])
    # l2="auto" with L-BFGS: a path of penalties, the one with the lowest dev loss kept
    auto = LinearProbe(solver="lbfgs", **QUIET).fit(X[tr], y[tr], dev=(X[dv], y[dv]))
    path = {e["l2"]: e["dev_loss"] for e in auto.l2_path_}
    assert auto.l2_ == min(path, key=path.get) and len(path) >= 3 and auto.converged_ is True
    W = auto.penalized_coef_
    penalty = auto.l1 * np.abs(W).sum() + auto.l2_ * np.linalg.norm(W)
    assert auto.loss(X[dv], y[dv]) - penalty == pytest.approx(path[auto.l2_], rel=1e-3)  # the kept weights
    assert LinearProbe(solver="adam", **QUIET).fit(X[:600], y[:600]).l2_ == 1e-5
    held = LinearProbe(**QUIET).fit(X, y)  # no dev given: 10% of the sentences held out
    assert held.monitor_ == "dev" and held.solver_ == "lbfgs" and len(held.dev_loss_history_) == len(held.l2_path_)
    assert LinearProbe(early_stopping=False, **QUIET).fit(X, y).monitor_ == "train"
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        short = LinearProbe(epochs=1, solver="adam", **QUIET).fit(X, y)
    assert short.converged_ is False and short.n_epochs_ == 1
    nx = LinearProbe.neurox(**QUIET)
    assert (nx.epochs, nx.lr, nx.batch_size, nx.l1, nx.l2, nx.standardize, nx.tol) == (10, 1e-3, 128, 1e-5, 1e-5,
                                                                                       False, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tol=None checks nothing and warns about nothing
        fixed = nx.fit(X, y)
    assert fixed.converged_ is None and fixed.n_epochs_ == 10


def test_lbfgs_reaches_scikit_learns_optimum_at_matched_regularisation():
    """LogisticRegression(C) minimises mean CE + ||W||^2 / (2 C n); its optimum W* is this probe's optimum
    with l1 = 0 and l2 = ||W*|| / (C n) (same gradient, both convex), on the same standardised inputs."""
    rng = np.random.default_rng(0)
    n, d = 1500, 12
    Z = rng.normal(size=(n, 4))
    X = (Z @ rng.normal(size=(4, d)) + 0.3 * rng.normal(size=(n, d)) + 3.0).astype(np.float32)  # collinear
    logits = Z @ rng.normal(size=(4, 3))
    y = np.array(["p", "q", "r"])[np.argmax(logits + rng.gumbel(size=logits.shape), 1)]
    C = 0.5
    sk = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, tol=1e-8)).fit(X, y)
    W = sk[-1].coef_
    probe = LinearProbe(l1=0, l2=float(np.linalg.norm(W) / (C * n)), early_stopping=False, tol=1e-9, epochs=500,
                        solver="lbfgs", **QUIET).fit(X, y)
    # the same optimum: equal objectives, equal weights up to the flat directions of collinear units
    ce = -np.mean(sk.predict_log_proba(X)[np.arange(n), np.searchsorted(sk.classes_, y)])
    assert probe.loss(X, y) == pytest.approx(ce + probe.l2 * np.linalg.norm(W), abs=1e-5)
    np.testing.assert_allclose(probe.penalized_coef_, W, atol=0.01 * np.abs(W).max())
    assert (probe.predict(X) == sk.predict(X)).mean() > 0.995
    # coef_ / intercept_ are on the input units: X @ coef_.T + intercept_ are the logits
    np.testing.assert_allclose(X @ probe.coef_.T + probe.intercept_, probe.decision_function(X), rtol=1e-4,
                               atol=1e-3)
    adam = LinearProbe(l1=0, l2=probe.l2, solver="adam", **QUIET).fit(X, y)
    assert abs(adam.score(X, y) - sk.score(X, y)) < 0.01


@pytest.mark.parametrize("cls", [LinearProbe, MLPProbe])
def test_masked_probe_equals_the_probe_on_filled_inputs(cls):
    X, y = planted(n=300)
    p = cls(epochs=5, **QUIET).fit(X, y)
    keep = np.array([1, 3, 5])
    fill = X.mean(0)
    Xf = np.tile(fill, (len(X), 1)).astype(np.float32)
    Xf[:, keep] = X[:, keep]
    np.testing.assert_allclose(p.masked(keep, fill).decision_function(X), p.decision_function(Xf), rtol=1e-4,
                               atol=1e-4)
    Xz = np.zeros_like(X)
    Xz[:, keep] = X[:, keep]
    np.testing.assert_allclose(p.masked(keep).decision_function(X), p.decision_function(Xz), rtol=1e-4, atol=1e-4)
    assert p.masked(keep).n_features_in_ == X.shape[1]  # the copy is a probe on the same inputs
    np.testing.assert_allclose(p.decision_function(Xz), p.decision_function(Xz))  # the original is untouched
