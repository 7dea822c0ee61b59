"""Corpus readers/writers: round trips of hand-written files and errors naming file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finegrain.data import (
    Corpus,
    CorpusError,
    Sentence,
    read_conll2003,
    read_conllu,
    read_corpus,
    read_parallel,
    read_parallel_dir,
    read_text,
    read_tsv,
    write_parallel,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def raises_at(fname: str, line: int):
    """CorpusError whose message names ``fname`` and ``line`` as ``fname:line``."""
    return pytest.raises(CorpusError, match=rf"{re.escape(fname)}:{line}\b")


# -- plain text --------------------------------------------------------------------------------


def test_read_text_skips_blank_lines(tmp_path):
    p = write(tmp_path, "a.txt", "The cat sat .\n\n  \nDogs bark\n")
    c = read_text(p)
    assert c.words() == [["The", "cat", "sat", "."], ["Dogs", "bark"]]
    assert c.label_columns == [] and c.name == "a"


def test_read_text_empty_is_error(tmp_path):
    p = write(tmp_path, "empty.txt", "\n \n")
    with pytest.raises(CorpusError, match="empty.txt.*empty corpus"):
        read_text(p)


def test_missing_file_is_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="nope.txt"):
        read_text(tmp_path / "nope.txt")


# -- parallel ----------------------------------------------------------------------------------


def test_read_parallel(tmp_path):
    s = write(tmp_path, "sents.txt", "the dogs run\nI sleep\n")
    l = write(tmp_path, "pos.txt", "DET NOUN VERB\nPRON VERB\n")
    c = read_parallel(s, l, column="pos")
    assert c.words() == [["the", "dogs", "run"], ["I", "sleep"]]
    assert c.word_labels("pos").tolist() == ["DET", "NOUN", "VERB", "PRON", "VERB"]


def test_read_parallel_several_columns(tmp_path):
    s = write(tmp_path, "sents.txt", "the dogs\n")
    a = write(tmp_path, "pos.txt", "DET NOUN\n")
    b = write(tmp_path, "num.txt", "_ Plur\n")
    c = read_parallel(s, {"pos": a, "number": b})
    assert c[0].labels == {"pos": ["DET", "NOUN"], "number": ["_", "Plur"]}


def test_read_parallel_token_mismatch_names_both_files_and_line(tmp_path):
    s = write(tmp_path, "sents.txt", "a b c\nd e f\n")
    l = write(tmp_path, "tags.txt", "X X X\nX X\n")
    with pytest.raises(CorpusError) as e:
        read_parallel(s, l)
    msg = str(e.value)
    assert "sents.txt:2" in msg and "tags.txt:2" in msg
    assert "3 tokens" in msg and "2 labels" in msg


def test_read_parallel_line_count_mismatch(tmp_path):
    s = write(tmp_path, "sents.txt", "a b\nc d\n")
    l = write(tmp_path, "tags.txt", "X X\n")
    with pytest.raises(CorpusError, match=r"sents.txt has 2 lines.*tags.txt has 1"):
        read_parallel(s, l)


def test_write_parallel_round_trip(tmp_path):
    corpus = Corpus(
        [
            Sentence(["the", "dogs", "bark"], {"pos": ["DET", "NOUN", "VERB"]}, {"sentiment": "neg"}),
            Sentence(["I", "smile"], {"pos": ["PRON", "VERB"]}, {"sentiment": "pos"}),
        ]
    )
    written = write_parallel(corpus, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "labels.pos.txt",
        "sentence_labels.tsv",
        "sentences.txt",
    ]
    assert written["pos"].read_text() == "DET NOUN VERB\nPRON VERB\n"
    back = read_parallel_dir(tmp_path / "out")
    assert back.words() == corpus.words()
    assert back.word_labels("pos").tolist() == corpus.word_labels("pos").tolist()
    assert back.sentence_labels("sentiment").tolist() == ["neg", "pos"]
    assert read_corpus(tmp_path / "out").words() == corpus.words()  # auto: directory -> parallel


def test_write_parallel_rejects_whitespace_tokens(tmp_path):
    corpus = Corpus([Sentence(["New York"], {"ner": ["B-LOC"]})])
    with pytest.raises(CorpusError, match="whitespace"):
        write_parallel(corpus, tmp_path / "out")


# -- CoNLL-U -----------------------------------------------------------------------------------

CONLLU = """# sent_id = 1
# text = The dogs don't bark.
1\tThe\tthe\tDET\tDT\tDefinite=Def|PronType=Art\t2\tdet\t_\t_
2\tdogs\tdog\tNOUN\tNNS\tNumber=Plur\t5\tnsubj\t_\t_
3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
3\tdo\tdo\tAUX\tVBP\tMood=Ind|Tense=Pres|VerbForm=Fin\t5\taux\t_\t_
4\tn't\tnot\tPART\tRB\tPolarity=Neg\t5\tadvmod\t_\t_
5\tbark\tbark\tVERB\tVB\tVerbForm=Inf\t0\troot\t_\t_
5.1\tdoes\tdo\tAUX\t_\t_\t_\t_\t5:aux\t_
6\t.\t.\tPUNCT\t.\t_\t5\tpunct\t_\t_

1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_read_conllu_skips_ranges_and_empty_nodes(tmp_path):
    p = write(tmp_path, "ud.conllu", CONLLU)
    c = read_conllu(p)
    assert c.words() == [["The", "dogs", "do", "n't", "bark", "."], ["Hi"]]
    assert c.word_labels("upos").tolist() == ["DET", "NOUN", "AUX", "PART", "VERB", "PUNCT", "INTJ"]


def test_read_conllu_feats_key_and_several_columns(tmp_path):
    p = write(tmp_path, "ud.conllu", CONLLU)
    c = read_conllu(p, label="feats:Number")
    assert c.label_columns == ["Number"]
    assert c[0].labels["Number"] == ["_", "Plur", "_", "_", "_", "_"]
    c = read_conllu(p, columns=["upos", "deprel", "head", "feats:Tense"], default="NONE")
    assert c[0].labels["deprel"] == ["det", "nsubj", "aux", "advmod", "root", "punct"]
    assert c[0].labels["head"] == ["2", "5", "5", "5", "0", "5"]
    assert c[0].labels["Tense"] == ["NONE", "NONE", "Pres", "NONE", "NONE", "NONE"]


def test_read_conllu_unknown_column_lists_available(tmp_path):
    p = write(tmp_path, "ud.conllu", CONLLU)
    with pytest.raises(CorpusError, match=r"unknown label column 'pos'.*upos.*deprel"):
        read_conllu(p, label="pos")


def test_read_conllu_wrong_column_count(tmp_path):
    bad = CONLLU.replace("2\tdogs\tdog\tNOUN\tNNS\tNumber=Plur\t5\tnsubj\t_\t_", "2\tdogs\tdog\tNOUN")
    p = write(tmp_path, "bad.conllu", bad)
    with raises_at("bad.conllu", 4):
        read_conllu(p)


def test_read_conllu_non_integer_id(tmp_path):
    bad = CONLLU.replace("6\t.\t.", "six\t.\t.")
    p = write(tmp_path, "bad.conllu", bad)
    with raises_at("bad.conllu", 10):
        read_conllu(p)


def test_read_conllu_malformed_feats(tmp_path):
    bad = CONLLU.replace("Number=Plur", "NumberPlur")
    p = write(tmp_path, "bad.conllu", bad)
    read_conllu(p)  # FEATS are only parsed when a feats:<Key> label is requested
    with raises_at("bad.conllu", 4):
        read_conllu(p, label="feats:Number")


def test_read_conllu_empty(tmp_path):
    p = write(tmp_path, "empty.conllu", "# only a comment\n\n")
    with pytest.raises(CorpusError, match="empty.conllu.*empty corpus"):
        read_conllu(p)


# -- CoNLL-2003 / BIO --------------------------------------------------------------------------

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
"""


def test_read_conll2003(tmp_path):
    p = write(tmp_path, "eng.train", CONLL2003)
    c = read_corpus(p, format="conll2003")
    assert c.words() == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert c.word_labels("ner").tolist() == ["I-ORG", "O", "I-MISC", "O", "O", "I-PER", "I-PER"]
    c = read_conll2003(p, columns=["pos", "chunk", "ner"], scheme="bio")
    assert c[0].labels["pos"] == ["NNP", "VBZ", "JJ", "NN", "."]
    assert c[0].labels["ner"] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert c[1].labels["ner"] == ["B-PER", "I-PER"]


def test_read_two_column_bio(tmp_path):
    p = write(tmp_path, "toy.bio", "John B-PER\nlives O\nin O\nNew B-LOC\nYork I-LOC\n\nHi O\n")
    c = read_corpus(p)
    assert c[0].labels["ner"] == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    assert read_conll2003(p, label="tag")[1].labels["tag"] == ["O"]


def test_read_conll2003_inconsistent_columns(tmp_path):
    p = write(tmp_path, "bad.conll", "EU NNP B-NP I-ORG\nrejects VBZ O\n")
    with raises_at("bad.conll", 2):
        read_conll2003(p)


def test_read_conll2003_unknown_column(tmp_path):
    p = write(tmp_path, "toy.bio", "John B-PER\n")
    with pytest.raises(CorpusError, match=r"toy.bio:1.*unknown label column 'pos'.*\['token', 'ner'\]"):
        read_conll2003(p, label="pos")


def test_read_conll2003_only_docstart_is_empty(tmp_path):
    p = write(tmp_path, "empty.conll", "-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(CorpusError, match="empty.conll.*empty corpus"):
        read_conll2003(p)


# -- TSV ---------------------------------------------------------------------------------------


def test_read_tsv_without_header(tmp_path):
    p = write(tmp_path, "s.tsv", "a great film\tpos\n\nawful\tneg\n")
    c = read_tsv(p, column="sentiment")
    assert c.words() == [["a", "great", "film"], ["awful"]]
    assert c.sentence_labels("sentiment").tolist() == ["pos", "neg"]
    assert c.label_columns == []


def test_read_tsv_with_header(tmp_path):
    p = write(tmp_path, "s.tsv", "text\tsentiment\ttense\nit was good\tpos\tPast\n")
    c = read_corpus(p)
    assert c[0].sent_labels == {"sentiment": "pos", "tense": "Past"}
    assert read_tsv(p, column="tense")[0].sent_labels == {"tense": "Past"}
    with pytest.raises(CorpusError, match=r"unknown label column 'topic'.*\['sentiment', 'tense'\]"):
        read_tsv(p, column="topic")


def test_read_tsv_wrong_field_count(tmp_path):
    p = write(tmp_path, "s.tsv", "good\tpos\nbad\tneg\textra\n")
    with raises_at("s.tsv", 2):
        read_tsv(p)


# -- dispatch ----------------------------------------------------------------------------------


def test_read_corpus_dispatch_and_errors(tmp_path):
    p = write(tmp_path, "a.txt", "hello world\n")
    assert read_corpus(p).words() == [["hello", "world"]]
    assert read_corpus(p, format="text").words() == [["hello", "world"]]
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read_corpus(p, format="xml")
    q = write(tmp_path, "a.weird", "x\n")
    with pytest.raises(CorpusError, match="a.weird.*format="):
        read_corpus(q)
    c = read_corpus("builtin:synthetic", n_sentences=5)
    assert len(c) == 5


def test_read_corpus_label_and_labels_keywords(tmp_path):
    # the form used by `finegrain extract --corpus F [--labels L] [--label C]`
    s = write(tmp_path, "sents.txt", "the dogs run\n")
    l = write(tmp_path, "tags.txt", "DET NOUN VERB\n")
    assert read_corpus(s, labels=l, label="pos").label_columns == ["pos"]
    assert read_corpus(s, labels=l, label=None).label_columns == ["label"]
    assert read_corpus(s, labels=None, label=None).label_columns == []
    with pytest.raises(CorpusError, match="no label file"):
        read_corpus(s, label="pos")
    ud = write(tmp_path, "ud.conllu", CONLLU)
    assert read_corpus(ud, labels=None, label="feats:Number").label_columns == ["Number"]
    tsv = write(tmp_path, "s.tsv", "good film\tpos\n")
    assert read_corpus(tsv, label="sentiment")[0].sent_labels == {"sentiment": "pos"}
