import argparse
import json

import numpy as np
import pytest

from finegrain.describe import (
    ConceptMasks,
    Formula,
    activation_stats,
    build_concepts,
    describe_neurons,
    explain_mask,
    explain_neuron,
    explain_neurons,
    iou,
    neuron_mask,
    neurons_for_words,
    top_activating,
)
from finegrain.describe.compositional import pack, popcount, unpack
from finegrain.describe.top import str_array
from finegrain.store import StoreWriter

VOCAB = {
    # word: (pos, number)
    "dog": ("NOUN", "Sing"), "cat": ("NOUN", "Sing"), "house": ("NOUN", "Sing"),
    "dogs": ("NOUN", "Plur"), "cats": ("NOUN", "Plur"), "houses": ("NOUN", "Plur"),
    "runs": ("VERB", "Sing"), "run": ("VERB", "Plur"), "sees": ("VERB", "Sing"), "see": ("VERB", "Plur"),
    "the": ("DET", "_"), "a": ("DET", "_"), "big": ("ADJ", "_"), "red": ("ADJ", "_"),
}
TOP_ROWS = {13: 10.0, 57: 9.0, 101: 8.0}
NEG_ROW = 77


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory):
    """A float32 word-level store with planted neurons:

    layer.1:0  3.0 exactly on pos=NOUN AND number=Plur rows, U(-1, 1) elsewhere
    layer.1:1  U(-1, 1) except rows 13, 57, 101 (10, 9, 8) and row 77 (-20)
    layer.2:1  2 + noise on the words "big"/"red", noise elsewhere
    """
    rng = np.random.default_rng(0)
    words = list(VOCAB)
    sents = [list(rng.choice(words, size=rng.integers(4, 9))) for _ in range(40)]
    flat = [w for s in sents for w in s]
    n = len(flat)
    sent_id = np.concatenate([[i] * len(s) for i, s in enumerate(sents)])
    word_pos = np.concatenate([np.arange(len(s)) for s in sents])
    pos = np.array([VOCAB[w][0] for w in flat])
    num = np.array([VOCAB[w][1] for w in flat])
    l1 = rng.uniform(-1, 1, size=(n, 4)).astype(np.float32)
    l1[:, 0] = np.where((pos == "NOUN") & (num == "Plur"), 3.0, l1[:, 0])
    for r, v in TOP_ROWS.items():
        l1[r, 1] = v
    l1[NEG_ROW, 1] = -20.0
    l2 = rng.normal(size=(n, 3)).astype(np.float32) * 0.5
    l2[:, 1] += 2.0 * np.isin(flat, ["big", "red"])
    path = tmp_path_factory.mktemp("store") / "toy.fgstore"
    w = StoreWriter(path, {"layer.1": 4, "layer.2": 3}, n, label_columns=["pos", "number"], dtype="float32",
                    chunk_rows=16)
    for s in range(0, n, 50):
        sl = slice(s, min(s + 50, n))
        w.write({"layer.1": l1[sl], "layer.2": l2[sl]}, sent_id[sl], word_pos[sl], flat[sl],
                {"pos": pos[sl], "number": num[sl]})
    return w.commit()


# -- top activating --------------------------------------------------------------------------
def test_top_activating_returns_planted_rows_in_order(corpus_store):
    top = top_activating(corpus_store, "layer.1:1", k=3, chunk_rows=7)
    assert [e.row for e in top] == list(TOP_ROWS)
    assert [e.activation for e in top] == pytest.approx(list(TOP_ROWS.values()))
    words = corpus_store.words
    for e in top:
        assert e.word == words[e.row]
        assert e.sentence == corpus_store.sentence(e.sent_id)
        assert e.sentence[e.word_pos] == e.word
        assert e.sentence_activations[e.word_pos] == pytest.approx(e.activation)
    assert top_activating(corpus_store, "layer.1:1", k=1, absolute=True)[0].row == NEG_ROW
    low = top_activating(corpus_store, "layer.1:1", k=1, lowest=True)[0]
    assert low.row == NEG_ROW and low.activation == pytest.approx(-20.0)


@pytest.mark.parametrize("absolute", [False, True])
def test_streaming_equals_in_memory(corpus_store, absolute):
    col = corpus_store.matrix(neurons=["layer.2:0"])[:, 0]
    score = np.abs(col) if absolute else col
    expect = np.argsort(-score, kind="stable")[:15]
    for chunk in (5, 64, 10**6):
        got = top_activating(corpus_store, "layer.2:0", k=15, absolute=absolute, chunk_rows=chunk)
        assert [e.row for e in got] == list(expect)


def test_top_sentences_match_groupby(corpus_store):
    col = corpus_store.matrix(neurons=["layer.1:2"])[:, 0]
    sids = corpus_store.sent_ids
    best = {s: col[sids == s].max() for s in np.unique(sids)}
    expect = sorted(best, key=lambda s: -best[s])[:5]
    for chunk in (3, 10**6):
        got = top_activating(corpus_store, "layer.1:2", k=5, by="sentence", chunk_rows=chunk)
        assert [e.sent_id for e in got] == expect
        for e in got:
            assert e.activation == pytest.approx(best[e.sent_id])
            assert e.sentence == corpus_store.sentence(e.sent_id)


def test_activation_stats_quantiles_match_numpy(corpus_store):
    qs = [0.0, 0.1, 0.5, 0.9, 0.995, 1.0]
    neurons = ["layer.1:3", "layer.2:2"]
    stats = activation_stats(corpus_store, neurons, bins=20, quantiles=qs, chunk_rows=9)
    X = corpus_store.matrix(neurons=neurons)
    for j, st in enumerate(stats):
        assert st.exact and st.n == len(X)
        assert [st.quantiles[q] for q in qs] == pytest.approx(list(np.quantile(X[:, j].astype(np.float64), qs)))
        assert st.mean == pytest.approx(float(X[:, j].mean()), abs=1e-6)
        counts, edges = np.histogram(X[:, j].astype(np.float64), bins=20)
        assert st.hist_counts == list(counts) and st.hist_edges == pytest.approx(list(edges))
    # the streaming two-pass estimate agrees to within a fine bin
    approx = activation_stats(corpus_store, neurons, bins=20, quantiles=qs, chunk_rows=9, max_values=1)
    for j, st in enumerate(approx):
        assert not st.exact and sum(st.hist_counts) == len(X)
        width = (X[:, j].max() - X[:, j].min()) / (20 * 64)
        srt = np.sort(X[:, j].astype(np.float64))
        for q in qs:  # the estimate lies among the order statistics around rank q * n, up to a fine bin
            i = int(q * len(srt))
            lo, hi = srt[max(i - 1, 0)] - width, srt[min(i + 1, len(srt) - 1)] + width
            assert lo - 1e-6 <= st.quantiles[q] <= hi + 1e-6
        assert st.std == pytest.approx(float(X[:, j].std()), rel=1e-4)
    single = activation_stats(corpus_store, "layer.1:3", quantiles=qs)
    assert single.quantiles == stats[0].quantiles


def test_describe_neurons_matches_single_calls(corpus_store):
    desc = describe_neurons(corpus_store, ["layer.1:1", "layer.2:0"], k=4, chunk_rows=11)
    assert desc.neurons() == ["layer.1:1", "layer.2:0"]  # list in, list out (was a dict keyed by neuron)
    for name, d in zip(desc.neurons(), desc):
        assert [e.row for e in d.top] == [e.row for e in top_activating(corpus_store, name, k=4)]
        assert [e.row for e in d.bottom] == [e.row for e in top_activating(corpus_store, name, k=4, lowest=True)]
        assert d.bottom[0].score == pytest.approx(d.bottom[0].activation)
    assert desc["layer.1:1"].bottom[0].row == NEG_ROW
    json.dumps(desc["layer.1:1"].to_dict())  # serialisable for the report
    with pytest.raises(ValueError, match="by must be"):
        describe_neurons(corpus_store, ["layer.1:1"], by="token")


# -- search ----------------------------------------------------------------------------------
def test_search_finds_word_neuron(corpus_store):
    hits = neurons_for_words(corpus_store, ["Big", "red"], top=3, chunk_rows=13)
    assert hits[0].neuron == "layer.2:1" and hits[0].score > 2
    # Cohen's d by hand
    col = corpus_store.matrix(neurons=["layer.2:1"])[:, 0].astype(np.float64)
    m = np.isin(np.char.lower(str_array(corpus_store.words)), ["big", "red"])
    pooled = np.sqrt((m.sum() * col[m].var() + (~m).sum() * col[~m].var()) / len(m))
    assert hits[0].score == pytest.approx((col[m].mean() - col[~m].mean()) / pooled, rel=1e-6)
    assert hits[0].n_in == m.sum()
    rx = neurons_for_words(corpus_store, regex=r"^(big|red)$", layers=["layer.2"], top=1)
    assert rx[0].neuron == "layer.2:1"
    plural = neurons_for_words(corpus_store, ["dogs", "cats", "houses"], top=1, direction="up")
    assert plural[0].neuron == "layer.1:0"
    with pytest.raises(ValueError, match="no row"):
        neurons_for_words(corpus_store, ["zebra"])
    with pytest.raises(ValueError, match="exactly one"):
        neurons_for_words(corpus_store)


# -- compositional -----------------------------------------------------------------------------
def test_iou_by_hand_and_beam_on_six_rows():
    M = np.array([1, 1, 1, 0, 0, 0], bool)
    A = np.array([1, 1, 0, 1, 0, 0], bool)
    B = np.array([0, 0, 1, 0, 0, 0], bool)
    E = np.array([0, 0, 0, 1, 0, 1], bool)
    assert iou(M, A) == pytest.approx(2 / 4)
    assert iou(M, B) == pytest.approx(1 / 3)
    assert iou(M, E) == 0.0
    assert iou(M, A | B) == pytest.approx(3 / 4)
    cs = ConceptMasks.from_masks({"A": A, "B": B, "E": E})
    ex = explain_mask(M, cs, beam_width=3, max_length=3)
    assert [p["iou"] for p in ex.per_length] == pytest.approx([0.5, 0.75, 1.0])
    assert [p["formula"] for p in ex.per_length] == ["A", "A OR B", "(A OR B) AND NOT E"]
    assert ex.formula == "(A OR B) AND NOT E" and ex.iou == 1.0 and ex.length == 3
    np.testing.assert_array_equal(ex.tree.mask(cs), M)


def test_pack_popcount_roundtrip():
    rng = np.random.default_rng(1)
    for n in (1, 7, 64, 65, 200):
        m = rng.random(n) < 0.3
        assert popcount(pack(m)) == m.sum()
        np.testing.assert_array_equal(unpack(pack(m), n), m)


def test_planted_formula_found(corpus_store):
    # without the built-in lexicon: its category of plural noun forms would be this mask in one concept
    ex = explain_neuron(corpus_store, "layer.1:0", quantile=0.995, max_length=3, lexicons=None)
    assert ex.iou == 1.0
    assert ex.length == 2
    assert ex.formula in ("pos=NOUN AND number=Plur", "number=Plur AND pos=NOUN")
    truth = (corpus_store.labels("pos") == "NOUN") & (corpus_store.labels("number") == "Plur")
    assert ex.n_on == truth.sum() and ex.threshold == pytest.approx(3.0)
    assert ex.per_length[0]["iou"] < 1.0  # no single concept suffices
    batch = explain_neurons(corpus_store, ["layer.1:0", "layer.2:1"], max_values=100, progress=False,
                            lexicons=None)
    assert batch["layer.1:0"].formula == ex.formula
    assert batch["layer.2:1"].n_on == 5  # 0.5% of 255 rows, raised to min_positives
    # the big/red neuron, on its top 17%: pos=ADJ covers exactly {big, red}; the equal-mask formula
    # "word=big OR word=red" is longer and deduplicated away
    adj = explain_neuron(corpus_store, "layer.2:1", quantile=0.83)
    assert adj.formula == "pos=ADJ" and adj.iou > 0.8
    beam = [f for f, _ in adj.beam]
    assert "word=big OR word=red" not in beam and "word=red OR word=big" not in beam


def test_best_iou_never_decreases_and_matches_masks():
    rng = np.random.default_rng(3)
    n, k = 300, 25
    masks = {f"c{i}": rng.random(n) < rng.uniform(0.05, 0.4) for i in range(k)}
    cs = ConceptMasks.from_masks(masks)
    for seed in range(4):
        M = np.random.default_rng(seed).random(n) < 0.15
        ex = explain_mask(M, cs, beam_width=3, max_length=5)
        ious = [p["iou"] for p in ex.per_length]
        assert len(ious) == 5 and all(b >= a for a, b in zip(ious, ious[1:]))
        assert ex.iou == pytest.approx(iou(M, ex.tree.mask(cs)))
        beam_ious = [v for _, v in ex.beam]
        assert beam_ious == sorted(beam_ious, reverse=True) and 0.0 <= beam_ious[-1]


def test_length_two_beam_equals_brute_force():
    rng = np.random.default_rng(5)
    n, k = 200, 8
    names = [f"c{i}" for i in range(k)]
    masks = {nm: rng.random(n) < 0.3 for nm in names}
    cs = ConceptMasks.from_masks(masks)
    M = rng.random(n) < 0.2
    best = max(iou(M, m) for m in masks.values())
    for a in names:
        for b in names:
            if a != b:
                A, B = masks[a], masks[b]
                best = max(best, iou(M, A & B), iou(M, A | B), iou(M, A & ~B))
    ex = explain_mask(M, cs, beam_width=k, max_length=2)
    assert ex.iou == pytest.approx(best)


def test_formula_render_and_concepts(corpus_store):
    names = ["pos=NOUN", "number=Plur", "word=dogs"]
    f = Formula(2, "OR", Formula(1, "AND", Formula(0)))
    assert f.render(names) == "(pos=NOUN AND number=Plur) OR word=dogs"
    cs = build_concepts(corpus_store, top_words=5, lexicons={"colour": ["Red", "blue"]})
    assert "pos=NOUN" in cs.names and "number=Plur" in cs.names and "lex=colour" in cs.names
    assert "number=_" not in cs.names
    assert sum(nm.startswith("word=") for nm in cs.names) == 5
    np.testing.assert_array_equal(cs.mask("lex=colour"), corpus_store.words == "red")


def test_neuron_mask_min_positives():
    v = np.arange(100, dtype=float)
    m, thr = neuron_mask(v, quantile=0.995, min_positives=5)
    assert m.sum() == 5 and thr == 95
    m, _ = neuron_mask(v, quantile=0.9, min_positives=1)
    assert m.sum() == 10
    relu = np.zeros(100)
    relu[:2] = [1.0, 2.0]
    m, _ = neuron_mask(relu, quantile=0.99, min_positives=5)
    assert m.sum() == 2  # zeros are not "on" just because they tie at the threshold
    with pytest.raises(ValueError, match="quantile"):
        neuron_mask(v, quantile=1.5)


# -- CLI ---------------------------------------------------------------------------------------
def _cli(argv):
    from finegrain.describe.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_describe_and_search(corpus_store, capsys):
    assert _cli(["describe", str(corpus_store.path), "layer.1:0", "-k", "3", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "layer.1:0" in out and "IoU 1.000" in out and "[" in out
    assert _cli(["describe", str(corpus_store.path), "layer.1:1,layer.2:0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layer.1:1"]["top"][0]["row"] == 13
    assert _cli(["search", str(corpus_store.path), "--words", "big,red", "--top", "2"]) == 0
    assert "layer.2:1" in capsys.readouterr().out.splitlines()[2]
    assert _cli(["search", str(corpus_store.path), "--regex", "s$", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 7 and hits[0]["neuron"] == "layer.1:0"  # top=20 capped at the store's 7 neurons
