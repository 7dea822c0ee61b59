"""Primitive row concepts for compositional explanations (Mu & Andreas 2020, "Compositional
Explanations of Neurons", section 3, adapted from image segments to words).

A primitive concept is a boolean mask over the rows of a view: ``word=the``, ``pos=VERB`` (any value
of any label column: ``tag=VBD``, ``dep=nsubj``, ``ner=B-PER``, ``number=Plur``, ...), a lexicon
category (``lex=verbs``, ``lex=nouns:class=animal``), the word's shape (``shape=Title``), its
position (``position=first``) and its affixes (``suffix=-ing``, ``prefix=un-``), the affixes found in
the words themselves. :func:`build_concepts` builds them from the view's index columns only (words,
sentences, labels): no activation is read.

:class:`ConceptMasks` keeps them as one sparse ``[rows, concepts]`` incidence matrix, so that the
counts ``|F ∧ c|`` of a formula's mask ``F`` against *every* concept are one sparse product, whatever
the number of word concepts (every word of a large vocabulary is a concept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from finegrain.data.generate import load_lexicon
from finegrain.errors import ConceptError, ParameterError

from .top import RowInfo, as_describe_view

EXCLUDED_LABEL_VALUES: tuple[str, ...] = ("", "_")
SUFFIX_LENGTHS: tuple[int, ...] = (1, 2, 3, 4)
PREFIX_LENGTHS: tuple[int, ...] = (2, 3, 4)
SHAPES: tuple[str, ...] = ("lower", "Title", "UPPER", "mixed", "digit", "punct")
KINDS: tuple[str, ...] = ("word", "label", "lexicon", "shape", "position", "affix")


class ConceptMasks:
    """Primitive concepts of the rows of a view: ``names[i]`` with its boolean row mask, column ``i`` of
    the sparse incidence ``matrix`` ``[n_rows, n_concepts]``; ``kinds[i]`` says where it came from
    (``word``, ``label:pos``, ``lexicon``, ``shape``, ``position``, ``affix``, ``mask``)."""

    def __init__(self, names: Sequence[str], matrix, kinds: Sequence[str] | None = None):
        A = sp.csc_matrix(matrix, dtype=np.int32)
        A.data[:] = 1
        A.sum_duplicates()
        A = A.astype(np.int8)  # a 0/1 incidence: one byte per entry besides its row index
        A.data[:] = 1
        names = [str(n) for n in names]
        if len(names) != A.shape[1]:
            raise ConceptError(f"{len(names)} concept names for {A.shape[1]} masks")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConceptError(f"concept names must be unique; repeated: {dup[:5]}")
        self.names = names
        self.kinds = list(kinds) if kinds is not None else ["mask"] * len(names)
        if len(self.kinds) != len(names):
            raise ConceptError(f"{len(self.kinds)} kinds for {len(names)} concepts")
        self.matrix = A
        self._rows_by_concept = A.T.tocsr()  # [concepts, rows]: counts against a row mask in one product
        self.n_rows = int(A.shape[0])
        self.counts = np.diff(A.indptr).astype(np.int64)
        self._pos = {n: i for i, n in enumerate(names)}

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        kinds = {}
        for k in self.kinds:
            kinds[k.split(":")[0]] = kinds.get(k.split(":")[0], 0) + 1
        return f"ConceptMasks({len(self)} concepts over {self.n_rows} rows: {kinds})"

    def index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, str):
            if name_or_index not in self._pos:
                raise ConceptError(f"no concept {name_or_index!r}")
            return self._pos[name_or_index]
        i = int(name_or_index)
        if not 0 <= i < len(self):
            raise ConceptError(f"concept index {i} out of range 0..{len(self) - 1}")
        return i

    def rows(self, name_or_index: str | int) -> np.ndarray:
        """The rows where the concept holds (sorted)."""
        i = self.index(name_or_index)
        return self.matrix.indices[self.matrix.indptr[i] : self.matrix.indptr[i + 1]]

    def mask(self, name_or_index: str | int) -> np.ndarray:
        """The concept's boolean row mask."""
        m = np.zeros(self.n_rows, dtype=bool)
        m[self.rows(name_or_index)] = True
        return m

    def counts_in(self, mask: np.ndarray) -> np.ndarray:
        """``|mask ∧ c|`` for every concept ``c`` (one sparse matrix-vector product)."""
        return np.asarray(self._rows_by_concept @ np.asarray(mask, dtype=np.int32), dtype=np.int64)

    def of_kind(self, kind: str) -> ConceptMasks:
        """The concepts of one kind (``"label"`` matches every ``label:<column>``)."""
        keep = [i for i, k in enumerate(self.kinds) if k == kind or k.split(":")[0] == kind]
        return self.select(keep)

    def select(self, indices: Iterable[int]) -> ConceptMasks:
        idx = [int(i) for i in indices]
        return ConceptMasks([self.names[i] for i in idx], self.matrix[:, idx], [self.kinds[i] for i in idx])

    def subset_rows(self, rows: np.ndarray) -> ConceptMasks:
        """The same concepts on some rows (positions or a boolean mask)."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return ConceptMasks(self.names, self.matrix[rows], self.kinds)

    def __add__(self, other: ConceptMasks) -> ConceptMasks:
        if not isinstance(other, ConceptMasks):
            return NotImplemented
        if other.n_rows != self.n_rows:
            raise ConceptError(f"cannot join concepts over {self.n_rows} and {other.n_rows} rows")
        return ConceptMasks(self.names + other.names, sp.hstack([self.matrix, other.matrix]),
                            self.kinds + other.kinds)

    def summary(self) -> dict[str, int]:
        """Number of concepts of each kind."""
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out

    @classmethod
    def from_masks(cls, masks: Mapping[str, np.ndarray], kind: str = "mask") -> ConceptMasks:
        """Concepts from ``{name: boolean row mask}`` (all of the same length)."""
        if not masks:
            raise ConceptError("no concepts given")
        names = list(masks)
        lengths = {len(np.asarray(masks[k]).reshape(-1)) for k in names}
        if len(lengths) != 1:
            raise ConceptError(f"concept masks differ in length: {sorted(lengths)}")
        M = np.stack([np.asarray(masks[k], dtype=bool).reshape(-1) for k in names], axis=1)
        return cls(names, sp.csc_matrix(M), [kind] * len(names))


# -- the categories of a lexicon ------------------------------------------------------------------
def lexicon_categories(lexicon: Mapping | None = None, max_attribute_values: int = 12) -> dict[str, list[str]]:
    """Word lists of the categories of a lexicon in the JSON layout of ``resources/lexicon.json``
    (default: that lexicon, the one the built-in generator uses).

    * a list of words, a string, or a mapping of those: one category per key (``adverbs:manner``),
      its words also counted in the parent (``adverbs``); deeper levels fold into their ancestor;
    * a list of entries (``{"sg": "dog", "pl": "dogs", "class": "animal"}``): string fields with a value
      per entry are word forms (``nouns`` = all forms, ``nouns:pl`` = one field's), fields with a few
      repeated values are attributes (``nouns:class=animal``; ``_`` means none).

    Multi-word forms contribute each of their words.
    """
    lex = load_lexicon() if lexicon is None else lexicon
    if not isinstance(lex, Mapping):
        raise ParameterError(f"a lexicon is a mapping of categories, got {type(lex).__name__}")
    out: dict[str, set[str]] = {}
    for key, val in lex.items():
        if str(key).startswith("_"):
            continue
        _walk(str(key), val, out, depth=0, max_values=max_attribute_values)
    return {k: sorted(v) for k, v in out.items() if v}


def _words_of(val) -> list[str]:
    if isinstance(val, str):
        return val.split()
    if isinstance(val, Mapping):
        return [w for v in val.values() for w in _words_of(v)]
    if isinstance(val, list | tuple):
        return [w for v in val for w in _words_of(v)]
    return []


def _walk(name: str, val, out: dict[str, set[str]], depth: int, max_values: int) -> set[str]:
    words: set[str] = set()
    if isinstance(val, list) and val and all(isinstance(x, Mapping) for x in val):
        words = _entries(name, val, out, max_values)
    elif isinstance(val, Mapping) and depth == 0:
        for k, v in val.items():
            words |= _walk(f"{name}:{k}", v, out, depth + 1, max_values)
    else:
        words = set(_words_of(val))
    out.setdefault(name, set()).update(words)
    return words


def _entries(name: str, entries: list, out: dict[str, set[str]], max_values: int) -> set[str]:
    fields: dict[str, list[str]] = {}
    for e in entries:
        for k, v in e.items():
            if isinstance(v, str):
                fields.setdefault(k, []).append(v)
    forms, attrs = [], []
    for k, vals in fields.items():
        distinct = len(set(vals))
        # a word form differs from entry to entry; an attribute takes a few values, or is rare
        common = 2 * len(vals) >= len(entries)
        if common and (distinct == len(vals) or distinct > max_values):
            forms.append(k)
        elif distinct <= max_values:
            attrs.append(k)
    words: set[str] = set()
    for k in forms:
        ws = {w for e in entries if isinstance(e.get(k), str) for w in e[k].split()}
        words |= ws
        if len(forms) > 1:
            out.setdefault(f"{name}:{k}", set()).update(ws)
    for a in attrs:
        for e in entries:
            v = e.get(a)
            if isinstance(v, str) and v not in EXCLUDED_LABEL_VALUES:
                out.setdefault(f"{name}:{a}={v}", set()).update(
                    w for k in forms if isinstance(e.get(k), str) for w in e[k].split())
    return words


# -- word shapes and affixes ------------------------------------------------------------------------
def word_shape(word: str) -> str:
    """``lower`` | ``Title`` | ``UPPER`` | ``mixed`` | ``digit`` (has a digit) | ``punct`` (no letter or digit)."""
    if any(ch.isdigit() for ch in word):
        return "digit"
    if not any(ch.isalpha() for ch in word):
        return "punct"
    if word.islower():
        return "lower"
    letters = [ch for ch in word if ch.isalpha()]
    if len(letters) > 1 and all(ch.isupper() for ch in letters):
        return "UPPER"
    if letters[0].isupper() and all(not ch.isupper() for ch in letters[1:]):
        return "Title"
    return "mixed"


def find_affixes(
    types: Sequence[str],
    counts: Sequence[int],
    min_count: int = 5,
    min_types: int = 3,
    min_stem: int = 2,
    suffix_lengths: Sequence[int] = SUFFIX_LENGTHS,
    prefix_lengths: Sequence[int] = PREFIX_LENGTHS,
) -> tuple[list[str], list[str]]:
    """``(suffixes, prefixes)`` found in the words themselves: an affix of ``k`` letters is kept when at
    least ``min_types`` word types (with at least ``min_stem`` more letters) carry it, ``min_count``
    times in all. A prefix must also be productive: those types are a prefix plus another word of the
    vocabulary (``un+happy``, ``re+do``), else the first letters of one lemma (``smi-`` of *smile*,
    *smiled*, *smiling*) would pass for a prefix."""
    vocab = set(types)
    found: dict[tuple[str, str], tuple[set[str], int]] = {}
    for w, c in zip(types, counts):
        for kind, lengths in (("suffix", suffix_lengths), ("prefix", prefix_lengths)):
            for k in lengths:
                if len(w) < k + min_stem:
                    continue
                a = w[-k:] if kind == "suffix" else w[:k]
                if not a.isalpha() or (kind == "prefix" and w[k:] not in vocab):
                    continue
                ts, n = found.get((kind, a), (set(), 0))
                ts.add(w)
                found[(kind, a)] = (ts, n + int(c))
    keep = {key for key, (ts, n) in found.items() if len(ts) >= min_types and n >= min_count}
    return (sorted(a for kind, a in keep if kind == "suffix"), sorted(a for kind, a in keep if kind == "prefix"))


def _affix_of(w: str, a: str, kind: str, min_stem: int) -> bool:
    if len(w) < len(a) + min_stem:
        return False
    return w.endswith(a) if kind == "suffix" else w.startswith(a)


# -- building them ------------------------------------------------------------------------------------
def build_concepts(
    source,
    min_count: int = 5,
    label_columns: Sequence[str] | None = None,
    lexicons: Mapping[str, Sequence[str]] | Mapping | str | None = "builtin",
    kinds: Sequence[str] = KINDS,
    lowercase: bool = True,
    min_affix_types: int = 3,
    min_stem: int = 2,
    suffix_lengths: Sequence[int] = SUFFIX_LENGTHS,
    prefix_lengths: Sequence[int] = PREFIX_LENGTHS,
    top_words: int | None = None,
    min_support: int = 1,
    exclude_values: Sequence[str] = EXCLUDED_LABEL_VALUES,
) -> ConceptMasks:
    """Primitive concepts of the rows of a view (or store), from its index columns only:

    * ``col=value`` for every value of every label column (default: all of the view's: ``pos``, ``tag``,
      ``dep``, ``ner``, ``number``, ``tense``, ...), except ``exclude_values``;
    * ``word=w`` for every (lower-cased) word seen ``min_count``+ times (``top_words``: only the most
      frequent ones, the old behaviour);
    * ``lex=category`` for the categories of ``lexicons``: ``"builtin"`` (the generator's lexicon,
      :func:`lexicon_categories`), a lexicon in that JSON layout, ``{name: [words]}``, or ``None``;
    * ``shape=lower|Title|UPPER|mixed|digit|punct`` (:func:`word_shape`, on the words as written);
    * ``position=first|last`` in the sentence;
    * ``suffix=-ing`` / ``prefix=un-`` for the affixes of the words themselves (:func:`find_affixes`:
      carried by ``min_affix_types`` word types and ``min_count`` tokens).

    ``kinds`` picks among ``word``, ``label``, ``lexicon``, ``shape``, ``position``, ``affix``. Concepts
    true on fewer than ``min_support`` rows, or on every row, are dropped. Concepts come in the order
    label, word, lexicon, shape, affix, position, which is also how a tie between two concepts with the
    same mask is broken (``pos=ADJ`` rather than ``lex=adjectives``). For sentence-level stores a
    word (lexicon, shape, affix) concept holds on the sentences that contain such a word.
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown concept kinds {bad}; choose from {KINDS}")
    if min_count < 1 or min_support < 1 or min_affix_types < 1:
        raise ParameterError("min_count, min_support and min_affix_types must be >= 1")
    if top_words is not None and top_words < 0:
        raise ParameterError(f"top_words must be >= 0 or None, got {top_words}")
    view = as_describe_view(source)
    info = RowInfo(view)
    n = info.n
    if n == 0:
        raise ConceptError("the view has no rows")
    raw = info.words
    sentence_level = info.level == "sentence"
    # R: rows x word types (one-hot for word rows; the words a sentence contains for sentence rows)
    tokens = [t.split() for t in raw.tolist()] if sentence_level else None
    if sentence_level:
        flat = [w for ts in tokens for w in ts]
        row_of = np.repeat(np.arange(n), [len(ts) for ts in tokens])
    else:
        flat, row_of = raw.tolist(), np.arange(n)
    types, inverse = np.unique(np.asarray(flat, dtype=str), return_inverse=True) if flat else (np.zeros(0, str),
                                                                                              np.zeros(0, int))
    R = sp.csr_matrix((np.ones(len(row_of), np.int32), (row_of, inverse.reshape(-1))), shape=(n, len(types)))
    R.data[:] = 1
    type_counts = np.bincount(inverse.reshape(-1), minlength=len(types))
    norm = np.char.lower(types) if lowercase and len(types) else types
    low_types, low_inv = np.unique(norm, return_inverse=True) if len(types) else (types, np.zeros(0, int))
    low_counts = np.bincount(low_inv, weights=type_counts, minlength=len(low_types)).astype(np.int64)

    names: list[str] = []
    kinds_out: list[str] = []
    cols: list[sp.spmatrix] = []

    def add_type_concepts(kind: str, concept_names: list[str], pairs: list[tuple[int, int]]) -> None:
        """Concepts defined on word types: ``pairs`` of (type index, concept index)."""
        if not concept_names:
            return
        t, c = (np.asarray(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
        T = sp.csr_matrix((np.ones(len(t), np.int32), (t, c)), shape=(len(types), len(concept_names)))
        cols.append((R @ T).tocsc())
        names.extend(concept_names)
        kinds_out.extend([kind] * len(concept_names))

    if "label" in kinds:
        columns = info.label_columns if label_columns is None else list(label_columns)
        for col in columns:
            if col not in info.label_columns:
                raise ConceptError(f"the view has no label column {col!r}; it has {info.label_columns}")
            labs = info.labels(col)
            values, codes = np.unique(labs, return_inverse=True)
            keep = [i for i, v in enumerate(values.tolist()) if v not in exclude_values]
            if not keep:
                continue
            cid = np.full(len(values), -1)
            cid[keep] = np.arange(len(keep))
            c = cid[codes.reshape(-1)]
            ok = c >= 0
            cols.append(sp.csc_matrix((np.ones(int(ok.sum()), np.int32), (np.flatnonzero(ok), c[ok])),
                                      shape=(n, len(keep))))
            names.extend(f"{col}={values[i]}" for i in keep)
            kinds_out.extend([f"label:{col}"] * len(keep))
    if "word" in kinds and len(low_types):
        order = np.lexsort((low_types, -low_counts))
        chosen = [int(i) for i in order if low_counts[i] >= min_count]
        if top_words is not None:
            chosen = chosen[:top_words]
        cid = {li: j for j, li in enumerate(chosen)}
        pairs = [(ti, cid[int(li)]) for ti, li in enumerate(low_inv) if int(li) in cid]
        add_type_concepts("word", [f"word={low_types[i]}" for i in chosen], pairs)
    if "lexicon" in kinds and lexicons is not None:
        cats = _lexicon_lists(lexicons)
        cnames = list(cats)
        word_cats: dict[str, list[int]] = {}
        for j, c in enumerate(cnames):
            for w in cats[c]:
                word_cats.setdefault(w.lower() if lowercase else w, []).append(j)
        pairs = [(ti, j) for ti, w in enumerate(norm.tolist()) for j in word_cats.get(w, ())]
        add_type_concepts("lexicon", [f"lex={c}" for c in cnames], pairs)
    if "shape" in kinds and len(types):
        shape_of = [SHAPES.index(word_shape(w)) for w in types.tolist()]
        add_type_concepts("shape", [f"shape={s}" for s in SHAPES], list(enumerate(shape_of)))
    if "affix" in kinds and len(low_types):
        suf, pre = find_affixes(low_types.tolist(), low_counts.tolist(), min_count, min_affix_types, min_stem,
                                suffix_lengths, prefix_lengths)
        affixes = [("suffix", a) for a in suf] + [("prefix", a) for a in pre]
        by_end: dict[tuple[str, str], int] = {key: j for j, key in enumerate(affixes)}
        pairs = []
        for ti, w in enumerate(norm.tolist()):
            for kind, lengths in (("suffix", suffix_lengths), ("prefix", prefix_lengths)):
                for k in lengths:
                    a = w[-k:] if kind == "suffix" else w[:k]
                    j = by_end.get((kind, a))
                    if j is not None and _affix_of(w, a, kind, min_stem):
                        pairs.append((ti, j))
        add_type_concepts("affix", [f"suffix=-{a}" if kind == "suffix" else f"prefix={a}-" for kind, a in affixes],
                          pairs)
    if "position" in kinds and not sentence_level:
        wp = info.word_pos
        sid = info.sent_ids
        last_pos = np.zeros(n, dtype=np.int64)
        uniq, inv = np.unique(sid, return_inverse=True)
        mx = np.full(len(uniq), -1, dtype=np.int64)
        np.maximum.at(mx, inv, wp)
        last_pos = mx[inv]
        M = np.stack([wp == 0, wp == last_pos], axis=1)
        cols.append(sp.csc_matrix(M))
        names.extend(["position=first", "position=last"])
        kinds_out.extend(["position", "position"])
    if not names:
        raise ConceptError("no concepts: the view has no frequent words, label columns or lexicon matches")
    A = sp.hstack(cols).tocsc()
    A.data[:] = 1
    A.sum_duplicates()
    support = np.diff(A.indptr)
    keep = np.flatnonzero((support >= min_support) & (support < n))
    # a name seen twice (e.g. a label value equal to a lexicon category's name) keeps its first concept
    seen: set[str] = set()
    keep = [int(i) for i in keep if not (names[i] in seen or seen.add(names[i]))]
    if not keep:
        raise ConceptError(f"no concept holds on at least {min_support} (and not on every) row of the view")
    return ConceptMasks([names[i] for i in keep], A[:, keep], [kinds_out[i] for i in keep])


def _lexicon_lists(lexicons) -> dict[str, list[str]]:
    if isinstance(lexicons, str):
        if lexicons != "builtin":
            raise ParameterError(f"lexicons must be 'builtin', a lexicon mapping or None, got {lexicons!r}")
        return lexicon_categories()
    if not isinstance(lexicons, Mapping):
        raise ParameterError(f"lexicons must be 'builtin', a lexicon mapping or None, got {type(lexicons).__name__}")
    if all(isinstance(v, list | tuple) and all(isinstance(w, str) for w in v) for v in lexicons.values()):
        return {str(k): [str(w) for w in v] for k, v in lexicons.items()}  # {name: [words]}
    return lexicon_categories(lexicons)
