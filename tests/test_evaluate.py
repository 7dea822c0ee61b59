"""Control tasks, selectivity, ablation of rankings, and the CLI subcommands on a store."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from finegrain.evaluate import (
    AblationResult,
    control_labels,
    control_mapping,
    probe_ablation,
    selectivity,
    selectivity_layers,
)
from finegrain.probe import ArraySource, LinearProbe
from finegrain.rank import probeless_ranking
from finegrain.store import StoreWriter

FAST = dict(epochs=15, lr=1e-2, batch_size=64, progress=False, device="cpu")


# -- control tasks ------------------------------------------------------------------------------
def test_control_labels_constant_per_type_and_case_sensitive():
    words = np.array(["the", "dog", "The", "the", "dog", "runs", "the"])
    labels = np.array(["D", "N", "D", "D", "N", "V", "D"])
    ctrl = control_labels(words, labels, seed=0)
    for w in set(words):
        assert len(set(ctrl[words == w])) == 1
    mapping = control_mapping(words, labels, seed=0)
    assert set(mapping) == {"the", "The", "dog", "runs"}  # "The" and "the" are different types
    assert set(ctrl) <= set(labels)
    # the mapping depends on types, not on row order (so it is the same in every split)
    perm = np.random.default_rng(0).permutation(len(words))
    assert control_mapping(words[perm], labels[perm], seed=0) == mapping
    np.testing.assert_array_equal(control_labels(words, labels, seed=0), ctrl)


def test_control_labels_follow_empirical_distribution():
    rng = np.random.default_rng(0)
    n_types = 4000
    words = np.array([f"w{i}" for i in rng.integers(0, n_types, 30000)])
    labels = rng.choice(np.array(["N", "V", "D", "P"]), size=30000, p=[0.5, 0.3, 0.15, 0.05])
    mapping = control_mapping(words, labels, seed=1)
    vals, counts = np.unique(list(mapping.values()), return_counts=True)
    emp = {v: np.mean(labels == v) for v in vals}
    for v, c in zip(vals, counts):
        assert c / len(mapping) == pytest.approx(emp[v], abs=0.03)
    # different types really get different labels, and another seed another draw
    assert len(vals) == 4
    other = control_mapping(words, labels, seed=2)
    assert np.mean([mapping[w] != other[w] for w in mapping]) > 0.4


def _typed_data(seed=0, n_types=60, n=1500):
    """Words with a type-level label; features encode either the label or the word identity."""
    rng = np.random.default_rng(seed)
    type_label = rng.choice(np.array(["N", "V", "D"]), n_types)
    wid = rng.integers(0, n_types, n)
    words = np.array([f"w{i}" for i in wid])
    labels = type_label[wid]
    label_feat = np.zeros((n, 3), np.float32)
    label_feat[np.arange(n), np.searchsorted(["D", "N", "V"], labels)] = 1
    label_feat += 0.3 * rng.normal(size=label_feat.shape).astype(np.float32)
    identity = np.eye(n_types, dtype=np.float32)[wid]  # a word-type lookup table
    return words, labels, label_feat, identity


def test_selectivity_high_for_label_feature_low_for_word_identity():
    words, labels, label_feat, identity = _typed_data()
    tr, te = np.arange(1000), np.arange(1000, 1500)
    probe = LinearProbe(**{**FAST, "epochs": 25, "lr": 3e-2})
    ctrl = control_labels(words, labels, seed=0, dist_rows=tr)

    def parts(F):
        return ArraySource(F[tr], labels[tr], words=words[tr]), ArraySource(F[te], labels[te], words=words[te])

    s_label = selectivity(*parts(label_feat), probe=probe, control=(ctrl[tr], ctrl[te]))
    s_ident = selectivity(*parts(identity), probe=probe, control=(ctrl[tr], ctrl[te]))
    assert s_label.task_acc > 0.95 and s_ident.task_acc > 0.95
    assert s_ident.control_acc > 0.9  # memorising types solves the control task too
    assert s_label.control_acc < 0.7
    assert s_label.selectivity > s_ident.selectivity + 0.25
    assert s_label.selectivity == pytest.approx(s_label.task_acc - s_label.control_acc)
    # control labels drawn from the views' own words: one mapping over both splits
    own = selectivity(*parts(label_feat), probe=probe)
    assert own.control_acc < 0.7 and own.task_acc > 0.95


# -- ablation --------------------------------------------------------------------------------------
def _graded(n=700, d=40, seed=0):
    """10 informative units of decreasing strength, 30 noise units."""
    rng = np.random.default_rng(seed)
    yi = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    for j in range(10):
        X[:, j] += (1.5 - 0.1 * j) * (2 * yi - 1)
    return X, np.array(["neg", "pos"])[yi]


def test_ablation_top_beats_random_beats_bottom(tmp_path):
    X, y = _graded()
    tr, te = slice(0, 500), slice(500, None)
    ranking = probeless_ranking(X[tr], y[tr])
    assert {n.unit for n in ranking.top(10)} == set(range(10))
    # zero-filled keep-k (the classic "zero the non-selected neurons") and retraining
    res = probe_ablation((X[tr], y[tr]), (X[te], y[te]), ranking, ks=[2, 5, 10], probe=LinearProbe(**FAST),
                         modes=("keep", "retrain"), fill="zero", n_random=3, seed=0)
    for mode in ("keep", "retrain"):
        top, rnd, bot = (res.mean(mode, s) for s in ("top", "random", "bottom"))
        assert top > rnd > bot, (mode, top, rnd, bot)
        assert res.ordered(mode)
        assert bot < 0.65 and top > 0.9
    assert res.ks == [2, 5, 10] and res.full_acc > 0.9
    png = res.plot(tmp_path / "ablation.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    res.to_json(tmp_path / "a.json")
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["ordered"] == {"keep": True, "retrain": True}
    assert "top > random > bottom: True" in res.table()
    assert isinstance(res, AblationResult)
    frac = probe_ablation((X[tr], y[tr]), (X[te], y[te]), ranking, ks=[0.05, 0.25], probe=LinearProbe(**FAST),
                          modes=("keep",), n_random=1)
    assert frac.ks == [2, 10] and list(frac.curves) == ["keep"]
    with pytest.raises(ValueError, match="modes"):
        probe_ablation((X[tr], y[tr]), (X[te], y[te]), ranking, modes=("nope",))


# -- store-level selectivity and the CLI -----------------------------------------------------------------
def _store(tmp_path):
    rng = np.random.default_rng(0)
    n_sent = 80
    lens = rng.integers(3, 7, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    pos = np.concatenate([np.arange(k) for k in lens])
    n = len(sent)
    type_label = rng.choice(np.array(["N", "V", "D"]), 30)
    wid = rng.integers(0, 30, n)
    labels = type_label[wid]
    l1 = rng.normal(size=(n, 6)).astype(np.float32)
    l1[np.arange(n), np.searchsorted(["D", "N", "V"], labels)] += 3.0
    l2 = np.eye(30, dtype=np.float32)[wid][:, :8] + 0.01 * rng.normal(size=(n, 8)).astype(np.float32)
    w = StoreWriter(tmp_path / "acts.fgstore", {"layer.1": 6, "layer.2": 8}, n, label_columns=["pos"],
                    dtype="float32")
    w.write({"layer.1": l1, "layer.2": l2}, sent, pos, [f"w{i}" for i in wid], {"pos": labels})
    return w.commit()


def test_selectivity_layers_on_store(tmp_path):
    store = _store(tmp_path)
    res = selectivity_layers(store, "pos", probe=LinearProbe(**FAST), splits=(0.7, 0.1, 0.2))
    rows = {r["layer"]: r for r in res.rows}
    assert set(rows) == {"layer.1", "layer.2"}
    assert rows["layer.1"]["task_acc"] > 0.85
    assert rows["layer.1"]["selectivity"] > 0.3
    assert "selectivity" in res.table()


def test_cli_subcommands(tmp_path, capsys):
    from finegrain.evaluate.cli import register as register_evaluate
    from finegrain.probe.cli import register
    from finegrain.rank.cli import register as register_rank

    store = _store(tmp_path)
    parser = argparse.ArgumentParser(prog="finegrain")
    sub = parser.add_subparsers(dest="command", required=True)
    for reg in (register, register_rank, register_evaluate):
        reg(sub)

    def run(*argv):
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0

    common = ["--label", "pos", "--epochs", "8", "--lr", "0.02", "--batch-size", "64", "--device", "cpu"]
    run("probe", str(store.path), *common, "--plot", str(tmp_path / "p.png"))
    out = json.loads((tmp_path / "acts.probe.pos.json").read_text())
    assert [r["layer"] for r in out["rows"]] == ["layer.1", "layer.2", "all"]
    # baselines beside every accuracy, in the JSON and the table
    assert set(out["baselines"]) == {"majority", "word_type"}
    assert all("above_baseline" in r and "control_acc" in r and "converged" in r for r in out["rows"])
    assert "baselines (test accuracy)" in capsys.readouterr().out
    assert (tmp_path / "p.png").exists()
    for method in ("lca", "probeless", "gaussian"):
        run("rank", str(store.path), *common, "--method", method, "--max-dims", "3")
        r = json.loads((tmp_path / f"acts.rank-{method}.pos.json").read_text())
        assert len(r["neurons"]) == 14 and r["method"] in ("probe_weights", "probeless", "gaussian-loglik")
        if method != "lca":  # sparse one-hot units of layer.2 get large probe weights; means do not lie
            assert r["neurons"][0].startswith("layer.1:")
    run("rank", str(store.path), *common, "--method", "ap", "--concept", "N", "--minimal")
    assert (tmp_path / "acts.rank-ap.pos.minimal.json").exists()
    run("selectivity", str(store.path), *common)
    assert json.loads((tmp_path / "acts.selectivity.pos.json").read_text())["rows"][0]["layer"] == "layer.1"
    run("ablate-probe", str(store.path), *common, "--ranking", str(tmp_path / "acts.rank-lca.pos.json"),
        "--ks", "1,3,6", "--n-random", "1")
    abl = json.loads((tmp_path / "acts.ablation.pos.json").read_text())
    assert abl["ks"] == [1, 3, 6] and (tmp_path / "acts.ablation.pos.png").exists()
    run("evaluate", str(store.path), *common, "--control-task", "--ablation", "--method", "probeless",
        "--ks", "2,4", "--n-random", "1")
    assert "top > random > bottom" in capsys.readouterr().out


def test_majority_and_word_type_baselines_by_hand():
    from finegrain.evaluate.baselines import majority_baseline, word_type_baseline, word_type_predictions

    words_tr = ["the", "run", "run", "run", "dog", "the"]
    y_tr = ["DET", "VERB", "NOUN", "VERB", "NOUN", "DET"]
    words_te = ["run", "dog", "cat", "the"]
    y_te = ["NOUN", "NOUN", "NOUN", "DET"]
    # majority label of training: DET, NOUN and VERB tie at 2 -> the first in sort order, DET
    assert majority_baseline(y_tr, y_te) == 0.25
    # run -> VERB (2 of 3), dog -> NOUN, cat unseen -> majority DET, the -> DET
    assert list(word_type_predictions(words_tr, y_tr, words_te)) == ["VERB", "NOUN", "DET", "DET"]
    assert word_type_baseline(words_tr, y_tr, words_te, y_te) == 0.5
