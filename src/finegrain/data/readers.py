"""Corpus readers and writers.

Every reader returns a validated :class:`~finegrain.data.corpus.Corpus`; malformed input raises
:class:`~finegrain.data.corpus.CorpusError` with ``file:line`` in the message, whatever the bytes: a
byte-order mark (UTF-8, UTF-16, UTF-32) is honoured and stripped in every format, text that is not valid
UTF-8 is reported at its line and column (not at an offset inside a decoding buffer), and NUL or other
control characters (a binary file) are refused.

Formats
-------
- plain text: one whitespace-tokenised sentence per line (:func:`read_text`);
- NeuroX parallel files: a sentences file and one labels file per column, line-aligned and
  token-aligned (Dalvi et al. 2019, NeuroX) (:func:`read_parallel`, :func:`write_parallel`);
- CoNLL-U (Universal Dependencies) (:func:`read_conllu`);
- CoNLL-2003 / generic BIO column files (:func:`read_conll2003`);
- sentence-level TSV ``text<TAB>label`` (:func:`read_tsv`).
"""

from __future__ import annotations

import codecs
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from finegrain.data.corpus import CONTROL_CHARS, Corpus, CorpusError, Sentence
from finegrain.errors import ParameterError
from finegrain.results import write_text_atomic

PathLike = str | os.PathLike

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
SENTENCES_FILE = "sentences.txt"
SENTENCE_LABELS_FILE = "sentence_labels.tsv"
LABEL_FILE_PREFIX = "labels."


# -- helpers -----------------------------------------------------------------------------------


# surrogates are how undecodable bytes arrive (errors="surrogateescape"); control characters mean binary data
_BAD = re.compile(f"[{CONTROL_CHARS}\ud800-\udfff]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _encoding(head: bytes) -> str:
    """The encoding a file's first bytes announce with a byte-order mark (stripped when decoding); UTF-8
    without one."""
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without the newline); any failure is a CorpusError naming the file
    (and the line, for text that is not UTF-8 or holds control characters)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the generator owns it
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a corpus file") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it: {e.strerror or e}") from None
    with f:
        try:
            enc = _encoding(f.read(4))
            f.seek(0)
        except OSError as e:
            raise CorpusError(f"{path}: cannot read it: {e.strerror or e}") from None
        # line by line with universal newlines; a UTF-8 decoding error is kept in the line (as surrogates)
        # so that it is reported with its line number, not an offset inside an 8 KB decoding chunk
        text = io.TextIOWrapper(f, encoding=enc, errors="surrogateescape" if enc.startswith("utf-8") else "strict",
                                newline=None)
        i = 0
        try:
            for i, line in enumerate(text, 1):
                line = line.rstrip("\n")
                m = _BAD.search(line)
                if m:
                    raise CorpusError(_bad_char(path, i, line, m.start(), enc))
                yield i, line
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}:{i + 1}: not valid {enc.upper()} text ({e.reason})") from None
        except OSError as e:
            raise CorpusError(f"{path}:{i + 1}: cannot read it: {e.strerror or e}") from None


def _bad_char(path: Path, lineno: int, line: str, col: int, enc: str) -> str:
    c = ord(line[col])
    if 0xDC80 <= c <= 0xDCFF:
        return (f"{path}:{lineno}: not UTF-8 text: byte 0x{c - 0xDC00:02X} at column {col + 1} (another encoding, "
                f"e.g. Latin-1? convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8)")
    if 0xD800 <= c <= 0xDFFF:
        return f"{path}:{lineno}: not valid {enc.upper()} text: an unpaired surrogate at column {col + 1}"
    return (f"{path}:{lineno}: control character U+{c:04X} at column {col + 1}; a corpus is text, and this looks "
            f"like binary data")


def _finish(sentences: list[Sentence], path: Path, name: str | None, meta: dict | None = None) -> Corpus:
    if not sentences:
        raise CorpusError(f"{path}: empty corpus (no sentences found)")
    corpus = Corpus(sentences, name=name or Path(path).stem, meta={"source": str(path), **(meta or {})})
    try:
        return corpus.validate()
    except CorpusError as e:  # the corpus's own checks name the corpus; say which file it is
        raise CorpusError(e if str(path) in str(e) else f"{path}: {e}") from None


def _check_column(column: str, available: Sequence[str], path: PathLike) -> None:
    if column not in available:
        raise CorpusError(f"{path}: unknown label column {column!r}; available columns: {list(available)}")


# -- plain text --------------------------------------------------------------------------------


def read_text(path: PathLike, name: str | None = None) -> Corpus:
    """One sentence per line, whitespace tokens; blank lines are skipped. No label columns."""
    path = Path(path)
    sents = [Sentence(line.split()) for _, line in _lines(path) if line.strip()]
    return _finish(sents, path, name)


# -- NeuroX parallel files ---------------------------------------------------------------------


def read_parallel(
    sentences_path: PathLike,
    labels_path: PathLike | Mapping[str, PathLike],
    column: str = "label",
    name: str | None = None,
) -> Corpus:
    """NeuroX-style parallel files: line *i* of the labels file holds one label per token of line
    *i* of the sentences file.

    ``labels_path`` is one file (stored as column ``column``) or a mapping ``{column: path}`` to
    load several label columns at once. Lines blank in both files are skipped.
    """
    sentences_path = Path(sentences_path)
    label_paths = (
        {c: Path(p) for c, p in labels_path.items()}
        if isinstance(labels_path, Mapping)
        else {column: Path(labels_path)}
    )
    if not label_paths:
        raise CorpusError(f"{sentences_path}: no labels files given")
    sent_lines = [line for _, line in _lines(sentences_path)]
    label_lines = {c: [line for _, line in _lines(p)] for c, p in label_paths.items()}
    for col, lines in label_lines.items():
        if len(lines) != len(sent_lines):
            raise CorpusError(
                f"{sentences_path} has {len(sent_lines)} lines but {label_paths[col]} has {len(lines)} "
                f"(label column {col!r})"
            )
    sents = []
    for i, line in enumerate(sent_lines):
        words = line.split()
        labels = {}
        for col, lines in label_lines.items():
            labs = lines[i].split()
            if len(labs) != len(words):
                raise CorpusError(
                    f"{sentences_path}:{i + 1} has {len(words)} tokens but {label_paths[col]}:{i + 1} has "
                    f"{len(labs)} labels (line {i + 1})"
                )
            labels[col] = labs
        if words:
            sents.append(Sentence(words, labels))
    return _finish(sents, sentences_path, name or sentences_path.stem)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    # readers never see a half-written file
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def _check_token(tok: str, what: str, sid: int) -> str:
    if not tok or any(c.isspace() for c in tok):
        raise CorpusError(f"sentence {sid}: {what} {tok!r} is empty or contains whitespace; cannot write it")
    return tok


def write_parallel(corpus: Corpus, out_dir: PathLike) -> dict[str, Path]:
    """Write ``corpus`` as NeuroX parallel files into ``out_dir``.

    Files: ``sentences.txt``; ``labels.<column>.txt`` per word label column; and, when the corpus
    has sentence labels, ``sentence_labels.tsv`` (header ``text<TAB>col...``). Returns
    ``{"sentences": path, <column>: path, ..., "sentence_labels": path}``. Read back with
    :func:`read_parallel_dir`.
    """
    corpus.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for col in corpus.label_columns + corpus.sentence_label_columns:
        if "/" in col or os.sep in col or col != col.strip() or not col:
            raise CorpusError(f"label column name {col!r} cannot be used in a file name")
    sent_lines = [" ".join(_check_token(w, "word", s.id) for w in s.words) for s in corpus]
    written["sentences"] = out / SENTENCES_FILE
    _write_lines(written["sentences"], sent_lines)
    for col in corpus.label_columns:
        path = out / f"{LABEL_FILE_PREFIX}{col}.txt"
        _write_lines(path, [" ".join(_check_token(x, f"{col} label", s.id) for x in s.labels[col]) for s in corpus])
        written[col] = path
    scols = corpus.sentence_label_columns
    if scols:
        rows = ["\t".join(["text", *scols])]
        for s in corpus:
            vals = [s.sent_labels[c] for c in scols]
            if any("\t" in v or "\n" in v for v in vals):
                raise CorpusError(f"sentence {s.id}: sentence label contains a tab or newline")
            rows.append("\t".join([s.text, *vals]))
        written["sentence_labels"] = out / SENTENCE_LABELS_FILE
        _write_lines(written["sentence_labels"], rows)
    return written


def read_parallel_dir(directory: PathLike, name: str | None = None) -> Corpus:
    """Read a directory written by :func:`write_parallel` (all label columns and sentence labels)."""
    d = Path(directory)
    sentences = d / SENTENCES_FILE
    if not sentences.is_file():
        raise CorpusError(f"{d}: no {SENTENCES_FILE} in directory")
    label_files = {
        p.name[len(LABEL_FILE_PREFIX) : -len(".txt")]: p for p in sorted(d.glob(f"{LABEL_FILE_PREFIX}*.txt"))
    }
    if label_files:
        corpus = read_parallel(sentences, label_files, name=name or d.name)
    else:
        corpus = read_text(sentences, name=name or d.name)
    tsv = d / SENTENCE_LABELS_FILE
    if tsv.is_file():
        slab = read_tsv(tsv, header=True)
        if len(slab) != len(corpus):
            raise CorpusError(f"{tsv} has {len(slab)} sentences but {sentences} has {len(corpus)}")
        for k, (s, t) in enumerate(zip(corpus, slab)):
            if s.words != t.words:
                raise CorpusError(f"{tsv}:{k + 2}: text differs from line {k + 1} of {sentences}")
            s.sent_labels = dict(t.sent_labels)
    corpus.meta["source"] = str(d)
    return corpus.validate()


# -- CoNLL-U -----------------------------------------------------------------------------------


def _parse_feats(feats: str, path: Path, lineno: int) -> dict[str, str]:
    if feats == "_":
        return {}
    out = {}
    for item in feats.split("|"):
        key, sep, val = item.partition("=")
        if not sep or not key or not val:
            raise CorpusError(f"{path}:{lineno}: malformed FEATS item {item!r} in {feats!r}")
        out[key] = val
    return out


def _conllu_spec(spec: str, path: PathLike) -> tuple[str, str, str | None]:
    """(corpus column name, CoNLL-U column, FEATS key or None) for a label spec like ``upos`` or
    ``feats:Number``."""
    if spec.lower().startswith("feats:"):
        key = spec.split(":", 1)[1]
        if not key:
            raise CorpusError(f"{path}: empty FEATS key in label spec {spec!r}")
        return key, "feats", key
    _check_column(spec.lower(), (*CONLLU_COLUMNS, "feats:<Key>"), path)
    return spec.lower(), spec.lower(), None


def read_conllu(
    path: PathLike,
    label: str = "upos",
    columns: Sequence[str] | None = None,
    default: str = "_",
    name: str | None = None,
) -> Corpus:
    """Read a CoNLL-U file (Universal Dependencies; https://universaldependencies.org/format.html).

    ``label`` (or several via ``columns``) is one of ``id form lemma upos xpos feats head deprel deps
    misc`` or ``feats:<Key>`` for one morphological feature, stored as column ``<Key>`` (e.g.
    ``feats:Number`` -> column ``Number``; words without the key get ``default``). Multiword-token
    ranges (``1-2``) and empty nodes (``1.1``) are skipped so words match the syntactic tokens.
    """
    path = Path(path)
    specs = [_conllu_spec(s, path) for s in (columns if columns is not None else [label])]
    if not specs:
        raise CorpusError(f"{path}: no label columns requested")
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        raise CorpusError(f"{path}: duplicate label columns {names}")
    sents: list[Sentence] = []
    words: list[str] = []
    labels: dict[str, list[str]] = {n: [] for n in names}

    def flush() -> None:
        nonlocal words, labels
        if words:
            sents.append(Sentence(words, labels))
        words, labels = [], {n: [] for n in names}

    for lineno, line in _lines(path):
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise CorpusError(f"{path}:{lineno}: expected 10 tab-separated columns, found {len(fields)}")
        tid = fields[0]
        if "-" in tid or "." in tid:
            lo, sep, hi = tid.replace(".", "-").partition("-")
            if not (lo.isdigit() and hi.isdigit()):
                raise CorpusError(f"{path}:{lineno}: malformed token id {tid!r}")
            continue
        if not tid.isdigit():
            raise CorpusError(f"{path}:{lineno}: token id {tid!r} is not an integer")
        if int(tid) != len(words) + 1:
            raise CorpusError(f"{path}:{lineno}: token id {tid} out of sequence (expected {len(words) + 1})")
        row = dict(zip(CONLLU_COLUMNS, fields))
        if not row["form"]:
            raise CorpusError(f"{path}:{lineno}: empty FORM")
        words.append(row["form"])
        feats = None
        for n, col, key in specs:
            if key is None:
                labels[n].append(row[col])
            else:
                if feats is None:
                    feats = _parse_feats(row["feats"], path, lineno)
                labels[n].append(feats.get(key, default))
    flush()
    return _finish(sents, path, name)


# -- CoNLL-2003 / BIO --------------------------------------------------------------------------


def conll_column_names(n_columns: int) -> list[str]:
    """Column names of a CoNLL-2003-style file with ``n_columns`` columns: the first is the token,
    the last the NER/BIO tag (``token pos chunk ner`` for the original 4-column layout)."""
    if n_columns < 2:
        raise ParameterError("a CoNLL/BIO file needs at least a token and a tag column")
    named = {2: ["token", "ner"], 3: ["token", "pos", "ner"], 4: ["token", "pos", "chunk", "ner"]}
    return named.get(n_columns, ["token", *[f"col{i}" for i in range(1, n_columns - 1)], "ner"])


def iob1_to_bio(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 (``I-X`` may start a chunk, as in the original CoNLL-2003 release) to BIO/IOB2."""
    out = []
    prev = "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out


def read_conll2003(
    path: PathLike,
    label: str = "ner",
    columns: Sequence[str] | None = None,
    scheme: str = "keep",
    name: str | None = None,
) -> Corpus:
    """CoNLL-2003 NER (``token POS chunk NER``, Tjong Kim Sang & De Meulder 2003) or any
    whitespace-separated token/tag column file (e.g. 2-column BIO). Sentences are separated by blank
    lines; ``-DOCSTART-`` lines are skipped. Column names come from :func:`conll_column_names`;
    ``tag`` is an alias for the last column. ``scheme="bio"`` converts IOB1 tags of the ``ner``
    column to BIO.
    """
    if scheme not in ("keep", "bio"):
        raise ParameterError(f"scheme must be 'keep' or 'bio', got {scheme!r}")
    path = Path(path)
    wanted = list(columns) if columns is not None else [label]
    sents: list[Sentence] = []
    rows: list[list[str]] = []
    names: list[str] | None = None
    first_line = 0

    def flush() -> None:
        nonlocal rows
        if rows:
            assert names is not None
            words = [r[0] for r in rows]
            labels = {}
            for w in wanted:
                j = len(names) - 1 if w == "tag" else names.index(w)
                labs = [r[j] for r in rows]
                if scheme == "bio" and j == len(names) - 1:
                    labs = iob1_to_bio(labs)
                labels[w] = labs
            sents.append(Sentence(words, labels))
        rows = []

    for lineno, line in _lines(path):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if names is None:
            if len(fields) < 2:
                raise CorpusError(f"{path}:{lineno}: expected a token and at least one tag column, found 1")
            names, first_line = conll_column_names(len(fields)), lineno
            for w in wanted:
                if w != "tag":
                    _check_column(w, names, f"{path}:{lineno}")
        elif len(fields) != len(names):
            raise CorpusError(
                f"{path}:{lineno}: expected {len(names)} columns (as on line {first_line}), found {len(fields)}"
            )
        rows.append(fields)
    flush()
    return _finish(sents, path, name)


# -- sentence-level TSV ------------------------------------------------------------------------


def read_tsv(path: PathLike, column: str | None = None, header: bool | None = None, name: str | None = None) -> Corpus:
    """Sentence-level ``text<TAB>label`` file; labels go to ``Sentence.sent_labels``.

    ``header=None`` detects a header row whose first field is ``text`` or ``sentence``. With a header
    every further column is loaded under its header name (or only ``column`` if given); without one
    each line must have exactly two fields and the label column is named ``column`` (default
    ``"label"``).
    """
    path = Path(path)
    lines = list(_lines(path))
    cols: list[str]
    start = 0
    nonblank = [(i, line) for i, line in lines if line.strip()]
    if not nonblank:
        raise CorpusError(f"{path}: empty corpus (no sentences found)")
    first = nonblank[0][1].split("\t")
    if header is None:
        header = first[0].strip().lower() in ("text", "sentence")
    if header:
        cols = [c.strip() for c in first[1:]]
        if not cols or any(not c for c in cols):
            raise CorpusError(f"{path}:{nonblank[0][0]}: header needs named label columns, got {first!r}")
        start = 1
    else:
        cols = [column or "label"]
    keep = cols if column is None or not header else [column]
    for c in keep:
        _check_column(c, cols, path)
    sents = []
    for lineno, line in nonblank[start:]:
        fields = line.split("\t")
        if len(fields) != len(cols) + 1:
            raise CorpusError(
                f"{path}:{lineno}: expected {len(cols) + 1} tab-separated fields "
                f"(text, {', '.join(cols)}), found {len(fields)}"
            )
        words = fields[0].split()
        if not words:
            raise CorpusError(f"{path}:{lineno}: empty text")
        values = dict(zip(cols, (f.strip() for f in fields[1:])))
        sents.append(Sentence(words, sent_labels={c: values[c] for c in keep}))
    return _finish(sents, path, name)


# -- dispatch ----------------------------------------------------------------------------------

FORMATS = {
    "text": "text",
    "txt": "text",
    "parallel": "parallel",
    "neurox": "parallel",
    "conllu": "conllu",
    "conll-u": "conllu",
    "conll2003": "conll2003",
    "conll": "conll2003",
    "bio": "conll2003",
    "iob": "conll2003",
    "tsv": "tsv",
}
_EXTENSIONS = {
    ".txt": "text",
    ".conllu": "conllu",
    ".conll": "conll2003",
    ".conll2003": "conll2003",
    ".bio": "conll2003",
    ".iob": "conll2003",
    ".tsv": "tsv",
}


def detect_format(path: PathLike) -> str:
    """Format name for ``path``: a directory is ``parallel`` (see :func:`write_parallel`),
    otherwise by extension."""
    p = Path(path)
    if p.is_dir():
        return "parallel"
    fmt = _EXTENSIONS.get(p.suffix.lower())
    if fmt is None:
        raise CorpusError(
            f"{p}: cannot infer the corpus format from the extension {p.suffix!r}; pass format= one of "
            f"{sorted(set(FORMATS.values()))}"
        )
    return fmt
