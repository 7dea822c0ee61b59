"""finegrain.explain on issue 17's contract: views in, result objects out, finegrain's probes for CAVs, the
model handed back as it was, no global RNG use, and no library module importing a CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import finegrain
from finegrain.attribute import ClassTarget
from finegrain.explain import (
    CAVSet,
    DatasetExplanation,
    NeuronConcept,
    PredictionExplanation,
    SupervisedConcepts,
    TCAVResult,
    cav_probe,
    cavs_from_store,
    concept_cavs,
    default_concepts,
    explain,
    explain_dataset,
    learn_cav,
    learn_cavs,
    store_spectrum,
    tcav,
)
from finegrain.probe import LogisticProbe
from finegrain.results import ResultList, result_from_json

TEXTS = ["the cat sat on the mat", "dogs run in the <b>park</b>", "a nurse said that she was tired"]


def _head(seed: int = 0):
    from finegrain.attribute.heads import PooledHead, _wrap
    from finegrain.testing import tiny_bert

    base = tiny_bert(seed=seed, hidden=32)
    torch.manual_seed(seed)  # the head's initial weights (tests may seed; the library never does)
    return _wrap(base, PooledHead(base.model, 2), "random-head")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from finegrain.data import generate_corpus
    from finegrain.extraction import extract
    from finegrain.testing import tiny_bert

    return extract(tiny_bert(seed=0), generate_corpus(60, seed=2), tmp_path_factory.mktemp("st") / "s",
                   layers=["layer.1", "layer.2"], progress=False)


def _modes(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_model_handed_back_in_its_own_mode():
    adapter = _head()
    model = adapter.model
    model.train()
    drop = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
    drop.eval()  # a mixed state: the old eval_mode restored every submodule to the top module's flag
    first = next(model.parameters())
    first.requires_grad_(False)
    before = _modes(model)
    concepts = [NeuronConcept("a", "layer.2", [0, 1, 2]), NeuronConcept("b", "layer.2", [3, 4])]
    explain(adapter, TEXTS, ClassTarget(0), concepts, "layer.2", n_random=20, ablation="zero")
    explain_dataset(adapter, TEXTS, concepts, "layer.2", n_random=20, ablation=None)
    rng = np.random.default_rng(0)
    cav = learn_cavs("c", "layer.2", rng.standard_normal((20, 32)) + 1, rng.standard_normal((40, 32)), n_runs=2,
                     n_random=2)
    tcav(adapter, TEXTS, ClassTarget(0), cav)
    assert _modes(model) == before


def test_no_global_random_state_is_used():
    adapter = _head()
    concepts = [NeuronConcept("a", "layer.2", [0, 1, 2])]
    t0, n0 = torch.get_rng_state(), np.random.get_state()[1].copy()
    e1 = explain(adapter, TEXTS[0], ClassTarget(0), concepts, "layer.2", n_random=30, ablation=None, seed=3)
    rng = np.random.default_rng(1)
    learn_cavs("c", "layer.2", rng.standard_normal((20, 8)) + 1, rng.standard_normal((40, 8)), n_runs=2, n_random=2)
    assert torch.equal(torch.get_rng_state(), t0) and np.array_equal(np.random.get_state()[1], n0)
    e2 = explain(adapter, TEXTS[0], ClassTarget(0), concepts, "layer.2", n_random=30, ablation=None, seed=3)
    assert e1.concepts[0].p == e2.concepts[0].p  # the seed alone decides the null draws


def test_explanations_follow_the_result_protocol(tmp_path):
    adapter = _head()
    concepts = [NeuronConcept("a<i>", "layer.2", [0, 1, 2]), NeuronConcept("b", "layer.2", [3, 4])]
    one = explain(adapter, TEXTS[1], ClassTarget(0), concepts, "layer.2", n_random=30, ablation="zero")
    many = explain(adapter, TEXTS, ClassTarget(0), concepts, "layer.2", n_random=30, ablation="zero")
    assert isinstance(one, PredictionExplanation) and isinstance(many, ResultList) and len(many) == 3
    back = PredictionExplanation.from_json(one.to_json(tmp_path / "e.json"))
    assert back.to_dict() == one.to_dict() and back.concepts[0].name == one.concepts[0].name
    assert [e.to_dict() for e in result_from_json(many.to_json())] == [e.to_dict() for e in many]
    assert one.plot(tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    page = one._repr_html_()
    assert "<b>park</b>" not in page and "&lt;b&gt;park" in page and "a&lt;i&gt;" in page
    ds = explain_dataset(adapter, TEXTS, concepts, "layer.2", n_random=20, ablation=None)
    assert DatasetExplanation.from_json(ds.to_json()).to_dict() == ds.to_dict() and "class" in ds.table()


def test_cavs_are_finegrain_logistic_probes(monkeypatch):
    rng = np.random.default_rng(0)
    Xc, Xo = rng.standard_normal((60, 6)) + np.r_[2.0, 0, 0, 0, 0, 0], rng.standard_normal((60, 6))
    v, acc = learn_cav(Xc, Xo, seed=4)
    probe = cav_probe(4).fit(np.concatenate([Xc, Xo]).astype(np.float32), np.r_[np.ones(60), np.zeros(60)])
    w = probe.coef_[0] / np.linalg.norm(probe.coef_[0])
    np.testing.assert_allclose(v, w, atol=1e-6)
    assert acc == pytest.approx(probe.score(np.concatenate([Xc, Xo]).astype(np.float32),
                                            np.r_[np.ones(60), np.zeros(60)]))
    fits = []
    orig = LogisticProbe.fit

    def spy(self, X, y):
        fits.append(type(self).__name__)
        return orig(self, X, y)

    monkeypatch.setattr(LogisticProbe, "fit", spy)
    cs = learn_cavs("c", "layer.1", Xc, np.concatenate([Xo, Xo]), n_runs=3, n_random=4)
    assert fits == ["LogisticProbe"] * 7  # every concept and random CAV is a LogisticProbe fit
    back = CAVSet.from_json(cs.to_json())
    np.testing.assert_allclose(back.direction, cs.direction) and back.random_cavs.shape == (4, 6)


def test_concepts_and_cavs_take_views(store):
    whole = SupervisedConcepts.from_store(store, ["negation"], "layer.1", k=4)
    view = SupervisedConcepts.from_store(store.view(layers=["layer.1"]), ["negation"], k=4)
    assert [(c.name, c.neurons) for c in whole] == [(c.name, c.neurons) for c in view]
    # a view of some rows: the directions and spectra are those of exactly these rows
    rows = np.flatnonzero(store.sent_ids < 30)
    sub = store.view(layers=["layer.1", "layer.2"], rows=rows)
    cs = concept_cavs(sub, "layer.1", ["negation"], min_count=3)
    X = store.matrix(["layer.1"], rows=rows).astype(np.float64)
    y = np.asarray([str(v) for v in np.asarray(store.labels("negation"))[rows].tolist()])
    v = X[y == "1"].mean(0) - X[y != "1"].mean(0)
    np.testing.assert_allclose(next(c for c in cs if c.name == "cav:negation=1").direction, v / np.linalg.norm(v),
                               atol=1e-6)
    ev, _ = store_spectrum(sub, "layer.1")
    np.testing.assert_allclose(np.sort(ev), np.sort(np.linalg.eigvalsh(X.T @ X / len(X))), atol=1e-6)
    cav = cavs_from_store(sub, "layer.2", "negation", "1", n_runs=2, n_random=2, n_examples=20)
    assert cav.cavs.shape == (2, 32) and cav.layer == "layer.2"
    res = tcav(_head(), TEXTS, ClassTarget(0), [cav, cav])
    assert isinstance(res, ResultList) and all(isinstance(r, TCAVResult) for r in res)
    assert TCAVResult.from_json(res[0].to_json()).to_dict() == res[0].to_dict()


def test_default_concepts_cache_only_where_told(tmp_path, monkeypatch):
    from finegrain.testing import tiny_bert

    home, env = tmp_path / "home", tmp_path / "env"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FINEGRAIN_CACHE", str(env))
    ad = tiny_bert(seed=0)
    kw = dict(properties=("pos", "negation"), k=3, n_sentences=40, n_clusters=3, cavs=False)
    cs = default_concepts(ad, "layer.1", **kw)
    assert not any(home.iterdir()) and not env.exists()  # nothing written without cache_dir
    cache = tmp_path / "cache"
    first = default_concepts(ad, "layer.1", cache_dir=cache, **kw)
    files = sorted(p.name for p in cache.iterdir())
    assert any(f.endswith(".store") for f in files) and any(f.endswith(".latent3.json") for f in files)
    again = default_concepts(ad, "layer.1", cache_dir=cache, **kw)
    assert sorted(p.name for p in cache.iterdir()) == files
    assert [c.name for c in again] == [c.name for c in first] == [c.name for c in cs]


def test_no_library_module_imports_a_cli():
    root = Path(finegrain.__file__).parent
    bad = []
    for pkg in ("describe", "explain", "unsupervised"):
        for f in (root / pkg).glob("*.py"):
            if f.name == "cli.py":
                continue
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{f.name}: {n}" for n in names if n.endswith(".cli") or n == "cli"]
    assert not bad
