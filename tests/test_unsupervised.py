"""Tests for finegrain.unsupervised: axioms, planted ground truths, streaming == in-memory."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.stats import ortho_group
from sklearn.metrics import adjusted_rand_score

from finegrain.errors import NotFittedError, ParameterError
from finegrain.neurons import Neuron
from finegrain.store import StoreWriter
from finegrain.unsupervised import (
    AlignmentError,
    LatentConcepts,
    analyze_redundancy,
    check_aligned,
    cluster_neurons,
    correlation_matrix,
    cross_model_correlation,
    linear_cka,
    mixedsim,
    neuronsim,
    pwcca,
    representation_similarity,
    similarity_matrix,
    svcca,
)
from finegrain.unsupervised.cli import register


def make_store(path, layers: dict[str, np.ndarray], sent_len: int = 10, labels=None, words=None, sent_offset: int = 0):
    n = next(iter(layers.values())).shape[0]
    labels = labels or {}
    w = StoreWriter(
        path, {k: v.shape[1] for k, v in layers.items()}, n, label_columns=list(labels), dtype="float32", chunk_rows=64
    )
    sid = np.arange(n) // sent_len + sent_offset
    pos = np.arange(n) % sent_len
    words = list(words) if words is not None else [f"w{i % 50}" for i in range(n)]
    for s in range(0, n, 100):  # several write blocks
        sl = slice(s, min(s + 100, n))
        w.write(
            {k: v[sl] for k, v in layers.items()},
            sid[sl],
            pos[sl],
            words[sl],
            {c: list(np.asarray(v)[sl]) for c, v in labels.items()},
        )
    return w.commit()


def _cka_direct(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


# ----------------------------------------------------------------------------------------------
# streaming statistics
# ----------------------------------------------------------------------------------------------
def test_streamed_correlation_equals_corrcoef(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(503, 6)) + 1000.0  # a large mean: the naive sums formula would lose digits
    B = A[:, :3] @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(503, 4)) - 300.0
    ref = np.corrcoef(A.T, B.T)[:6, 6:]
    got = correlation_matrix(A, B, chunk_rows=37)
    np.testing.assert_allclose(got.corr, ref, atol=1e-10)
    assert got.neurons_a[0] == Neuron("a", 0) and len(got.neurons_b) == 4
    # through float32 stores, streamed in small chunks
    sa = make_store(
        tmp_path / "a.fgstore", {"layer.1": A[:, :3].astype(np.float32), "layer.2": A[:, 3:].astype(np.float32)}
    )
    sb = make_store(tmp_path / "b.fgstore", {"layer.1": B.astype(np.float32)})
    got = correlation_matrix(sa, sb, chunk_rows=50)
    ref32 = np.corrcoef(A.astype(np.float32).astype(np.float64).T, B.astype(np.float32).astype(np.float64).T)
    np.testing.assert_allclose(got.corr, ref32[:6, 6:], atol=1e-8)
    assert got.neurons_a[3] == Neuron("layer.2", 0)
    # self-correlation
    own = correlation_matrix(A, chunk_rows=100).corr
    np.testing.assert_allclose(own, np.corrcoef(A.T), atol=1e-10)


def test_streamed_cka_equals_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8)).astype(np.float32) * 3 + 5
    Y = (np.tanh(X @ rng.normal(size=(8, 5))) + 0.3 * rng.normal(size=(300, 5))).astype(np.float32)
    s = make_store(tmp_path / "s.fgstore", {"layer.1": X, "layer.2": Y})
    got = linear_cka(s, s, layers_x="layer.1", layers_y="layer.2", chunk_rows=29)
    assert got == pytest.approx(_cka_direct(X.astype(float), Y.astype(float)), abs=1e-10)


# ----------------------------------------------------------------------------------------------
# similarity axioms
# ----------------------------------------------------------------------------------------------
def test_cka_invariances_and_independence():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(800, 12)) @ rng.normal(size=(12, 12))
    Q = ortho_group.rvs(12, random_state=3)
    assert linear_cka(X, 2.5 * X @ Q, chunk_rows=128) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, X + 7.0) == pytest.approx(1.0, abs=1e-9)  # centring
    Z = rng.normal(size=(800, 12))
    assert linear_cka(X, Z) < 0.1
    # a non-orthogonal, anisotropic map is *not* invisible to CKA
    assert linear_cka(X, X @ np.diag(np.geomspace(1, 100, 12))) < 0.99


def test_neuronsim_permutation_sign_and_rotation():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1000, 10))
    perm = rng.permutation(10)
    signs = rng.choice([-1.0, 1.0], size=10)
    assert neuronsim(X, X[:, perm] * signs * 3.0) == pytest.approx(1.0, abs=1e-9)
    Q = ortho_group.rvs(10, random_state=5)
    rotated = neuronsim(X, X @ Q)
    assert rotated < 0.85
    # CKA does not see the rotation; mixedsim (linear regression) does not either
    assert linear_cka(X, X @ Q) == pytest.approx(1.0, abs=1e-9)
    assert mixedsim(X, X @ Q) == pytest.approx(1.0, abs=1e-6)
    assert mixedsim(X, rng.normal(size=(1000, 10))) < 0.05


def test_svcca_pwcca_identity_and_linear_invariance():
    rng = np.random.default_rng(6)
    # rank-6 signal in 10 neurons: 99% variance keeps exactly the signal subspace
    Z = rng.normal(size=(1500, 6))
    X = Z @ rng.normal(size=(6, 10))
    assert svcca(X, X) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(X, X) == pytest.approx(1.0, abs=1e-6)
    M = rng.normal(size=(10, 10)) + 3 * np.eye(10)  # invertible, not orthogonal
    assert abs(np.linalg.det(M)) > 1e-3
    Y = X @ M + 4.0
    assert svcca(X, Y) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(X, Y) == pytest.approx(1.0, abs=1e-6)
    # unrelated data: far from 1; partially related: in between
    W = rng.normal(size=(1500, 10))
    assert svcca(X, W) < 0.2 and pwcca(X, W) < 0.2
    half = np.hstack([Z[:, :3], rng.normal(size=(1500, 3))]) @ rng.normal(size=(6, 10))
    assert 0.3 < svcca(X, half) < 0.8


def test_representation_similarity_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown similarity method"):
        representation_similarity(np.ones((5, 2)), np.ones((5, 2)), method="rsa")


# ----------------------------------------------------------------------------------------------
# cross-model correlation (Bau et al. 2019)
# ----------------------------------------------------------------------------------------------
def test_cross_model_rankings(tmp_path):
    rng = np.random.default_rng(7)
    n = 600
    A = rng.normal(size=(n, 8))
    B = rng.normal(size=(n, 8))
    C = rng.normal(size=(n, 8))
    B[:, 5] = -2 * A[:, 2] + 0.01 * rng.normal(size=n)  # copied neuron (up to scale / sign)
    C[:, 1] = A[:, 2] + 0.01 * rng.normal(size=n)
    C[:, 2] = A[:, 4] + 0.01 * rng.normal(size=n)  # A:4 is matched in C but not in B
    B[:, 0] = A[:, 6] + A[:, 7] + 0.01 * rng.normal(size=n)  # A:6 is predictable from A... not B/C
    sa = make_store(tmp_path / "a.fgstore", {"layer.1": A.astype(np.float32)})
    sb = make_store(tmp_path / "b.fgstore", {"layer.1": B.astype(np.float32)})
    sc = make_store(tmp_path / "c.fgstore", {"layer.1": C.astype(np.float32)})
    res = cross_model_correlation([sa, sb, sc], chunk_rows=64)
    assert res.names == ["a", "b", "c"]
    for model in res.names:
        mx = {nn: s for nn, s in zip(res.ranking(model, "maxcorr").neurons, res.ranking(model, "maxcorr").scores)}
        mn = {nn: s for nn, s in zip(res.ranking(model, "mincorr").neurons, res.ranking(model, "mincorr").scores)}
        assert all(mn[k] <= mx[k] + 1e-12 for k in mx)
    top = res.ranking("a", "maxcorr")
    assert top.neurons[0] == Neuron("layer.1", 2) and top.scores[0] > 0.999
    assert top.score_of("layer.1:4") > 0.999
    # MinCorr: A:2 is matched in both other models, A:4 only in C
    mincorr = res.ranking("a", "mincorr")
    assert mincorr.neurons[0] == Neuron("layer.1", 2)
    assert mincorr.score_of("layer.1:4") < 0.3
    # LinReg (held-out R^2): B:0 = A:6 + A:7 is predicted from A (and B:5 from A or C)
    lin = res.ranking("b", "linreg")
    assert set(lin.top(2)) == {Neuron("layer.1", 0), Neuron("layer.1", 5)}
    assert res.linreg_r2[("b", "a")][0] > 0.99 and abs(res.linreg_r2[("b", "c")][0]) < 0.05
    assert lin.score_of("layer.1:0") > 0.45  # mean over {a: ~1, c: ~0}
    assert lin.score_of("layer.1:3") < 0.1
    assert len(top.top(3)) == 3 and top.to_dict(2)["neurons"][0] == "layer.1:2"
    rk = top.to_ranking()
    assert rk.neurons[:2] == top.neurons[:2] and rk.method == "maxcorr"


def test_cross_model_validates():
    with pytest.raises(ValueError, match="at least two"):
        cross_model_correlation([np.ones((4, 2))])
    with pytest.raises(ValueError, match="unknown method"):
        cross_model_correlation([np.ones((4, 2)), np.ones((4, 2))], methods=["bestcorr"])


# ----------------------------------------------------------------------------------------------
# alignment checks
# ----------------------------------------------------------------------------------------------
def test_mismatched_rows_raise(tmp_path):
    rng = np.random.default_rng(8)
    s1 = make_store(tmp_path / "a.fgstore", {"layer.1": rng.normal(size=(100, 3)).astype(np.float32)})
    s2 = make_store(tmp_path / "b.fgstore", {"layer.1": rng.normal(size=(90, 3)).astype(np.float32)})
    s3 = make_store(tmp_path / "c.fgstore", {"layer.1": rng.normal(size=(100, 3)).astype(np.float32)}, sent_len=5)
    with pytest.raises(AlignmentError, match="100 rows .* 90"):
        correlation_matrix(s1, s2)
    with pytest.raises(AlignmentError, match="sent_id"):
        linear_cka(s1, s3)
    with pytest.raises(AlignmentError):
        cross_model_correlation([s1, s3])
    with pytest.raises(AlignmentError):
        check_aligned(np.ones((10, 2)), np.ones((11, 2)))
    check_aligned(s1, np.ones((100, 2)))  # same row count: fine


# ----------------------------------------------------------------------------------------------
# layer-by-layer similarity matrices
# ----------------------------------------------------------------------------------------------
def test_similarity_matrix_one_and_two_models(tmp_path):
    rng = np.random.default_rng(9)
    n = 400
    h = [rng.normal(size=(n, 6))]
    for _ in range(3):  # each layer a noisy map of the previous one: similarity decays with distance
        h.append(np.tanh(h[-1] @ rng.normal(size=(6, 6)) / 2) + 0.6 * rng.normal(size=(n, 6)))
    layers = {f"layer.{i}": x.astype(np.float32) for i, x in enumerate(h)}
    s = make_store(tmp_path / "m.fgstore", layers)
    png = tmp_path / "cka.png"
    m = similarity_matrix(s, method="cka", plot=png, chunk_rows=90)
    assert m.values.shape == (4, 4) and m.rows == list(layers)
    np.testing.assert_allclose(np.diag(m.values), 1.0, atol=1e-9)
    np.testing.assert_allclose(m.values, m.values.T, atol=1e-12)
    assert m.values[0, 1] > m.values[0, 3]
    assert m.values[1, 2] == pytest.approx(_cka_direct(h[1], h[2]), abs=1e-5)
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    # two models (dict input) with chosen layers
    other = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in layers.items()}
    m2 = similarity_matrix([s, other], layers=["layer.0", "layer.3"], method="svcca")
    assert m2.values.shape == (2, 2) and m2.cols == ["layer.0", "layer.3"]
    assert m2.values[0, 0] > 0.9 and m2.values[0, 0] > m2.values[0, 1]
    assert "svcca" in str(m2) and json.loads(json.dumps(m2.to_dict()))["values"]
    with pytest.raises(ParameterError, match="layered"):  # a finegrain error (was TypeError)
        similarity_matrix(np.ones((10, 3)))


# ----------------------------------------------------------------------------------------------
# redundancy (Dalvi et al. 2020)
# ----------------------------------------------------------------------------------------------
def test_duplicated_neuron_clusters_with_original():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(500, 8))
    X = np.hstack([X, X[:, [3]] + 0.05 * rng.normal(size=(500, 1))])  # neuron 8 ~ neuron 3
    cl = cluster_neurons({"layer.1": X}, threshold=0.3, chunk_rows=64)
    assert cl.cluster_of("layer.1:8") == cl.cluster_of("layer.1:3")
    assert cl.n_clusters == 8 and cl.n_redundant == 1
    assert len({cl.cluster_of(f"layer.1:{i}") for i in range(8)}) == 8
    assert sum(n in cl.representatives for n in (Neuron("layer.1", 3), Neuron("layer.1", 8))) == 1


def test_analyze_redundancy_planted(tmp_path):
    rng = np.random.default_rng(11)
    n = 600
    y = rng.integers(0, 3, size=n)
    onehot = np.eye(3)[y]
    l0 = rng.normal(size=(n, 6))  # no label information
    l1 = rng.normal(size=(n, 8))
    l1[:, :3] += 3 * onehot  # label lives in 3 neurons of layer.1 ...
    l1[:, 3] = l1[:, 0] + 0.02 * rng.normal(size=n)  # ... and one redundant copy
    l2 = np.hstack([l1[:, :3] + 0.5 * rng.normal(size=(n, 3)), rng.normal(size=(n, 5))])
    s = make_store(
        tmp_path / "r.fgstore",
        {k: v.astype(np.float32) for k, v in {"layer.0": l0, "layer.1": l1, "layer.2": l2}.items()},
        labels={"pos": np.array(["N", "V", "A"])[y]},
    )
    rep = analyze_redundancy(s, "pos", threshold=0.3, delta_layer=0.05, delta_neuron=0.05)
    assert rep.n_neurons == 22 and rep.n_redundant >= 1
    assert rep.selected_layer == "layer.1"
    assert rep.layer_accuracies["layer.0"] < 0.6 < rep.oracle_accuracy
    assert 1 <= rep.n_needed <= 3
    assert {n.unit for n in rep.selected_neurons} <= {0, 1, 2, 3}
    assert rep.selected_accuracy >= 0.95 * rep.selected_layer_accuracy
    assert "redundant" in rep.summary() and json.dumps(rep.to_dict())


# ----------------------------------------------------------------------------------------------
# latent concepts (Dalvi et al. 2022)
# ----------------------------------------------------------------------------------------------
def _planted_concepts(rng, k=4, per=60, d=8):
    centers = rng.normal(size=(k, d)) * 6
    groups = np.repeat(np.arange(k), per)
    X = centers[groups] + rng.normal(size=(k * per, d))
    vocab = [[f"g{g}w{j}" for j in range(5)] for g in range(k)]
    words = [vocab[g][rng.integers(0, 5)] for g in groups]
    tags = np.array(["NOUN", "VERB", "ADJ", "NUM"])[groups]
    return X, groups, words, tags, centers


@pytest.mark.parametrize("method", ["agglomerative", "kmeans"])
def test_latent_concepts_recover_planted_groups(tmp_path, method):
    rng = np.random.default_rng(12)
    X, groups, words, tags, centers = _planted_concepts(rng)
    # one tag column aligned with the groups, one that is noise
    noise = rng.choice(["a", "b"], size=len(tags))
    s = make_store(
        tmp_path / "c.fgstore", {"layer.6": X.astype(np.float32)}, words=words, labels={"pos": tags, "noise": noise}
    )
    lc = LatentConcepts(n_clusters=4, method=method, max_per_type=None).fit(
        s, "layer.6", label_columns=["pos", "noise"]
    )
    assert adjusted_rand_score(groups[lc.rows], lc.labels_) > 0.95
    assert all(c.alignment["pos"].aligned for c in lc.clusters)
    assert not any(c.alignment["noise"].aligned for c in lc.clusters)
    assert sorted(c.alignment["pos"].majority for c in lc.clusters) == ["ADJ", "NOUN", "NUM", "VERB"]
    for c in lc.clusters:
        a = c.alignment["pos"]
        assert a.best_label == a.majority and a.f1 > 0.95 and a.recall > 0.95
        g = {"NOUN": 0, "VERB": 1, "ADJ": 2, "NUM": 3}[a.majority]
        assert all(w.startswith(f"g{g}w") for w in c.top_words())
    assert lc.alignment_summary("pos")["n_aligned"] == 4
    # nearest-centroid prediction maps each planted center to the cluster of its group
    pred = lc.predict(centers)
    for g in range(4):
        assert lc.clusters[pred[g]].alignment["pos"].majority == ["NOUN", "VERB", "ADJ", "NUM"][g]
    # JSON round trip
    back = LatentConcepts.from_json(lc.to_json(tmp_path / "c.json") and tmp_path / "c.json")
    np.testing.assert_array_equal(back.predict(X), lc.predict(X))
    assert back.clusters[0].alignment["pos"] == lc.clusters[0].alignment["pos"]
    assert "ALIGNED" in back.summary()


def test_latent_concepts_type_cap_and_dedupe():
    rng = np.random.default_rng(13)
    X, groups, words, tags, _ = _planted_concepts(rng)
    lc = LatentConcepts(n_clusters=4, max_per_type=3).fit(X, words=words, labels={"pos": tags})
    counts = {w: lc.words_.count(w) for w in set(lc.words_)}
    assert max(counts.values()) <= 3 and len(lc.words_) == 20 * 3
    dd = LatentConcepts(n_clusters=4, dedupe=True).fit(X, words=words, labels={"pos": tags})
    assert len(dd.words_) == 20 and len(set(dd.words_)) == 20
    assert all(c.alignment["pos"].purity == 1.0 for c in dd.clusters)
    with pytest.raises(ValueError, match="n_clusters"):
        LatentConcepts(n_clusters=50, dedupe=True).fit(X, words=words)
    with pytest.raises(ValueError, match="words"):
        LatentConcepts(n_clusters=2).fit(X)
    with pytest.raises(NotFittedError, match="not fitted"):  # a finegrain error (was RuntimeError)
        LatentConcepts().predict(X)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(prog="finegrain")
    register(p.add_subparsers())
    return p


def test_cli_subcommands(tmp_path, capsys):
    rng = np.random.default_rng(14)
    n = 300
    X, groups, words, tags, _ = _planted_concepts(rng, k=3, per=100, d=6)
    a = make_store(
        tmp_path / "a.fgstore",
        {"layer.0": X.astype(np.float32), "layer.1": (X @ rng.normal(size=(6, 6))).astype(np.float32)},
        words=words,
        labels={"pos": tags},
    )
    b = make_store(
        tmp_path / "b.fgstore",
        {
            "layer.0": (X + rng.normal(size=(n, 6))).astype(np.float32),
            "layer.1": rng.normal(size=(n, 6)).astype(np.float32),
        },
    )
    p = _parser()
    for argv in (
        ["correlate", str(a.path), str(b.path), "--out", str(tmp_path / "corr.json")],
        ["similarity", str(a.path), str(b.path), "--method", "cka,pwcca", "--plot", str(tmp_path / "s.png")],
        ["redundancy", str(a.path), "--label", "pos", "--out", str(tmp_path / "red.json")],
        ["concepts", str(a.path), "--layer", "layer.0", "--n-clusters", "3", "--out", str(tmp_path / "c.json")],
    ):
        args = p.parse_args(argv)
        args.func(args)
    out = capsys.readouterr().out
    assert "maxcorr" in out and "pwcca" in out and "neurons needed" in out and "latent concepts" in out
    assert (tmp_path / "s.cka.png").exists() and (tmp_path / "s.pwcca.png").exists()
    # the file is the result's JSON (result_from_json reads it back); the rankings sit under "rankings"
    assert json.loads((tmp_path / "corr.json").read_text())["rankings"]["a"]["maxcorr"]["neurons"]
    assert LatentConcepts.from_json(tmp_path / "c.json").layer == "layer.0"
    with pytest.raises(AlignmentError, match="sent_id"):
        c = make_store(tmp_path / "c.fgstore", {"layer.0": X.astype(np.float32)}, sent_len=7)
        args = p.parse_args(["similarity", str(a.path), str(c.path)])
        args.func(args)
