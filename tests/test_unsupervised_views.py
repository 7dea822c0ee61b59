"""finegrain.unsupervised on issue 17's contract: store views in (rows and columns of a store, streamed),
result objects out, finegrain's LinearProbe inside redundancy analysis."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.neurons import Neuron
from finegrain.probe import LinearProbe
from finegrain.results import result_from_json
from finegrain.store import StoreWriter
from finegrain.store.view import ArrayView
from finegrain.unsupervised import (
    CrossModelCorrelation,
    LatentConcepts,
    NeuronClusters,
    RedundancyReport,
    SimilarityMatrix,
    analyze_redundancy,
    cluster_neurons,
    correlation_matrix,
    cross_model_correlation,
    linear_cka,
    similarity_matrix,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three layers of 500 rows; the label lives in layer.1:0-2, layer.1:3 copies layer.1:0."""
    rng = np.random.default_rng(0)
    n = 500
    y = rng.integers(0, 3, size=n)
    l0 = rng.normal(size=(n, 5))
    l1 = rng.normal(size=(n, 6))
    l1[:, :3] += 3 * np.eye(3)[y]
    l1[:, 3] = l1[:, 0] + 0.02 * rng.normal(size=n)
    l2 = np.tanh(l1 @ rng.normal(size=(6, 4))) + 0.3 * rng.normal(size=(n, 4))
    layers = {"layer.0": l0, "layer.1": l1, "layer.2": l2}
    words = [f"w{i % 40}" for i in range(n)]
    path = tmp_path_factory.mktemp("u") / "u.fgstore"
    w = StoreWriter(path, {k: v.shape[1] for k, v in layers.items()}, n, label_columns=["pos"], dtype="float32",
                    chunk_rows=64)
    w.write({k: v.astype(np.float32) for k, v in layers.items()}, np.arange(n) // 10, np.arange(n) % 10, words,
            {"pos": np.array(["N", "V", "A"])[y]})
    return w.commit()


def test_views_select_rows_and_columns_and_stream(store):
    rows = np.flatnonzero(store.sent_ids % 3 != 0)
    view = store.view(layers=["layer.1", "layer.2"], rows=rows, block_rows=33)
    X = store.matrix(["layer.1", "layer.2"], rows=rows).astype(np.float64)
    got = correlation_matrix(view, chunk_rows=41)
    np.testing.assert_allclose(got.corr, np.corrcoef(X.T), atol=1e-8)
    assert got.neurons_a[6] == Neuron("layer.2", 0)
    # per-layer CKA of the view's rows = CKA of the same rows in memory
    A, B = X[:, :6] - X[:, :6].mean(0), X[:, 6:] - X[:, 6:].mean(0)
    ref = np.linalg.norm(B.T @ A) ** 2 / (np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B))
    assert linear_cka(view, view, layers_x="layer.1", layers_y="layer.2") == pytest.approx(ref, abs=1e-9)
    m = similarity_matrix(view, method="cka")
    assert m.rows == ["layer.1", "layer.2"] and m.values[0, 1] == pytest.approx(ref, abs=1e-9)
    # a view of single neurons, in its own order
    some = store.view(neurons=["layer.2:1", "layer.0:3"])
    c = correlation_matrix(some, store.view(layers=["layer.0"]))
    assert c.neurons_a == [Neuron("layer.2", 1), Neuron("layer.0", 3)]
    assert c.corr[1, 3] == pytest.approx(1.0)
    # array views carry their neuron index
    av = ArrayView(X[:, :6], index=[f"layer.1:{u}" for u in range(6)])
    np.testing.assert_allclose(correlation_matrix(av).corr, np.corrcoef(X[:, :6].T), atol=1e-8)


def test_unsupervised_results_round_trip(store, tmp_path):
    res = cross_model_correlation([store.view(layers=["layer.1"]), store.view(layers=["layer.2"])],
                                  names=["one", "two"])
    back = result_from_json(res.to_json())
    assert isinstance(back, CrossModelCorrelation) and back.to_dict() == res.to_dict()
    assert back.ranking("one", "maxcorr").neurons == res.ranking("one", "maxcorr").neurons
    np.testing.assert_allclose(back.max_corr[("one", "two")], res.max_corr[("one", "two")])
    assert res.plot(tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    sm = similarity_matrix(store, method="pwcca")
    assert SimilarityMatrix.from_json(sm.to_json()).to_dict() == sm.to_dict()
    assert sm.plot(tmp_path / "s.png").exists() and "<img" in sm._repr_html_()
    cl = cluster_neurons(store.view(layers=["layer.1"]))
    assert cl.cluster_of("layer.1:3") == cl.cluster_of("layer.1:0")
    assert NeuronClusters.from_json(cl.to_json()).to_dict() == cl.to_dict()
    lc = LatentConcepts(n_clusters=3, method="kmeans", max_per_type=None).fit(store.view(layers=["layer.1"]),
                                                                             label_columns=["pos"])
    assert all(c.alignment["pos"].aligned for c in lc.clusters)
    back = result_from_json(lc.to_json())
    np.testing.assert_array_equal(back.predict(store.matrix(["layer.1"])), lc.predict(store.matrix(["layer.1"])))
    assert lc.plot(tmp_path / "l.png").exists() and "latent concepts" in lc.table()


def test_latent_concepts_of_a_row_subset(store):
    rows = np.flatnonzero(store.sent_ids < 20)
    lc = LatentConcepts(n_clusters=3, method="kmeans", max_per_type=None).fit(
        store.view(layers=["layer.1"], rows=rows), label_columns=["pos"])
    assert len(lc.rows) == len(rows) and set(lc.words_) <= {str(w) for w in store.words[rows]}


def test_redundancy_takes_a_labelled_view_and_uses_linear_probes(store, monkeypatch, tmp_path):
    fits = []
    orig = LinearProbe.fit

    def spy(self, X, y):
        fits.append(type(self).__name__)
        return orig(self, X, y)

    monkeypatch.setattr(LinearProbe, "fit", spy)
    rep = analyze_redundancy(store.view(label="pos"), None, delta_layer=0.05, delta_neuron=0.05)
    # one probe for the oracle, one per layer, one per point of the neuron curve: all LinearProbes
    assert fits == ["LinearProbe"] * (1 + len(rep.layer_accuracies) + len(rep.curve))
    assert rep.label == "pos" and rep.selected_layer == "layer.1" and 1 <= rep.n_needed <= 3
    assert rep.layer_accuracies["layer.0"] < 0.6 < rep.oracle_accuracy
    same = analyze_redundancy(store, "pos", delta_layer=0.05, delta_neuron=0.05)
    assert same.to_dict() == rep.to_dict()
    assert RedundancyReport.from_json(rep.to_json()).to_dict() == rep.to_dict()
    assert rep.plot(tmp_path / "r.png").exists()
