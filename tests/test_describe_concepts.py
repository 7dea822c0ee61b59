"""Compositional explanations over real concepts (issue 14 item 7): every frequent word, every label
column, lexicon categories, shapes, positions and the affixes found in the words; a planted
(A AND NOT B) OR C neuron is recovered exactly; streaming reads only the neuron's layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finegrain.describe import (
    ConceptMasks,
    NeuronDescription,
    NeuronFormula,
    build_concepts,
    describe_neurons,
    explain_neurons,
    find_affixes,
    lexicon_categories,
    neurons_for_words,
    top_activating,
    word_shape,
)
from finegrain.errors import ConceptError, LayerError
from finegrain.results import result_from_json
from finegrain.store import ActivationStore, StoreWriter
from finegrain.store.view import ArrayView

POS = {
    "runs": "VERB", "ate": "VERB", "sees": "VERB", "walked": "VERB", "hug": "VERB", "sang": "VERB",
    "running": "VERB", "eating": "VERB", "sleeping": "VERB", "singing": "VERB",
    "king": "NOUN", "ring": "NOUN", "ceiling": "NOUN", "thing": "NOUN", "song": "NOUN", "dog": "NOUN",
    "The": "DET", "the": "DET", "a": "DET", "this": "DET", "long": "ADJ", "big": "ADJ", "Paris": "PROPN",
}
TAG = {"VERB": "VB", "NOUN": "NN", "DET": "DT", "ADJ": "JJ", "PROPN": "NNP"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A word-level store: ``layer.1:2`` = 2 + noise exactly on (pos=VERB AND NOT suffix=-ing) OR
    word=the (either case), N(0, 0.3) elsewhere; ``layer.0`` is unrelated noise."""
    rng = np.random.default_rng(0)
    vocab = list(POS)
    sents = [list(rng.choice(vocab, size=rng.integers(5, 10))) for _ in range(70)]
    flat = [w for s in sents for w in s]
    n = len(flat)
    sent_id = np.concatenate([[i] * len(s) for i, s in enumerate(sents)])
    word_pos = np.concatenate([np.arange(len(s)) for s in sents])
    pos = np.array([POS[w] for w in flat])
    truth = ((pos == "VERB") & ~np.char.endswith(np.char.lower(flat), "ing")) | (np.char.lower(flat) == "the")
    l0 = rng.normal(size=(n, 4)).astype(np.float32)
    l1 = (0.3 * rng.normal(size=(n, 3))).astype(np.float32)
    l1[truth, 2] = 2.0 + 0.1 * rng.random(int(truth.sum()))
    path = tmp_path_factory.mktemp("planted") / "p.fgstore"
    w = StoreWriter(path, {"layer.0": 4, "layer.1": 3}, n, label_columns=["pos", "tag"], dtype="float32",
                    chunk_rows=32)
    w.write({"layer.0": l0, "layer.1": l1}, sent_id, word_pos, flat,
            {"pos": pos, "tag": np.array([TAG[p] for p in pos])})
    return w.commit(), truth


def test_planted_and_not_or_formula_is_recovered_exactly(planted):
    store, truth = planted
    q = 1 - truth.sum() / len(truth)  # the neuron is on exactly at the planted rows
    view = store.view(layers=["layer.1"], block_rows=37)
    ex = explain_neurons(view, "layer.1:2", quantile=q, lexicons=None, max_length=3, beam_width=10)
    assert isinstance(ex, NeuronFormula)
    assert ex.n_on == truth.sum() and ex.iou == 1.0
    assert {c for _, c in ex.steps} == {"pos=VERB", "suffix=-ing", "word=the"}
    assert ex.formula in ("(pos=VERB AND NOT suffix=-ing) OR word=the", "(pos=VERB OR word=the) AND NOT suffix=-ing")
    cs = build_concepts(view, lexicons=None)
    np.testing.assert_array_equal(ex.mask(cs), truth)
    assert ex.per_length[0]["iou"] < ex.per_length[1]["iou"] < 1.0  # each step of the formula is needed
    # the threshold is reported beside the IoU: the quantile and its value
    assert ex.quantile == pytest.approx(q) and 2.0 <= ex.threshold < 2.1
    assert ex.precision == 1.0 and ex.recall == 1.0 and ex.n_formula == truth.sum()
    # examples: all the top rows are matched, nothing missed, no false alarm
    assert len(ex.matched) == 5 and not ex.missed and not ex.false_alarms
    acts = store.matrix(neurons=["layer.1:2"])[:, 0]
    assert [e.row for e in ex.matched] == list(np.argsort(-acts, kind="stable")[:5])
    assert all(e.on and e.matched and f"[{e.word}]" in e.context for e in ex.matched)


def test_examples_matched_missed_and_false_alarms(planted):
    store, truth = planted
    # on the planted rows but a concept set without suffixes: the formula cannot exclude the -ing verbs
    acts = store.matrix(neurons=["layer.1:2"])[:, 0]
    cs = build_concepts(store, lexicons=None, kinds=("word", "label"), min_count=1000)  # no word concepts
    ex = explain_neurons(store, "layer.1:2", cs, threshold=1.0, max_length=1, examples=50)
    assert ex.formula == "pos=VERB" and ex.quantile is None and ex.threshold == 1.0
    fm = cs.mask("pos=VERB")
    on = acts >= 1.0
    assert {e.row for e in ex.matched} == set(np.flatnonzero(on & fm)[:50]) or len(ex.matched) == 50
    assert {e.row for e in ex.missed} == set(np.flatnonzero(on & ~fm))  # the word "the"
    assert all(e.word.lower() == "the" for e in ex.missed)
    assert {e.word for e in ex.false_alarms} <= {"running", "eating", "sleeping", "singing"}
    assert ex.iou == pytest.approx((on & fm).sum() / (on | fm).sum())
    assert ex.precision == pytest.approx((on & fm).sum() / fm.sum())
    assert ex.recall == pytest.approx((on & fm).sum() / on.sum())
    text = ex.table()
    assert "IoU" in text and "act >= 1" in text and "missed" in text and "[the]" in text.lower()


def test_concepts_from_every_source(planted):
    store, _ = planted
    cs = build_concepts(store, lexicons={"animals": ["dog", "cat"]}, min_count=5)
    names = set(cs.names)
    # every label column, not only pos
    assert {"pos=VERB", "pos=PROPN", "tag=NNP", "tag=VB"} <= names
    # words above the minimum count, lower-cased ("The" and "the" are one word concept)
    words = np.char.lower(np.asarray(store.words, dtype=str))
    vocab, counts = np.unique(words, return_counts=True)
    assert {n for n in names if n.startswith("word=")} == {f"word={w}" for w, c in zip(vocab, counts) if c >= 5}
    # affixes found in the words: -ing on 8 types; -ng also on song/long; un- on nothing
    assert {"suffix=-ing", "suffix=-ng", "suffix=-s"} <= names and "prefix=un-" not in names
    ing = np.char.endswith(words, "ing") & (np.char.str_len(words) >= 5)  # king: too short a stem
    np.testing.assert_array_equal(cs.mask("suffix=-ing"), ing)
    # capitalisation and position
    raw = np.asarray(store.words, dtype=str)
    np.testing.assert_array_equal(cs.mask("shape=Title"), np.isin(raw, ["The", "Paris"]))
    np.testing.assert_array_equal(cs.mask("position=first"), store.index("word_pos") == 0)
    np.testing.assert_array_equal(cs.mask("lex=animals"), words == "dog")
    assert cs.summary()["lexicon"] == 1 and cs.kinds[cs.index("tag=NN")] == "label:tag"
    # counts against a mask are the dense counts, for every concept
    m = np.random.default_rng(0).random(cs.n_rows) < 0.3
    dense = np.array([(cs.mask(i) & m).sum() for i in range(len(cs))])
    np.testing.assert_array_equal(cs.counts_in(m), dense)
    with pytest.raises(ConceptError, match="label column"):
        build_concepts(store, label_columns=["dep"])


def test_affixes_need_several_word_types():
    suf, pre = find_affixes(["running", "eating", "king", "sleeping", "unhappy", "untie", "undo", "redo", "happy",
                             "tie", "do", "uncle"],
                            [3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1],
                            min_count=3, min_types=3)
    assert "ing" in suf and "un" in pre and "re" not in pre  # re- is on one type only
    assert [word_shape(w) for w in ("dog", "Dog", "DOG", "iPhone", "N2", ",", "I")] == \
        ["lower", "Title", "UPPER", "mixed", "digit", "punct", "Title"]


def test_lexicon_categories_walk_any_layout():
    lex = {"_doc": "ignored",
           "nouns": [{"sg": "dog", "pl": "dogs", "class": "animal"}, {"sg": "cat", "pl": "cats", "class": "animal"},
                     {"sg": "car", "pl": "cars", "class": "thing"}],
           "adverbs": {"manner": ["slowly", "fast"], "time": ["today"]},
           "aux": {"be": {"Pres": {"3Sing": "is"}, "Past": {"3Sing": "was"}}},
           "conjunctions": ["and", "but"], "relativizer": "that"}
    cats = lexicon_categories(lex)
    assert cats["nouns"] == ["car", "cars", "cat", "cats", "dog", "dogs"]
    assert cats["nouns:pl"] == ["cars", "cats", "dogs"]
    assert cats["nouns:class=animal"] == ["cat", "cats", "dog", "dogs"]
    assert cats["adverbs"] == ["fast", "slowly", "today"] and cats["adverbs:time"] == ["today"]
    assert cats["aux:be"] == ["is", "was"] and cats["relativizer"] == ["that"] and "_doc" not in cats
    builtin = lexicon_categories()
    assert "nouns" in builtin and "verbs" in builtin and all(builtin.values())


def test_streaming_reads_only_the_neurons_layer(planted, monkeypatch):
    store, truth = planted
    q = 1 - truth.sum() / len(truth)
    read = []
    orig = ActivationStore._read

    def spy(self, layer, *args, **kwargs):
        read.append(layer)
        return orig(self, layer, *args, **kwargs)

    monkeypatch.setattr(ActivationStore, "_read", spy)
    cs = build_concepts(store, lexicons=None)
    assert read == []  # concepts come from the index columns only
    results = [explain_neurons(store.view(block_rows=b), ["layer.1:2"], cs, quantile=q) for b in (13, 10**6)]
    assert set(read) == {"layer.1"}
    assert results[0][0].to_dict() == results[1][0].to_dict()  # the block size changes nothing
    with pytest.raises(LayerError):
        explain_neurons(store.view(layers=["layer.0"]), "layer.1:2", cs)


def test_result_protocol_round_trip(planted, tmp_path):
    store, truth = planted
    q = 1 - truth.sum() / len(truth)
    res = explain_neurons(store, ["layer.1:2", "layer.0:1"], lexicons=None, progress=False, quantile=q)
    assert [r.neuron for r in res] == ["layer.1:2", "layer.0:1"] and res["layer.0:1"] is res[1]
    back = result_from_json(res.to_json())
    assert [r.to_dict() for r in back] == [r.to_dict() for r in res]
    one = NeuronFormula.from_json(res[0].to_json(tmp_path / "f.json"))
    assert one.formula == res[0].formula and one.matched[0].row == res[0].matched[0].row
    np.testing.assert_array_equal(one.mask(build_concepts(store, lexicons=None)), truth)
    png = res[0].plot(tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = res[0]._repr_html_()
    assert "<img" in html and "IoU" in html
    json.loads(res[0].to_json())


def test_markup_in_words_is_escaped(tmp_path):
    words = ["<b>x</b>", "y", "z", "y"] * 10
    n = len(words)
    w = StoreWriter(tmp_path / "m.fgstore", {"layer.0": 1}, n, dtype="float32")
    act = np.array([[1.0 if t == "<b>x</b>" else 0.0] for t in words], np.float32)
    w.write({"layer.0": act}, np.arange(n) // 4, np.arange(n) % 4, words, {})
    res = explain_neurons(w.commit(), "layer.0:0", lexicons=None, min_count=2, quantile=0.7)
    assert res.formula == "word=<b>x</b>" and res.iou == 1.0
    assert "<b>x</b>" not in res._repr_html_() and "&lt;b&gt;" in res._repr_html_()


def test_sentence_level_concepts(tmp_path):
    sents = ["the dog runs", "a cat sleeping", "the king sings", "Paris is big"] * 5
    n = len(sents)
    w = StoreWriter(tmp_path / "s.fgstore", {"layer.0": 1}, n, dtype="float32", meta={"level": "sentence"},
                    label_columns=["kind"])
    act = np.array([[1.0 if "the" in s.split() else 0.0] for s in sents], np.float32)
    w.write({"layer.0": act}, np.arange(n), np.zeros(n, int), sents, {"kind": ["a", "a", "b", "b"] * 5})
    store = w.commit()
    cs = build_concepts(store, lexicons=None, min_count=3)
    np.testing.assert_array_equal(cs.mask("word=the"), act[:, 0] > 0)
    assert "kind=a" in cs.names and "shape=Title" in cs.names
    ex = explain_neurons(store, "layer.0:0", cs, quantile=0.5)
    assert ex.iou == 1.0 and ex.formula == "word=the"


def test_from_masks_and_joins():
    a = ConceptMasks.from_masks({"A": np.array([1, 0, 1], bool)})
    b = ConceptMasks.from_masks({"B": np.array([0, 1, 1], bool)})
    ab = a + b
    assert ab.names == ["A", "B"] and list(ab.counts) == [2, 2]
    np.testing.assert_array_equal(ab.subset_rows([0, 2]).mask("B"), [False, True])
    with pytest.raises(ConceptError, match="unique"):
        a + a


def test_descriptions_take_views(planted):
    store, _ = planted
    rows = np.flatnonzero(store.sent_ids >= 35)
    view = store.view(layers=["layer.1"], rows=rows)
    acts = store.matrix(neurons=["layer.1:2"], rows=rows)[:, 0]
    top = top_activating(view, "layer.1:2", k=3, chunk_rows=17)
    assert [e.row for e in top] == list(np.argsort(-acts, kind="stable")[:3])  # rows: positions in the view
    assert all(e.word == store.words[rows[e.row]] and e.sentence[e.word_pos] == e.word for e in top)
    one = describe_neurons(view, "layer.1:2", k=2)  # one in, one out
    assert isinstance(one, NeuronDescription) and one.stats.n == len(rows)
    assert NeuronDescription.from_json(one.to_json()).to_dict() == one.to_dict()
    # an in-memory array view with its neuron index, sentences and words works the same
    av = ArrayView(store.matrix(["layer.1"]), index=store.neuron_index(["layer.1"]), sent_ids=store.sent_ids,
                   words=store.words)
    a, b = top_activating(av, "layer.1:2", k=4), top_activating(store, "layer.1:2", k=4)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert neurons_for_words(av, ["the"], top=1)[0].neuron == "layer.1:2"
    cs = build_concepts(av, lexicons=None, kinds=("word", "affix"))  # an array view has no label columns
    assert explain_neurons(av, "layer.1:2", cs).formula == explain_neurons(store, "layer.1:2", cs).formula
