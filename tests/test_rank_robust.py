"""Rankings robust to outlier ("rogue") dimensions (issue 14, item 5; Timkey & van Schijndel 2021), the
outlier list, streaming of the Gaussian probe and of sentence pooling, the one AP, ``rank_neurons`` and the
Ranking result protocol."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.neurons import Neuron, NeuronIndex
from finegrain.probe import ArraySource, LinearProbe
from finegrain.rank import (
    GaussianProbe,
    Ranking,
    ap_ranking,
    average_precision,
    gaussian_ranking,
    greedy_select,
    outlier_dimensions,
    probe_weight_ranking,
    probeless_ranking,
    rank_neurons,
    sentence_max_pool,
)

QUIET = dict(progress=False, device="cpu")
INDEX = NeuronIndex({"layer.0": 8})


def rogue(n=1200, seed=0):
    """Unit 3 is planted (shifted by 0.5 for class B, std 1); unit 6 is a rogue dimension: 10x the standard
    deviation of the others, a large mean, and no label information at all."""
    rng = np.random.default_rng(seed)
    yi = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 8))
    X[:, 3] += 0.5 * yi
    X[:, 6] = 10.0 * rng.normal(size=n) + 40.0
    return ArraySource(X.astype(np.float32), np.array(["A", "B"])[yi], index=INDEX)


def test_planted_neuron_ranks_first_despite_a_rogue_dimension():
    view = rogue()
    planted, loud = Neuron("layer.0", 3), Neuron("layer.0", 6)
    assert probeless_ranking(view).neurons[0] == planted
    # the papers' raw variant, one flag away, is what the issue saw: the loud unit's chance mean difference
    # (10 x sqrt(4 / n) ~ 0.6) beats the planted 0.5
    assert probeless_ranking(view, standardize=False).neurons[0] == loud
    ap = ap_ranking(view, "B")
    assert ap.neurons[0] == planted
    # AP reads only the order of a unit's responses: rescaling a unit changes nothing
    scaled = ArraySource(view.X * np.linspace(0.1, 50, 8, dtype=np.float32) + 7, view.y, index=INDEX)
    assert ap_ranking(scaled, "B").scores == pytest.approx(ap.scores, rel=1e-4)  # float32 rounding of the map
    probe = LinearProbe(**QUIET).fit(view)
    assert probe_weight_ranking(probe).neurons[0] == planted
    np.testing.assert_allclose(probe.penalized_coef_, probe.coef_ * probe.scale_, rtol=1e-6)
    # the Gaussian probe's prior is built from the data's own variances: its ranking ignores scale too
    train, dev = view.subset(np.arange(900)), view.subset(np.arange(900, 1200))
    strain, sdev = scaled.subset(np.arange(900)), scaled.subset(np.arange(900, 1200))
    g, gs = (gaussian_ranking(a, b, max_dims=3, progress=False) for a, b in ((train, dev), (strain, sdev)))
    assert g.neurons[0] == planted and g.neurons[:3] == gs.neurons[:3]


def test_outlier_dimensions_name_the_rogue_unit():
    out = outlier_dimensions(rogue())
    assert out.neurons() == [Neuron("layer.0", 6)]
    stats = {u["statistic"]: u for u in out.units}
    assert set(stats) == {"std", "mean_abs"} and 8 < stats["std"]["ratio"] < 12
    assert "layer.0:6" in out.table() and out.medians["layer.0"]["std"] == pytest.approx(1.0, abs=0.1)
    clean = outlier_dimensions(np.random.default_rng(1).normal(size=(500, 10)))
    assert clean.units == [] and "no outlier dimensions" in clean.table()
    assert type(out).from_json(out.to_json()) == out


def test_gaussian_probe_streams_its_sufficient_statistics(tmp_path):
    from test_probe import make_store

    store = make_store(tmp_path)
    y = store.labels("pos")
    streamed = GaussianProbe().fit(store.view(block_rows=16, label="pos"))
    whole = GaussianProbe().fit(store.matrix(), y)
    np.testing.assert_allclose(streamed.means_, whole.means_, atol=1e-9)
    np.testing.assert_allclose(streamed.covariance(1, [0, 3, 7]), whole.covariance(1, [0, 3, 7]), atol=1e-9)
    np.testing.assert_allclose(streamed.log_joint(store.view(block_rows=16)), whole.log_joint(store.matrix()),
                               atol=1e-8)
    a = greedy_select(streamed, store.view(block_rows=16, label="pos"), max_dims=3, progress=False)
    b = greedy_select(whole, store.matrix(), y, max_dims=3, progress=False)
    assert a[0] == b[0] and a[1] == pytest.approx(b[1])
    assert streamed.neurons_in_ == store.neuron_index()


def test_sentence_max_pool_streams():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    sent = np.repeat(np.arange(10), 5)
    ids, ref = sentence_max_pool(ArraySource(X, sent_ids=sent))
    ids2, blocks = sentence_max_pool(ArraySource(X, sent_ids=sent, block_rows=7))  # sentences cut by blocks
    np.testing.assert_array_equal(ids, np.arange(10))
    np.testing.assert_array_equal(ref, blocks)
    np.testing.assert_array_equal(ref, X.reshape(10, 5, 4).max(1))


def test_one_average_precision_with_relu_ties():
    """ReLU-like responses tie at 0: every positive among them gets the tie group's precision (scikit-learn's
    definition); the old intervene.control AP ignored ties and disagreed."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    s = np.maximum(rng.normal(size=400), 0)
    pos = rng.random(400) < 0.3
    assert (s == 0).sum() > 100
    assert average_precision(s, pos) == pytest.approx(average_precision_score(pos, s))


def test_rank_neurons_by_name_on_views():
    view = rogue(n=600)
    dev = rogue(n=300, seed=1)
    for method in ("probe", "lca", "probeless", "gaussian", "ap"):
        r = rank_neurons(view, method, dev=dev, concept="B", probe=LinearProbe(**QUIET), max_dims=2, progress=False)
        assert isinstance(r, Ranking) and set(r.neurons) == set(INDEX.neurons())
        assert r.neurons[0] == Neuron("layer.0", 3), method
    with pytest.raises(ValueError, match="dev"):
        rank_neurons(view, "gaussian")
    with pytest.raises(ValueError, match="concept"):
        rank_neurons(view, "ap")
    with pytest.raises(ValueError, match="unknown ranking method"):
        rank_neurons(view, "magic")


def test_ranking_result_protocol(tmp_path):
    r = Ranking(neurons=["layer.1:0", "layer.2:5", "layer.1:3"], scores=[2.0, 1.0, float("-inf")],
                method="<script>", per_class={"A": ["layer.2:5"]}, meta={"x": 1})
    back = Ranking.from_json(r.to_json())
    assert back == r and back.scores[-1] == float("-inf")  # JSON has no -inf: null reads back as -inf
    assert "layer.2:5" in r.table() and r.plot(tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    page = r._repr_html_()
    assert "&lt;script&gt;" in page and "<script>" not in page
