"""Every corpus reader on any bytes (hypothesis): a Corpus, or a CorpusError naming the file — never
another exception (issue 16). Plus the reported failures: BOMs, Latin-1 line numbers, binary files."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finegrain.data import read_corpus
from finegrain.data import readers as R
from finegrain.data.corpus import Corpus
from finegrain.errors import CorpusError

# pieces of every format, so that random files reach the readers' deeper branches, plus raw bytes
PIECES = [b"\t", b"\n", b"\r\n", b"\r", b" ", b"1", b"2", b"3", b"1-2", b"1.1", b"-", b".", b"_", b"#", b"a", b"Cat",
          b"=", b"|", b"Number=Sing", b"-DOCSTART-", b"B-X", b"I-X", b"O", b"text", b"label", b"\xef\xbb\xbf",
          b"\xff\xfe", b"\xfe\xff", b"\xff", b"\xe9", b"\xc3\xa9", b"\x00", b"\x0b", b"\xe2\x80\x8b", b"\xed\xa0\x80"]
BYTES = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join))
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(fn, *paths: Path) -> None:
    try:
        corpus = fn()
    except CorpusError as e:
        assert any(str(p) in str(e) for p in paths), f"error names no file: {e}"
        return
    assert isinstance(corpus, Corpus) and len(corpus) > 0
    for s in corpus:  # what a reader accepts is text: words, no control characters
        assert s.words and all(s.words)
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for w in s.words for c in w)


@pytest.mark.parametrize("suffix, reader", [
    (".txt", R.read_text), (".conllu", R.read_conllu), (".conll", R.read_conll2003), (".tsv", R.read_tsv),
    (".tsv", lambda p: R.read_tsv(p, header=True)), (".conllu", lambda p: R.read_conllu(p, label="feats:Number")),
    (".conll", lambda p: R.read_conll2003(p, label="tag", scheme="bio")), (".txt", read_corpus),
    (".conllu", read_corpus), (".tsv", read_corpus), (".bio", read_corpus),
])
@FUZZ
@given(data=BYTES)
def test_every_reader_on_any_bytes(suffix, reader, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"corpus{suffix}"
        path.write_bytes(data)
        _check(lambda: reader(path), path)


@FUZZ
@given(sentences=BYTES, labels=BYTES, sentence_labels=BYTES)
def test_parallel_files_and_directories_on_any_bytes(sentences, labels, sentence_labels):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        s, lab, tsv = d / "sentences.txt", d / "labels.pos.txt", d / "sentence_labels.tsv"
        s.write_bytes(sentences)
        lab.write_bytes(labels)
        _check(lambda: R.read_parallel(s, lab, column="pos"), s, lab)
        tsv.write_bytes(sentence_labels)
        _check(lambda: R.read_parallel_dir(d), d, s, lab, tsv)
        _check(lambda: read_corpus(d), d, s, lab, tsv)


# -- the failures of the issue ---------------------------------------------------------------------------
CONLLU = "# text = The cat\n1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n2\tcat\tcat\tNOUN\t_\tNumber=Sing\t0\troot\t_\t_\n\n"


@pytest.mark.parametrize("name, text", [("c.txt", "The cat\n"), ("c.conllu", CONLLU), ("c.conll", "The O\ncat O\n"),
                                        ("c.tsv", "The cat\tpos\n")])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_a_byte_order_mark_is_stripped_in_every_format(tmp_path, name, text, encoding):
    """A UTF-8 BOM was glued to the first word ('\\ufeffThe') and made a valid CoNLL-U file invalid."""
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    assert read_corpus(path).sentences[0].words == ["The", "cat"]


def test_parallel_files_with_boms(tmp_path):
    (tmp_path / "s.txt").write_bytes("\ufeffThe cat\n".encode())
    (tmp_path / "l.txt").write_bytes("\ufeffDET NOUN\n".encode())
    c = R.read_parallel(tmp_path / "s.txt", tmp_path / "l.txt", column="pos")
    assert c.sentences[0].words == ["The", "cat"] and c.sentences[0].labels["pos"] == ["DET", "NOUN"]


def test_encoding_errors_name_the_line_not_a_decoder_offset(tmp_path):
    """A Latin-1 file's error gave an offset inside an 8 KB decode chunk (7824) instead of line 4001."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(("plain ascii line\n" * 4000 + "un caf\u00e9 noir\n").encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1.txt:4001: not UTF-8 text: byte 0xE9 at column 7"):
        R.read_text(path)


def test_binary_files_are_rejected(tmp_path):
    """A file of NUL and control bytes was accepted as 16 sentences, then crashed extraction."""
    path = tmp_path / "binary.txt"
    path.write_bytes(bytes(range(32)) * 16)
    with pytest.raises(CorpusError, match=r"binary.txt:1: control character U\+0000"):
        read_corpus(path)
    with pytest.raises(CorpusError, match="control character"):
        Corpus.from_words([["a\x00b"]]).validate()
    with pytest.raises(CorpusError, match="not a string"):
        Corpus.from_words([["a", 3]]).validate()
