"""Corpus types: sentences of words with per-word and per-sentence label columns."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.errors import CorpusError, ParameterError

# C0 and C1 control characters but tab, newline and carriage return: never part of a word of text
CONTROL_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")


@dataclass
class Sentence:
    """One sentence: ``words`` plus label columns aligned with them (``labels``) and
    sentence-level labels (``sent_labels``)."""

    words: list[str]
    labels: dict[str, list[str]] = field(default_factory=dict)
    sent_labels: dict[str, str] = field(default_factory=dict)
    id: int = 0

    def __post_init__(self) -> None:
        for col, labs in self.labels.items():
            if len(labs) != len(self.words):
                raise CorpusError(
                    f"sentence {self.id}: label column {col!r} has {len(labs)} labels for "
                    f"{len(self.words)} words"
                )

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Corpus:
    """An ordered list of sentences. Label columns are the same for every sentence."""

    sentences: list[Sentence]
    name: str = "corpus"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.sentences):
            s.id = i

    # -- container protocol --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[Sentence]:
        return iter(self.sentences)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Corpus([_copy(s) for s in self.sentences[i]], name=self.name, meta=dict(self.meta))
        return self.sentences[i]

    # -- views ---------------------------------------------------------------------------
    @property
    def label_columns(self) -> list[str]:
        return list(self.sentences[0].labels) if self.sentences else []

    @property
    def sentence_label_columns(self) -> list[str]:
        return list(self.sentences[0].sent_labels) if self.sentences else []

    @property
    def n_words(self) -> int:
        return sum(len(s.words) for s in self.sentences)

    def texts(self) -> list[str]:
        return [s.text for s in self.sentences]

    def words(self) -> list[list[str]]:
        return [s.words for s in self.sentences]

    def word_labels(self, column: str) -> np.ndarray:
        """All per-word labels of ``column``, flattened in corpus order (one per word)."""
        if column not in self.label_columns:
            raise CorpusError(f"unknown label column {column!r}; corpus has {self.label_columns}")
        return np.array([lab for s in self.sentences for lab in s.labels[column]], dtype=object)

    def sentence_labels(self, column: str) -> np.ndarray:
        if column not in self.sentence_label_columns:
            raise CorpusError(
                f"unknown sentence label column {column!r}; corpus has {self.sentence_label_columns}"
            )
        return np.array([s.sent_labels[column] for s in self.sentences], dtype=object)

    def label_counts(self, column: str, level: str | None = None) -> Counter:
        """How often each label of a label column occurs. ``level`` is ``"word"`` or ``"sentence"``;
        ``None`` means the word column if there is one of that name, else the sentence column."""
        if level not in (None, "word", "sentence"):
            raise ParameterError(f"level must be 'word', 'sentence' or None, got {level!r}")
        if level != "sentence" and column in self.label_columns:
            return Counter(lab for s in self.sentences for lab in s.labels[column])
        if level != "word" and column in self.sentence_label_columns:
            return Counter(s.sent_labels[column] for s in self.sentences)
        raise CorpusError(
            f"unknown label column {column!r}; corpus has word columns {self.label_columns} and "
            f"sentence columns {self.sentence_label_columns}"
        )

    def validate(self) -> Corpus:
        """Raise CorpusError on an empty corpus, empty sentences, words that are not text (not strings,
        empty, or holding control characters such as NUL) or inconsistent label columns."""
        if not self.sentences:
            raise CorpusError(f"{self.name}: empty corpus (no sentences)")
        cols, scols = set(self.label_columns), set(self.sentence_label_columns)
        for s in self.sentences:
            if not s.words:
                raise CorpusError(f"{self.name}: sentence {s.id} has no words")
            try:
                text = "\n".join(s.words)
            except TypeError:
                bad = next(w for w in s.words if not isinstance(w, str))
                raise CorpusError(f"{self.name}: sentence {s.id}: word {bad!r} is a {type(bad).__name__}, "
                                  f"not a string") from None
            if _CONTROL.search(text) or "" in s.words:
                bad = next(w for w in s.words if not w or _CONTROL.search(w))
                raise CorpusError(f"{self.name}: sentence {s.id}: word {bad!r} is empty or holds a control "
                                  f"character")
            if set(s.labels) != cols:
                raise CorpusError(
                    f"{self.name}: sentence {s.id} has label columns {sorted(s.labels)}, expected {sorted(cols)}"
                )
            if set(s.sent_labels) != scols:
                raise CorpusError(
                    f"{self.name}: sentence {s.id} has sentence labels {sorted(s.sent_labels)}, "
                    f"expected {sorted(scols)}"
                )
        return self

    @classmethod
    def from_texts(cls, texts: Iterable[str], name: str = "corpus") -> Corpus:
        """Whitespace-tokenised sentences without labels."""
        return cls([Sentence(t.split()) for t in texts if t.strip()], name=name)

    @classmethod
    def from_words(
        cls,
        words: Sequence[Sequence[str]],
        labels: dict[str, Sequence[Sequence[str]]] | None = None,
        name: str = "corpus",
    ) -> Corpus:
        labels = labels or {}
        sents = []
        for i, ws in enumerate(words):
            sents.append(Sentence(list(ws), {c: list(v[i]) for c, v in labels.items()}, id=i))
        return cls(sents, name=name)


def _copy(s: Sentence) -> Sentence:
    return Sentence(list(s.words), {k: list(v) for k, v in s.labels.items()}, dict(s.sent_labels), s.id)
