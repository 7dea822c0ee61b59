"""spaCy silver annotation on the corpus's own tokens."""

from __future__ import annotations

import pytest

from finegrain.data import AnnotationError, Corpus, CorpusError, Sentence, annotate
from finegrain.data.annotate import load_spacy
from finegrain.errors import ParameterError

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


def test_stand_in_words_are_annotated_but_not_kept():
    # spaCy sees "10 %" for the Penn Treebank's "N N"; the corpus keeps "N N"
    c = annotate(
        ["rates rose to N N", "he paid N dollars"],
        columns=["upos", "xpos", "dep"],
        stand_in=lambda ws: ["10" if w == "N" else w for w in ws],
        progress=False,
    )
    assert c.words() == [["rates", "rose", "to", "N", "N"], ["he", "paid", "N", "dollars"]]
    assert c[0].labels["upos"][3] == "NUM" and c[1].labels["xpos"][2] == "CD"
    plain = annotate(["he paid N dollars"], columns=["upos"], progress=False)
    assert plain[0].labels["upos"][2] != "NUM"  # what spaCy makes of a bare "N": the stand-in matters
    with pytest.raises(ParameterError, match="stand_in returned 1 words"):
        annotate(["a b"], columns=["upos"], stand_in=lambda ws: ws[:1])


def test_only_the_needed_components_run(monkeypatch):
    nlp = load_spacy()
    calls = []
    real_pipe = nlp.pipe

    def pipe(docs, **kw):
        calls.append(sorted(kw.get("disable", [])))
        return real_pipe(docs, **kw)

    monkeypatch.setattr(nlp, "pipe", pipe)
    c = annotate(["The dogs sleep in Paris"], columns=["upos", "ner"], progress=False)
    assert c[0].labels["ner"][4] == "B-GPE" and c[0].labels["upos"][1] == "NOUN"
    both = annotate(["The dogs sleep in Paris"], columns=["dep", "lemma"], progress=False)
    assert both[0].labels["dep"][:3] == ["det", "nsubj", "ROOT"] and both[0].labels["lemma"][1] == "dog"
    assert calls == [["lemmatizer", "parser"], ["ner"]]
    assert "parser" in nlp.pipe_names  # switched off per call, not removed from the shared pipeline


def test_annotate_errors():
    with pytest.raises(ParameterError, match="unknown annotation columns"):
        annotate(["a b"], columns=["upos", "srl"])
    with pytest.raises(ParameterError, match="batch_size"):
        annotate(["a b"], batch_size=0)
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
