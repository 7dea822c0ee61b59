"""spaCy silver annotation on the corpus's own tokens."""

from __future__ import annotations

import pytest

from finegrain.data import AnnotationError, Corpus, CorpusError, Sentence, annotate
from finegrain.data.annotate import load_spacy

pytest.importorskip("spacy")
try:
    load_spacy()
except AnnotationError as e:  # pragma: no cover - depends on the environment
    pytest.skip(str(e), allow_module_level=True)


def test_annotate_keeps_tokens_and_tags_plural_noun():
    texts = ["The dogs sleep .", "Mary visited New York yesterday", "I can't go"]
    c = annotate(texts, batch_size=2)
    assert c.words() == [t.split() for t in texts]  # "can't" stays one token
    for s in c:
        for col in ("upos", "xpos", "dep", "ner", "morph", "Number", "Tense"):
            assert len(s.labels[col]) == len(s.words)
    dogs = c[0]
    assert dogs.labels["upos"][1] == "NOUN"
    assert dogs.labels["Number"][1] == "Plur"
    assert "Number=Plur" in dogs.labels["morph"][1]
    assert dogs.labels["Number"][0] == "_"  # "The" has no Number
    ner = c[1].labels["ner"]
    assert ner[0] == "B-PERSON"
    assert ner[2:4] == ["B-GPE", "I-GPE"]
    assert all(t == "O" or t[:2] in ("B-", "I-") for s in c for t in s.labels["ner"])


def test_annotate_corpus_is_copied_and_labels_kept():
    corpus = Corpus([Sentence(["Cats", "purr"], {"gold": ["NOUN", "VERB"]}, {"topic": "pets"})])
    out = annotate(corpus, columns=["upos", "head", "lemma"])
    assert out[0].labels["gold"] == ["NOUN", "VERB"] and out[0].sent_labels == {"topic": "pets"}
    assert set(out.label_columns) == {"gold", "upos", "head", "lemma"}  # no morph -> no FEATS columns
    assert "0" in out[0].labels["head"]  # exactly one root per single-sentence doc
    assert corpus.label_columns == ["gold"]  # input untouched


def test_annotate_errors():
    with pytest.raises(ValueError, match="unknown annotation columns"):
        annotate(["a b"], columns=["upos", "srl"])
    with pytest.raises(CorpusError, match="empty corpus"):
        annotate(["", "  "])
    with pytest.raises(CorpusError, match="overwrite"):
        annotate(Corpus([Sentence(["x"], {"upos": ["X"]})]), columns=["upos"])
    with pytest.raises(AnnotationError, match="pip install|spacy download"):
        load_spacy("en_core_web_nonexistent_model")


def test_missing_spacy_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` raise ImportError
    with pytest.raises(AnnotationError, match=r"pip install 'spacy"):
        load_spacy.__wrapped__()  # bypass the cache


def test_cli_annotate(tmp_path, capsys):
    import argparse

    from finegrain.data import read_parallel_dir
    from finegrain.data.cli import register

    src = tmp_path / "in.txt"
    src.write_text("The dogs sleep .\n\nShe reads books\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "annotate", str(src), "--out", str(tmp_path / "out"), "--columns", "upos"])
    args.func(args)
    back = read_parallel_dir(tmp_path / "out")
    assert back.words() == [["The", "dogs", "sleep", "."], ["She", "reads", "books"]]
    assert back.label_columns == ["upos"]
    assert back[0].labels["upos"][1] == "NOUN"
