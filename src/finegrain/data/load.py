"""Reading any corpus: :func:`read_corpus` dispatches on the format (or a ``builtin:`` name) to the readers of
:mod:`finegrain.data.readers` and the built-in corpora of :mod:`finegrain.data.generate`; :func:`as_corpus`
turns what an analysis is given (a corpus, a path, texts, word lists) into a validated corpus."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from finegrain.data import readers
from finegrain.data.corpus import Corpus, CorpusError
from finegrain.data.generate import builtin_corpus
from finegrain.data.readers import PathLike


def read_corpus(
    path: PathLike,
    format: str = "auto",
    *,
    label: str | None = None,
    labels: PathLike | Mapping[str, PathLike] | None = None,
    **kwargs,
) -> Corpus:
    """Read a corpus in any supported format; ``format="auto"`` infers it from the path (a file with
    ``labels`` given is read as NeuroX parallel files).

    ``label`` selects the label column in every labelled format (CoNLL-U column or ``feats:<Key>``,
    CoNLL-2003 column, TSV column, or the column name for a parallel labels file); ``labels`` is
    the labels file (or ``{column: file}``) of the parallel format. ``None`` keeps each reader's
    default. ``path`` may also be ``builtin:<name>`` (:func:`finegrain.data.generate.builtin_corpus`).
    Further keyword arguments go to the reader.
    """
    if isinstance(path, str) and path.startswith("builtin:"):
        return builtin_corpus(path.split(":", 1)[1], **kwargs)
    if labels is not None:
        kwargs["labels_path"] = labels
    if format == "auto":
        fmt = "parallel" if "labels_path" in kwargs else readers.detect_format(path)
    else:
        fmt = readers.FORMATS.get(format.lower())
    if fmt is None:
        raise CorpusError(f"unknown corpus format {format!r}; choose from {sorted(readers.FORMATS)} or 'auto'")
    if label is not None:
        if fmt == "text" or (fmt == "parallel" and "labels_path" not in kwargs):
            raise CorpusError(f"{path}: label={label!r} given, but this {fmt} corpus has no label file")
        kwargs[{"parallel": "column", "tsv": "column"}.get(fmt, "label")] = label
    if fmt == "parallel":
        if "labels_path" in kwargs:
            return readers.read_parallel(path, **kwargs)
        if Path(path).is_dir():
            return readers.read_parallel_dir(path, **kwargs)
        raise CorpusError(f"{path}: the parallel format needs labels= (a labels file) or a directory")
    reader = {"text": readers.read_text, "conllu": readers.read_conllu, "conll2003": readers.read_conll2003,
              "tsv": readers.read_tsv}[fmt]
    return reader(path, **kwargs)


def as_corpus(corpus) -> Corpus:
    """A validated :class:`Corpus` from a corpus, a path (or ``builtin:<name>``, :func:`read_corpus`), a list
    of whitespace-tokenised texts or a list of word lists (:meth:`Corpus.validate` says what is wrong)."""
    if isinstance(corpus, Corpus):
        return corpus.validate()
    if isinstance(corpus, str | os.PathLike):
        return read_corpus(corpus).validate()
    items = list(corpus)
    if items and isinstance(items[0], str):
        return Corpus.from_texts(items).validate()
    return Corpus.from_words(items).validate()


__all__ = ["as_corpus", "read_corpus"]
