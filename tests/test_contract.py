"""The contract every analysis builds on: views in, results out, one error root (issue 17)."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from finegrain.errors import (
    CorpusError,
    FinegrainError,
    LayerError,
    ModelError,
    NotFittedError,
    ParameterError,
    StoreError,
    StoreNotFoundError,
)
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.results import Result, ResultList, jsonable, result_from_json
from finegrain.store import ActivationStore, StoreWriter
from finegrain.store.view import ArrayView, StoreView, as_view


def _store(path, n_sent=12, words=3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_sent * words
    A = rng.normal(size=(n, 4)).astype(np.float32)
    B = rng.normal(size=(n, 3)).astype(np.float32)
    w = StoreWriter(path, {"layer.1": 4, "layer.2": 3}, n, label_columns=["pos"], dtype="float32", chunk_rows=8)
    sid = np.repeat(np.arange(n_sent), words)
    w.write({"layer.1": A, "layer.2": B}, sid, np.tile(np.arange(words), n_sent), [f"w{i}" for i in range(n)],
            {"pos": ["N" if i % 2 else "V" for i in range(n)]})
    return A, B, w.commit()


def test_error_root_and_builtin_bases():
    for cls, builtin in [(ParameterError, ValueError), (ModelError, ValueError), (LayerError, KeyError),
                         (CorpusError, ValueError), (StoreError, OSError), (StoreNotFoundError, FileNotFoundError),
                         (NotFittedError, AttributeError), (NotFittedError, ValueError)]:
        assert issubclass(cls, FinegrainError) and issubclass(cls, builtin)
    # a KeyError subclass still prints its message plainly, not as a quoted key
    assert str(LayerError("unknown layer 'x'")) == "unknown layer 'x'"
    from finegrain.data.corpus import CorpusError as C2
    from finegrain.models.base import ModelError as M2
    from finegrain.store import StoreError as S2

    assert (C2, M2, S2) == (CorpusError, ModelError, StoreError)


def test_missing_store_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no activation store"):
        ActivationStore(tmp_path / "none.fgstore")


def test_neuron_index_from_neurons_keeps_order():
    idx = NeuronIndex.from_neurons(["layer.3:5", "layer.1:2", "layer.3:1"])
    assert [str(n) for n in idx.neurons()] == ["layer.3:5", "layer.1:2", "layer.3:1"]
    assert idx.column("layer.3:1") == 2 and idx.column(Neuron("layer.1", 2)) == 1
    assert idx.layer_units("layer.3") == [5, 1] and idx.layer_columns("layer.3") == [0, 2]
    assert idx.neuron(1) == Neuron("layer.1", 2)
    assert idx.select([2, 0]).to_list() == ["layer.3:1", "layer.3:5"]
    assert NeuronIndex({"a": 2, "b": 1}) == NeuronIndex.from_neurons(["a:0", "a:1", "b:0"])
    assert NeuronIndex({"a": 2}) != NeuronIndex.from_neurons(["a:1", "a:0"])
    assert NeuronIndex.placeholder(3).is_placeholder and not idx.is_placeholder
    with pytest.raises(ValueError, match="twice"):
        NeuronIndex.from_neurons(["a:1", "b:0", "a:1"])
    assert pickle.loads(pickle.dumps(idx)) == idx


def test_store_view_is_lazy_picklable_and_carries_its_index(tmp_path):
    A, B, store = _store(tmp_path / "s.fgstore")
    v = store.view(layers=["layer.2"], label="pos")
    assert v.shape == (36, 3) and v.index.to_list() == ["layer.2:0", "layer.2:1", "layer.2:2"]
    np.testing.assert_array_equal(v.materialize(), B)
    assert list(v.y[:2]) == ["V", "N"]
    v2 = pickle.loads(pickle.dumps(v))
    assert v2._store is None or v2._store is not store  # reopened from the path, not copied
    np.testing.assert_array_equal(np.asarray(v2), B)
    assert len(pickle.dumps(v)) < 2000  # a path and a selection, not the data
    # neurons in the given order, across layers
    nv = store.view(neurons=["layer.2:1", "layer.1:3", "layer.2:0"])
    np.testing.assert_array_equal(nv.materialize(), np.stack([B[:, 1], A[:, 3], B[:, 0]], 1))
    assert nv.index.to_list() == ["layer.2:1", "layer.1:3", "layer.2:0"]
    sel = store.view().select(neurons=["layer.1:0", "layer.2:2"])
    np.testing.assert_array_equal(sel.materialize(), np.stack([A[:, 0], B[:, 2]], 1))


def test_view_blocks_stream_the_same_rows(tmp_path):
    A, B, store = _store(tmp_path / "s.fgstore")
    v = store.view(label="pos", block_rows=7)
    blocks = list(v.blocks())
    assert [len(b.X) for b in blocks] == [7, 7, 7, 7, 7, 1]
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), np.concatenate([A, B], 1))
    assert list(np.concatenate([b.y for b in blocks])) == list(v.y)
    assert blocks[1].positions.tolist() == list(range(7, 14))


def test_view_split_is_by_sentence_and_views_compose(tmp_path):
    _, B, store = _store(tmp_path / "s.fgstore")
    v = store.view(layers="layer.2", label="pos")
    tr, dv, te = v.split((0.5, 0.25, 0.25), seed=1)
    assert len(tr) + len(dv) + len(te) == len(v)
    sets = [set(p.sent_ids.tolist()) for p in (tr, dv, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    np.testing.assert_array_equal(te.materialize(), B[te.rows])
    sub = te.subset([0, 2])
    np.testing.assert_array_equal(sub.materialize(), B[te.rows[[0, 2]]])
    assert list(sub.words) == [f"w{i}" for i in te.rows[[0, 2]]]
    with pytest.raises(StoreError, match="no label column"):
        v.with_label("ner")
    with pytest.raises(ParameterError, match="has no label"):
        _ = store.view().y


def test_array_view_and_as_view(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    v = ArrayView(X, y=["a", "b", "a", "b"])
    assert v.index.to_list() == ["x:0", "x:1", "x:2"] and v.index.is_placeholder
    named = ArrayView(X, index=["layer.1:5", "layer.1:7", "layer.4:0"], sent_ids=[0, 0, 1, 1])
    assert named.select(columns=[2]).index.to_list() == ["layer.4:0"]
    parts = named.split((0.5, 0.5))
    assert sorted(len(p) for p in parts) == [2, 2]
    with pytest.raises(ParameterError, match="columns"):
        ArrayView(X, index=["a:0"])
    with pytest.raises(ParameterError, match="labels"):
        as_view(X, ["a"])
    view, y = as_view(X, ["a", "b", "c", "d"], index=["l:0", "l:1", "l:2"])
    assert isinstance(view, ArrayView) and list(y) == ["a", "b", "c", "d"]
    _, _, store = _store(tmp_path / "s.fgstore")
    sv, sy = as_view(store.view(layers="layer.1", label="pos"))
    assert isinstance(sv, StoreView) and len(sy) == 36
    with pytest.raises(ParameterError, match="does not match"):
        as_view(store.view(layers="layer.1"), index=NeuronIndex({"layer.2": 4}))


@dataclasses.dataclass
class _Demo(Result):
    name: str
    neurons: list
    scores: np.ndarray

    @classmethod
    def _decode(cls, d):
        return {**d, "neurons": [Neuron.parse(n) for n in d["neurons"]], "scores": np.asarray(d["scores"])}

    def table(self):
        return self.name + "\n" + "\n".join(f"{n}  {s:.2f}" for n, s in zip(self.neurons, self.scores))


def test_result_protocol_roundtrip(tmp_path):
    r = _Demo("<b>x</b>", [Neuron("layer.1", 3)], np.array([0.5]))
    d = r.to_dict()
    assert d == {"type": "_Demo", "name": "<b>x</b>", "neurons": ["layer.1:3"], "scores": [0.5]}
    back = _Demo.from_json(r.to_json(tmp_path / "r.json"))
    assert back.neurons == r.neurons and back.scores.tolist() == [0.5]
    assert isinstance(result_from_json(tmp_path / "r.json"), _Demo)
    html_text = r._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in html_text and "<b>x</b>" not in html_text  # user strings are escaped
    with pytest.raises(ParameterError, match="nothing to plot"):
        r.plot(tmp_path / "p.png")
    many = ResultList([r, r])
    assert json.loads(many.to_json())["items"][0]["name"] == "<b>x</b>"
    assert len(ResultList.from_dict(many.to_dict())) == 2
    assert jsonable({"a": float("nan"), "b": np.int64(3)}) == {"a": None, "b": 3}
    # the fast paths for rows of numbers keep the rules: non-finite floats -> None, bools stay bools
    assert jsonable([1.5, float("inf"), 2, -float("inf")]) == [1.5, None, 2, None]
    assert jsonable(np.array([[0.5, np.nan], [1.0, 2.0]])) == [[0.5, None], [1.0, 2.0]]
    assert jsonable(np.array([1, 2], dtype=np.int32)) == [1, 2] and jsonable([True, 1]) == [True, 1]
    assert jsonable((np.float32(0.25), np.int64(4))) == [0.25, 4]
    out = jsonable(np.arange(3.0))
    assert out == [0.0, 1.0, 2.0] and all(type(v) is float for v in out)
    with pytest.raises(FinegrainError, match="invalid JSON"):
        result_from_json("{not json")


def test_extract_is_the_function_and_extraction_a_plain_module():
    import types

    import finegrain
    import finegrain.extraction

    assert callable(finegrain.extract) and finegrain.extract is finegrain.extraction.extract
    assert type(finegrain.extraction) is types.ModuleType


def test_preserved_state_restores_modes_and_grads():
    import torch

    from finegrain.models.base import preserved_state

    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    m.train()
    m[0].weight.requires_grad_(False)
    with pytest.raises(RuntimeError), preserved_state(m):
        m.eval()
        m[0].weight.requires_grad_(True)
        raise RuntimeError("boom")
    assert m.training and m[1].training and not m[0].weight.requires_grad and m[0].bias.requires_grad


def test_every_public_module_is_an_attribute_of_the_root():
    """`fg.patching` (and lens, results, translation) raised AttributeError: the root's lazy table missed them."""
    import pkgutil

    import finegrain as fg

    names = {m.name for m in pkgutil.iter_modules(fg.__path__)} - {"cli", "__main__", "lazy"}
    missing = [n for n in sorted(names) if not n.startswith("_") and not hasattr(fg, n)]
    assert not missing, missing
    assert fg.patching.activation_patching and fg.lens.logit_lens and fg.results.result_from_json
