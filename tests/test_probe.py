"""Probes: elastic-net loss, training, streaming from a store, layer-wise probing, splits, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finegrain.errors import NotFittedError
from finegrain.neurons import Neuron
from finegrain.probe import (
    ArraySource,
    LinearProbe,
    LogisticProbe,
    MLPProbe,
    RidgeProbe,
    StoreSource,
    classification_metrics,
    elastic_net_loss,
    probe_layers,
    resolve_splits,
    split_by_sentence,
)
from finegrain.store import StoreWriter

FAST = dict(epochs=15, lr=1e-2, batch_size=32, progress=False, device="cpu")


def planted(n=400, d=12, classes=("A", "B", "C"), strength=3.0, seed=0):
    """Gaussian noise plus one planted unit per class that fires for that class."""
    rng = np.random.default_rng(seed)
    yi = rng.integers(0, len(classes), n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    for c in range(len(classes)):
        X[:, 2 * c + 1] += strength * (yi == c)
    return X, np.array(classes)[yi]


def make_store(tmp_path, n_sent=60, seed=0, name="t.fgstore"):
    """Word-level store: layer.1 encodes the label (one unit per class), layer.2 is noise."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 8, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    pos = np.concatenate([np.arange(k) for k in lens])
    n = len(sent)
    tags = np.array(["N", "V", "D"])
    yi = rng.integers(0, 3, n)
    words = np.array([f"w{rng.integers(0, 40)}" for _ in range(n)])
    l1 = rng.normal(size=(n, 6)).astype(np.float32)
    l1[np.arange(n), yi] += 3.0
    l2 = rng.normal(size=(n, 5)).astype(np.float32)
    w = StoreWriter(tmp_path / name, {"layer.1": 6, "layer.2": 5}, n, label_columns=["pos"], dtype="float32",
                    chunk_rows=37)
    for s in range(0, n, 50):
        sl = slice(s, min(s + 50, n))
        w.write({"layer.1": l1[sl], "layer.2": l2[sl]}, sent[sl], pos[sl], words[sl], {"pos": tags[yi][sl]})
    return w.commit()


# -- elastic-net loss ----------------------------------------------------------------------------
def test_elastic_net_loss_matches_hand_formula():
    W = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]], dtype=np.float32)
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    X = np.array([[1.0, 2.0], [-1.0, 0.5]], dtype=np.float32)
    y = np.array(["b", "c"])
    l1, l2 = 0.01, 0.1
    logits = X @ W.T + b
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -(logp[0, 1] + logp[1, 2]) / 2
    expected = ce + l1 * 7.5 + l2 * np.sqrt(1 + 4 + 0.25 + 0 + 1 + 9)  # Frobenius norm, not squared
    probe = LinearProbe(l1=l1, l2=l2, device="cpu").set_weights(W, b, ["a", "b", "c"])
    assert probe.loss(X, y) == pytest.approx(expected, rel=1e-5)
    got = elastic_net_loss(torch.tensor(logits), torch.tensor([1, 2]), torch.tensor(W), l1, l2)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # the bias is not penalised: changing it only changes the cross-entropy term
    probe2 = LinearProbe(l1=l1, l2=l2, device="cpu").set_weights(W, b + 5, ["a", "b", "c"])
    assert probe2.loss(X, y) == pytest.approx(expected, rel=1e-5)


class _AutogradLinear(LinearProbe):
    """The textbook version: autograd through elastic_net_loss and torch.optim.Adam."""

    def _init_optimizer(self):
        self.optimizer_ = torch.optim.Adam(self.model_.parameters(), lr=self.lr)

    def _step(self, xb, yb, total):
        self.optimizer_.zero_grad()
        loss = elastic_net_loss(self.model_(xb), yb, self.model_.weight, self.l1, self.l2)
        loss.backward()
        self.optimizer_.step()
        total.add_(loss.detach(), alpha=len(yb))


def test_hand_written_gradient_equals_autograd():
    X, y = planted(n=200)
    kw = dict(l1=1e-3, l2=1e-2, epochs=3, lr=1e-2, batch_size=16, progress=False, device="cpu", solver="adam")
    a = LinearProbe(**kw).fit(X, y)
    b = _AutogradLinear(**kw).fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-4)
    np.testing.assert_allclose(a.loss_history_, b.loss_history_, rtol=1e-4)


def test_bfloat16_probe_matches_float32_probe():
    """Mixed precision (bf16 matrix and matmuls, float32 weights and Adam) learns the same probe."""
    X, y = planted(n=600, d=40)
    kw = dict(l1=1e-4, l2=1e-4, epochs=5, lr=1e-2, batch_size=32, progress=False, device="cpu", solver="adam")
    a = LinearProbe(**kw).fit(X, y)
    b = LinearProbe(precision="bfloat16", **kw).fit(X, y)
    assert b.model_.weight.dtype == torch.float32
    assert np.corrcoef(a.coef_.ravel(), b.coef_.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(a.loss_history_, b.loss_history_, rtol=0.03)
    assert (a.predict(X) == b.predict(X)).mean() > 0.98
    with pytest.raises(ValueError, match="precision"):
        LinearProbe(precision="int8").fit(X, y)


def test_bfloat16_on_a_cpu_without_bfloat16_units_warns(monkeypatch):
    """Emulated bfloat16 matmuls are ~10x slower than float32 (AVX2 CPUs): the user is told, not left to find
    out; a CPU with the units, or float32, fits silently."""
    import warnings

    import finegrain.probe.probes as probes

    X, y = planted(n=200, d=12)
    kw = dict(epochs=2, lr=1e-2, batch_size=32, progress=False, device="cpu", solver="adam", precision="bfloat16")
    monkeypatch.setattr(probes, "cpu_has_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="10x slower than float32"):
        LinearProbe(**kw).fit(X, y)
    monkeypatch.setattr(probes, "cpu_has_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        LinearProbe(**kw).fit(X, y)
        LinearProbe(**{**kw, "precision": "float32"}).fit(X, y)


def test_onednn_matmul_equals_torch_mm_and_falls_back():
    from finegrain.probe.probes import _MatmulNT

    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(13, 300, generator=g), torch.randn(64, 300, generator=g), torch.randn(13, 64, generator=g)
    mm = _MatmulNT(torch.device("cpu"))
    torch.testing.assert_close(mm(a, b), a @ b.t(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mm(a, b, add=c), a @ b.t() + c, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mm(a, b.t().contiguous().t()), a @ b.t(), rtol=1e-5, atol=1e-4)  # strided
    torch.testing.assert_close(mm(a.double(), b.double()), a.double() @ b.double().t())  # not float32: torch.mm

    def broken(*args, **kw):
        raise RuntimeError("no primitive")

    mm._op = broken  # an op that fails on this machine: torch.mm from then on, same result
    torch.testing.assert_close(mm(a, b[:10]), a @ b[:10].t())
    assert mm._op is None


# -- estimators ----------------------------------------------------------------------------------
def test_linear_probe_fit_predict_keeps_class_names():
    X, y = planted()
    p = LinearProbe(**FAST).fit(X[:300], y[:300])
    assert list(p.classes_) == ["A", "B", "C"]
    assert p.coef_.shape == (3, X.shape[1]) and p.intercept_.shape == (3,)
    proba = p.predict_proba(X[300:])
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert set(p.predict(X[300:])) <= {"A", "B", "C"}
    assert p.score(X[300:], y[300:]) > 0.85
    m = p.evaluate(X[300:], y[300:])
    assert m["accuracy"] == pytest.approx(p.score(X[300:], y[300:]))
    assert set(m["per_class"]) == {"A", "B", "C"}
    assert p.loss_history_[-1] < p.loss_history_[0]


def test_binary_probes():
    X, y = planted(classes=("neg", "pos"))
    lin = LinearProbe(**FAST).fit(X[:300], y[:300])
    log = LogisticProbe(**FAST).fit(X[:300], y[:300])
    assert log.coef_.shape == (1, X.shape[1])
    assert lin.score(X[300:], y[300:]) > 0.85 and log.score(X[300:], y[300:]) > 0.85
    # the positive-class weight of the planted "pos" unit (column 3) is positive (per unit std: the probe
    # standardises its inputs, coef_ is on the raw scale)
    assert log.penalized_coef_[0, 3] > 0.5 and int(np.argmax(log.coef_[0])) == 3
    with pytest.raises(ValueError, match="binary"):
        LogisticProbe(**FAST).fit(*planted())


def test_bad_inputs_raise_clear_errors():
    X, y = planted(n=50)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe(**FAST).fit(X, np.array(["A"] * 50))
    with pytest.raises(ValueError, match="50 rows but y has 49"):
        LinearProbe(**FAST).fit(X, y[:49])
    with pytest.raises(ValueError, match="2-D"):
        LinearProbe(**FAST).fit(X[0], y[:1])
    with pytest.raises(ValueError, match="l1 and l2"):
        LinearProbe(l1=-1).fit(X, y)
    with pytest.raises(NotFittedError, match="not fitted"):
        LinearProbe().predict(X)
    p = LinearProbe(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="columns"):
        p.predict(X[:, :5])


def test_mlp_probe_solves_xor_where_linear_cannot():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(600, 2)).astype(np.float32)
    y = np.where((X[:, 0] > 0) ^ (X[:, 1] > 0), "odd", "even")
    lin = LinearProbe(**{**FAST, "epochs": 30}).fit(X[:450], y[:450])
    mlp = MLPProbe(hidden=(32,), **{**FAST, "epochs": 30}).fit(X[:450], y[:450])
    assert lin.score(X[450:], y[450:]) < 0.7
    assert mlp.score(X[450:], y[450:]) > 0.9
    assert mlp.clone().get_params() == mlp.get_params()


def test_ridge_probe_matches_closed_form_and_streams(tmp_path):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    t = X @ np.array([1.0, -2.0, 0, 0, 0.5, 0]) + 3.0 + 0.01 * rng.normal(size=300)
    r = RidgeProbe(alpha=2.0).fit(X, t)
    sk = Ridge(alpha=2.0).fit(X.astype(np.float64), t)
    np.testing.assert_allclose(r.coef_[0], sk.coef_, atol=1e-4)
    assert r.intercept_[0] == pytest.approx(sk.intercept_, abs=1e-4)
    assert r.score(X, t) > 0.99
    r2 = RidgeProbe(alpha=2.0, block_rows=17).fit(ArraySource(X, block_rows=17), t)
    np.testing.assert_allclose(r2.coef_, r.coef_, atol=1e-5)
    with pytest.raises(ValueError, match="real-valued"):
        RidgeProbe().fit(X, np.array(["a"] * 300))


# -- streaming from a store ------------------------------------------------------------------------
def test_streaming_from_store_equals_in_memory(tmp_path):
    store = make_store(tmp_path)
    y = store.labels("pos")
    X = store.matrix()
    kw = dict(FAST, epochs=5, solver="adam")  # the streamed solver, also on the in-memory copy
    streamed = LinearProbe(**kw).fit(StoreSource(store, block_rows=64), y)
    same_blocks = LinearProbe(**kw).fit(ArraySource(X, block_rows=64, sent_ids=store.sent_ids), y)
    np.testing.assert_allclose(streamed.coef_, same_blocks.coef_, atol=1e-5)
    whole = LinearProbe(**kw).fit(X, y)  # one block: a plain full shuffle
    assert abs(streamed.score(X, y) - whole.score(X, y)) < 0.05
    np.testing.assert_allclose(streamed.predict_proba(store), same_blocks.predict_proba(X), atol=1e-5)
    # a split of the store streams only its rows
    train, _, test = store.split((0.6, 0.2, 0.2), seed=0)
    src = StoreSource(store, ["layer.1"], rows=train, block_rows=32)
    assert src.shape == (len(train), 6)
    np.testing.assert_array_equal(src.materialize(), store.matrix("layer.1", rows=train))
    np.testing.assert_array_equal(src.labels("pos"), y[train])
    p = LinearProbe(**FAST).fit(src, y[train])  # 15 epochs: 5 stop short of convergence on 110 rows
    assert p.score(store.matrix("layer.1", rows=test), y[test]) > 0.8
    sub = StoreSource(store, neurons=["layer.2:1", Neuron("layer.1", 0)])
    np.testing.assert_array_equal(sub.materialize()[:, 1], X[:, 0])


# -- layer-wise probing, splits, metrics -----------------------------------------------------------------
def test_probe_layers_table_json_plot(tmp_path):
    store = make_store(tmp_path)
    res = probe_layers(store, "pos", probe=LinearProbe(**FAST), splits=(0.7, 0.15, 0.15))
    assert [r["layer"] for r in res.rows] == ["layer.1", "layer.2", "all"]
    acc = res.accuracy("test")
    assert acc["layer.1"] > 0.8 and acc["layer.2"] < 0.6 and acc["all"] > 0.8
    assert res.rows[2]["n_neurons"] == 11
    assert "layer.1" in res.table()
    png = res.plot(tmp_path / "layers.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    res.to_json(tmp_path / "r.json")
    loaded = type(res).from_json(tmp_path / "r.json")
    assert loaded.rows[0]["test_acc"] == pytest.approx(res.rows[0]["test_acc"])
    streamed = probe_layers(store, "pos", layers=["layer.1"], probe=LinearProbe(**FAST), stream=True,
                            splits=(0.7, 0.15, 0.15))
    assert streamed.rows[0]["test_acc"] > 0.8 and len(streamed.rows) == 1


def test_splits_never_share_a_sentence(tmp_path):
    store = make_store(tmp_path)
    parts = resolve_splits(store, (0.7, 0.15, 0.15), seed=3)
    sets = [set(store.sent_ids[p].tolist()) for p in parts]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(p) for p in parts) == store.n_rows
    sid = np.repeat(np.arange(30), 4)
    for p in split_by_sentence(sid, (0.5, 0.5), seed=1):
        assert all((sid[p] == s).sum() == 4 for s in np.unique(sid[p]))
    rows = np.arange(store.n_rows)
    with pytest.raises(ValueError, match="split by sentence"):
        resolve_splits(store, (rows[:10], rows[5:20], rows[20:]))


def test_classification_metrics_hand_example():
    y = np.array(["a", "a", "b", "b", "c"])
    p = np.array(["a", "b", "b", "b", "a"])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_column_stats_match_float64_whatever_the_blocks():
    """The float32 chunked sums agree with float64 statistics of the same rows: a unit with a large mean
    against its spread, a constant unit, tiny and large scales; blocks of any size give the same values."""
    from finegrain.probe.stats import column_stats, column_stats_of_blocks

    rng = np.random.default_rng(0)
    scale = np.array([1.0, 1e-3, 10.0, 1.0, 1.0, 0.0, 100.0])
    shift = np.array([1e4, 5.0, -3.0, 0.0, 1e-3, 2.0, 0.0])
    X = (rng.standard_normal((5000, 7)) * scale + shift).astype(np.float32)
    X64 = X.astype(np.float64)
    for st in (column_stats(X), column_stats(X, block_rows=700), column_stats_of_blocks([X[:3], X[3:4000], X[4000:]])):
        assert st.n == len(X)
        m, sd = X64.mean(0), X64.std(0)
        assert np.all(np.abs(st.mean - m) <= 1e-6 * (np.abs(m) + sd)), st.mean - m  # to 1e-6 of the values
        np.testing.assert_allclose(st.std, sd, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(st.mean_abs, np.abs(X64).mean(0), rtol=1e-6)
    assert column_stats(X).scale()[5] == 1.0  # a constant unit is not scaled


def test_fit_on_an_array_copies_its_rows_once_and_leaves_them_unchanged():
    """Fitting on an in-memory view costs about one copy of the training rows (the held-out split,
    standardised in place), not the float64 work arrays of the statistics or a second standardised copy;
    the caller's array is never written, and the in-place path gives the same probe as a fit on a copy."""
    import tracemalloc

    from finegrain.probe import LinearProbe
    from finegrain.store.view import ArrayView

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((20000, 256)) * 2 + 3).astype(np.float32)
    y = (X[:, :4] @ np.array([1.0, -1.0, 0.5, 2.0]) > 6).astype(int) + (X[:, 5] > 3)
    sid = np.arange(len(X)) // 10
    before = X.copy()
    LinearProbe(progress=False, epochs=1).fit(ArrayView(X[:200], y[:200], sent_ids=sid[:200]))  # imports done
    tracemalloc.start()
    try:
        probe = LinearProbe(progress=False, epochs=3).fit(ArrayView(X, y, sent_ids=sid))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(X, before)
    assert peak < 1.5 * X.nbytes, f"fit allocated {peak / X.nbytes:.2f}x the training matrix"
    assert peak > 0.8 * X.nbytes  # the fit's own copy of the rows is seen, so the bound measures something
    again = LinearProbe(progress=False, epochs=3).fit(ArrayView(X.copy(), y, sent_ids=sid))
    np.testing.assert_allclose(probe.coef_, again.coef_, rtol=1e-6, atol=1e-7)
