"""Baselines beside every probe accuracy (issue 14, item 3): majority and word-type baselines computed once,
the control task per layer, the paired bootstrap behind ``above_baseline``, and ``best_layer()`` that names
no layer when none is above its baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finegrain.distributed import probe_layers_ray
from finegrain.probe import LinearProbe, paired_bootstrap, probe_layers
from finegrain.store import StoreWriter

QUIET = dict(progress=False, device="cpu")


def typed_store(tmp_path, n_sent=120, seed=0, layers=("signal", "identity", "noise")):
    """Words with an ambiguous label (30% of the tokens of a type get a second tag, read from the context):
    ``signal`` encodes the token's own label, ``identity`` only the word type (a lookup table), ``noise``
    nothing."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(5, 10, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    pos = np.concatenate([np.arange(k) for k in lens])
    n = len(sent)
    n_types = 40
    wid = rng.integers(0, n_types, n)
    tags = np.array(["DET", "NOUN", "VERB"])
    main = rng.integers(0, 3, n_types)
    yi = np.where(rng.random(n) < 0.7, main[wid], rng.integers(0, 3, n))
    acts = {}
    if "signal" in layers:
        acts["signal"] = (np.eye(3)[yi] * 3 + rng.normal(size=(n, 3))).astype(np.float32)
    if "identity" in layers:
        acts["identity"] = (np.eye(n_types)[wid] + 0.05 * rng.normal(size=(n, n_types))).astype(np.float32)
    if "noise" in layers:
        acts["noise"] = rng.normal(size=(n, 6)).astype(np.float32)
    for extra in set(layers) - set(acts):
        acts[extra] = rng.normal(size=(n, 6)).astype(np.float32)
    w = StoreWriter(tmp_path / f"typed{seed}.fgstore", {k: v.shape[1] for k, v in acts.items()}, n,
                    label_columns=["pos"], dtype="float32")
    w.write(acts, sent, pos, [f"w{i}" for i in wid], {"pos": tags[yi]})
    return w.commit()


def test_probe_layers_puts_baselines_beside_every_accuracy(tmp_path):
    store = typed_store(tmp_path)
    res = probe_layers(store, "pos", probe=LinearProbe(**QUIET), progress=False)
    y = store.labels("pos")
    train, _, test = store.split((0.8, 0.1, 0.1), seed=0)
    # computed once, on the test split, from the training split
    from finegrain.evaluate import majority_baseline, word_type_baseline

    assert res.baselines["majority"] == pytest.approx(majority_baseline(y[train], y[test]))
    assert res.baselines["word_type"] == pytest.approx(word_type_baseline(store.words[train], y[train],
                                                                          store.words[test], y[test]))
    assert 0.6 < res.baselines["word_type"] < 0.9  # the ambiguity: identity is not enough
    rows = {r["layer"]: r for r in res.rows}
    assert rows["signal"]["above_baseline"] is True and rows["signal"]["vs_word_type"]["low"] > 0
    # a lookup table of word types is only as good as the word-type baseline: not above it
    assert rows["identity"]["above_baseline"] is False
    assert rows["identity"]["vs_majority"]["low"] > 0 and rows["identity"]["vs_word_type"]["low"] <= 0
    assert abs(rows["identity"]["vs_word_type"]["diff"]) < 0.05
    assert rows["noise"]["above_baseline"] is False
    # the identical probe on the control task: selectivity shows the lookup table for what it is
    assert rows["identity"]["control_acc"] > 0.8 > rows["signal"]["control_acc"]
    assert rows["signal"]["selectivity"] > rows["identity"]["selectivity"] + 0.3
    assert all(r["converged"] in (True, False) and r["n_epochs"] >= 1 for r in res.rows)
    assert res.best_layer() == "signal" and "signal" in res.best_layer_reason()
    table = res.table()
    assert "word type" in table and "best layer: signal" in table and "above" in table
    back = type(res).from_json(res.to_json())
    assert back == res and json.loads(res.to_json())["baselines"] == res.baselines
    assert res.plot(tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    assert "<pre>" in res._repr_html_()


def test_a_probe_on_random_features_is_not_above_baseline(tmp_path):
    store = typed_store(tmp_path, layers=("noise", "noise2"))
    res = probe_layers(store, "pos", probe=LinearProbe(**QUIET), control=False, progress=False)
    assert all(r["above_baseline"] is False for r in res.rows)
    assert all("control_acc" not in r for r in res.rows)  # control=False skips the control probes
    assert res.best_layer() is None
    assert "no layer's probe beats the baselines" in res.best_layer_reason()
    assert "best layer: none" in res.table()


def test_paired_bootstrap_by_hand():
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0] * 20, bool)
    same = paired_bootstrap(a, a)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    better = paired_bootstrap(np.ones(160, bool), a)
    assert better["diff"] == pytest.approx(1 - a.mean()) and better["low"] > 0.25
    # resampling sentences: 4 sentences where the probe wins everything in one and loses in another
    probe = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    base = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    groups = np.repeat(np.arange(4), 4)
    r = paired_bootstrap(probe, base, groups=groups, n_boot=2000)
    assert r["diff"] == 0.0 and r["low"] < 0 < r["high"]
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(probe, base[:3])


def test_ray_version_keeps_step_with_probe_layers(tmp_path):
    store = typed_store(tmp_path, n_sent=60, layers=("signal", "noise"))
    probe = LinearProbe(**QUIET)
    ref = probe_layers(store, "pos", probe=probe, progress=False)
    got = probe_layers_ray(store, "pos", probe=probe, engine="local")
    assert got.to_dict() == ref.to_dict()
