"""Compositional explanations of neurons (Mu & Andreas 2020, "Compositional Explanations of Neurons").

A neuron is binarised at its top quantile (``M = act >= T``, T the 99.5th percentile by default);
primitive concepts are word-level boolean masks (the word itself, every label value such as
``pos=NOUN`` or ``number=Plur``, lexicon categories); a beam search over formulas built with AND, OR
and AND NOT finds the formula C maximising IoU(M, C) = |M ∧ C| / |M ∨ C|. The beam keeps old formulas
next to their extensions, so the best IoU never decreases with the allowed formula length.

Masks are packed into uint64 bit arrays; the IoU of every one-concept extension of a formula F is
computed from two popcounts per concept, |F ∧ c| and |F ∧ c ∧ M|:

* AND:     |G| = |F∧c|,              |G∧M| = |F∧c∧M|
* OR:      |G| = |F| + |c| - |F∧c|,  |G∧M| = |F∧M| + |c∧M| - |F∧c∧M|
* AND NOT: |G| = |F| - |F∧c|,        |G∧M| = |F∧M| - |F∧c∧M|
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from finegrain.neurons import Neuron
from finegrain.store import ActivationStore, StoreError

from .top import DEFAULT_CHUNK_ROWS, _parse_neurons, gather_columns, str_array

OPS: tuple[str, ...] = ("AND", "OR", "AND NOT")
EXCLUDED_LABEL_VALUES: tuple[str, ...] = ("", "_")


# -- bit arrays --------------------------------------------------------------------------------
def pack(mask: np.ndarray) -> np.ndarray:
    """Pack a boolean mask (or ``[k, n]`` masks) into uint64 words; padding bits are 0."""
    mask = np.asarray(mask, dtype=bool)
    two_d = mask.ndim == 2
    m2 = mask if two_d else mask[None]
    b = np.packbits(m2, axis=1)
    pad = (-b.shape[1]) % 8
    if pad:
        b = np.concatenate([b, np.zeros((b.shape[0], pad), np.uint8)], axis=1)
    out = np.ascontiguousarray(b).view(np.uint64)
    return out if two_d else out[0]


def unpack(bits: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack` for a single mask of ``n`` rows."""
    return np.unpackbits(np.ascontiguousarray(bits).view(np.uint8))[:n].astype(bool)


if hasattr(np, "bitwise_count"):

    def popcount(bits: np.ndarray, axis: int = -1) -> np.ndarray:
        """Number of set bits along ``axis``."""
        return np.bitwise_count(bits).sum(axis=axis, dtype=np.int64)

else:  # numpy < 2.0
    _LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcount(bits: np.ndarray, axis: int = -1) -> np.ndarray:
        """Number of set bits along ``axis``."""
        u8 = np.ascontiguousarray(bits).view(np.uint8)
        return _LUT[u8].sum(axis=axis, dtype=np.int64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks, |a ∧ b| / |a ∨ b| (0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = int(np.sum(a | b))
    return int(np.sum(a & b)) / union if union else 0.0


# -- concepts ----------------------------------------------------------------------------------
@dataclass
class ConceptSet:
    """Primitive concepts: ``names[i]`` (e.g. ``pos=NOUN``) with packed row masks ``bits[i]``."""

    names: list[str]
    bits: np.ndarray  # [n_concepts, n_words] uint64
    n_rows: int

    def __post_init__(self) -> None:
        if len(self.names) != len(self.bits):
            raise ValueError(f"{len(self.names)} concept names for {len(self.bits)} masks")
        self.counts = popcount(self.bits, axis=1) if len(self.bits) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def mask(self, name_or_index: str | int) -> np.ndarray:
        i = self.names.index(name_or_index) if isinstance(name_or_index, str) else int(name_or_index)
        return unpack(self.bits[i], self.n_rows)

    @classmethod
    def from_masks(cls, masks: Mapping[str, np.ndarray]) -> ConceptSet:
        """Concepts from ``{name: boolean row mask}`` (all of the same length)."""
        if not masks:
            raise ValueError("no concepts given")
        names = list(masks)
        M = np.stack([np.asarray(masks[k], dtype=bool) for k in names])
        return cls(names, pack(M), M.shape[1])


def build_concepts(
    store: ActivationStore,
    top_words: int = 200,
    min_count: int = 2,
    label_columns: Sequence[str] | None = None,
    lexicons: Mapping[str, Sequence[str]] | None = None,
    min_support: int = 1,
    lowercase: bool = True,
    exclude_values: Sequence[str] = EXCLUDED_LABEL_VALUES,
) -> ConceptSet:
    """Primitive concepts of a store's rows (Mu & Andreas 2020, section 3 adapted to words).

    * ``word=w`` for the ``top_words`` most frequent (lower-cased) words seen ``min_count``+ times;
    * ``col=value`` for every value of every label column (default: all of the store's columns);
    * ``lex=name`` for each lexicon category ``{name: [words]}`` (matched lower-cased).

    Concepts true on fewer than ``min_support`` rows are dropped. For sentence-level stores a word
    concept is true on the sentences that contain the word.
    """
    if top_words < 0 or min_count < 1 or min_support < 1:
        raise ValueError("top_words must be >= 0 and min_count, min_support >= 1")
    words = str_array(store.words)
    norm = np.char.lower(words) if lowercase else words
    sentence_level = store.level == "sentence"
    masks: dict[str, np.ndarray] = {}
    if sentence_level:
        toks = [set(t.split()) for t in norm]
        vocab, counts = np.unique(np.concatenate([list(t) for t in toks]) if toks else [], return_counts=True)
    else:
        vocab, inverse, counts = np.unique(norm, return_inverse=True, return_counts=True)
    order = np.lexsort((vocab, -counts))
    chosen = [i for i in order if counts[i] >= min_count][:top_words]
    for i in chosen:
        w = str(vocab[i])
        if sentence_level:
            masks[f"word={w}"] = np.array([w in t for t in toks], dtype=bool)
        else:
            masks[f"word={w}"] = inverse == i
    cols = store.label_columns if label_columns is None else list(label_columns)
    for col in cols:
        labs = str_array(store.labels(col))
        for v in np.unique(labs):
            if str(v) in exclude_values:
                continue
            masks[f"{col}={v}"] = labs == v
    for name, lex in (lexicons or {}).items():
        entries = {(w.lower() if lowercase else w) for w in lex}
        if sentence_level:
            masks[f"lex={name}"] = np.array([bool(entries & t) for t in toks], dtype=bool)
        else:
            masks[f"lex={name}"] = np.isin(norm, list(entries))
    masks = {k: m for k, m in masks.items() if int(m.sum()) >= min_support}
    if not masks:
        raise StoreError("no concepts: the store has no frequent words, label columns or lexicon matches")
    return ConceptSet.from_masks(masks)


# -- formulas ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """A left-deep formula: a single concept (``op is None``) or ``left OP concept``."""

    concept: int
    op: str | None = None
    left: Formula | None = None

    @property
    def length(self) -> int:
        return 1 if self.left is None else self.left.length + 1

    def concepts(self) -> list[int]:
        return [self.concept] if self.left is None else self.left.concepts() + [self.concept]

    def render(self, names: Sequence[str]) -> str:
        """``"(pos=NOUN AND number=Plur) OR word=dogs"``: compound left operands are parenthesised."""
        if self.left is None:
            return names[self.concept]
        lhs = self.left.render(names)
        if self.left.left is not None:
            lhs = f"({lhs})"
        return f"{lhs} {self.op} {names[self.concept]}"

    def bits(self, concepts: ConceptSet) -> np.ndarray:
        c = concepts.bits[self.concept]
        if self.left is None:
            return c.copy()
        f = self.left.bits(concepts)
        if self.op == "AND":
            return f & c
        if self.op == "OR":
            return f | c
        return f & ~c

    def mask(self, concepts: ConceptSet) -> np.ndarray:
        return unpack(self.bits(concepts), concepts.n_rows)


@dataclass
class Explanation:
    """Best formula of a neuron. ``per_length[i]`` is the best formula of length <= i + 1 (the head
    of the beam after step i + 1); ``beam`` the final beam as ``(formula, iou)`` pairs."""

    neuron: str
    formula: str
    iou: float
    length: int
    threshold: float | None
    n_on: int
    n_rows: int
    per_length: list[dict] = field(default_factory=list)
    beam: list[tuple[str, float]] = field(default_factory=list)
    tree: Formula | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "neuron": self.neuron, "formula": self.formula, "iou": self.iou, "length": self.length,
            "threshold": self.threshold, "n_on": self.n_on, "n_rows": self.n_rows,
            "per_length": self.per_length, "beam": [list(b) for b in self.beam],
        }


@dataclass
class _Entry:
    iou: float
    formula: Formula
    bits: np.ndarray
    size: int  # |F|
    hit: int  # |F ∧ M|


def neuron_mask(
    values: np.ndarray, quantile: float = 0.995, min_positives: int = 5, threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Binarise activations: on where ``values >= T``, T the ``quantile`` of ``values`` but low enough
    that at least ``min_positives`` rows are on (tiny corpora), or the given absolute ``threshold``."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isfinite(v), v, -np.inf)
    n = len(v)
    if n == 0:
        raise ValueError("no activations to binarise")
    if threshold is not None:
        return v >= threshold, float(threshold)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    n_on = min(n, max(math.ceil((1.0 - quantile) * n - 1e-9), int(min_positives)))
    thr = float(np.partition(v, n - n_on)[n - n_on])
    mask = v >= thr
    if thr <= v.min() and v.max() > thr:
        # a mostly-constant neuron (e.g. ReLU at 0): ">= floor" would switch on nearly every row
        mask = v > thr
    return mask, thr


def _select(cands: list[tuple[float, int, int, Formula | _Entry]], width: int, concepts, M) -> list[_Entry]:
    """Top ``width`` distinct-mask entries; ties go to shorter formulas, then to generation order."""
    cands.sort(key=lambda t: (-t[0], t[1], t[2]))
    out: list[_Entry] = []
    seen: set[bytes] = set()
    for score, _, _, item in cands:
        if len(out) >= width:
            break
        if isinstance(item, _Entry):
            e = item
        else:
            b = item.bits(concepts)
            e = _Entry(score, item, b, int(popcount(b)), int(popcount(b & M)))
        key = e.bits.tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append(e)
    return out


def explain_mask(
    mask: np.ndarray,
    concepts: ConceptSet,
    beam_width: int = 10,
    max_length: int = 3,
    ops: Sequence[str] = OPS,
    name: str = "mask",
    threshold: float | None = None,
) -> Explanation:
    """Beam search (Mu & Andreas 2020) for the formula over ``concepts`` with the highest IoU with
    the boolean row ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (concepts.n_rows,):
        raise ValueError(f"mask has shape {mask.shape}, the concepts cover {concepts.n_rows} rows")
    if beam_width < 1 or max_length < 1:
        raise ValueError(f"beam_width and max_length must be >= 1, got {beam_width}, {max_length}")
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise ValueError(f"unknown ops {bad}; choose from {OPS}")
    if len(concepts) == 0:
        raise ValueError("no concepts to explain with")
    M = pack(mask)
    n_m = int(mask.sum())
    C = concepts.bits
    cnt = concepts.counts.astype(np.float64)
    cm = popcount(C & M, axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou1 = np.nan_to_num(cm / (cnt + n_m - cm))
    tick = 0
    cands: list = []
    for i in range(len(concepts)):
        cands.append((float(iou1[i]), 1, tick, Formula(i)))
        tick += 1
    beam = _select(cands, beam_width, concepts, M)
    per_length = [beam[0]]
    for _length in range(2, max_length + 1):
        cands = [(e.iou, e.formula.length, -1, e) for e in beam]  # old formulas stay in the running
        for e in beam:
            a = popcount(e.bits & C, axis=1).astype(np.float64)  # |F ∧ c|
            b = popcount((e.bits & M) & C, axis=1).astype(np.float64)  # |F ∧ c ∧ M|
            used = np.zeros(len(concepts), bool)
            used[e.formula.concepts()] = True
            for op in ops:
                if op == "AND":
                    size, hit = a, b
                elif op == "OR":
                    size, hit = e.size + cnt - a, e.hit + cm - b
                else:
                    size, hit = e.size - a, e.hit - b
                union = size + n_m - hit
                with np.errstate(divide="ignore", invalid="ignore"):
                    sc = np.where(union > 0, hit / np.maximum(union, 1), 0.0)
                sc[used] = -1.0
                # only candidates that could enter the beam need Formula objects
                keep = np.flatnonzero(sc >= 0)
                if len(keep) > 4 * beam_width:
                    keep = keep[np.argpartition(-sc[keep], 4 * beam_width)[: 4 * beam_width]]
                for i in keep:
                    cands.append((float(sc[i]), e.formula.length + 1, tick, Formula(int(i), op, e.formula)))
                    tick += 1
        beam = _select(cands, beam_width, concepts, M)
        per_length.append(beam[0])
    best = beam[0]
    names = concepts.names
    return Explanation(
        neuron=name, formula=best.formula.render(names), iou=float(best.iou), length=best.formula.length,
        threshold=threshold, n_on=n_m, n_rows=concepts.n_rows,
        per_length=[
            {"length": i + 1, "formula": e.formula.render(names), "iou": float(e.iou)}
            for i, e in enumerate(per_length)
        ],
        beam=[(e.formula.render(names), float(e.iou)) for e in beam], tree=best.formula,
    )


def explain_neurons(
    store: ActivationStore,
    neurons: Sequence[Neuron | str],
    concepts: ConceptSet | None = None,
    quantile: float = 0.995,
    min_positives: int = 5,
    beam_width: int = 10,
    max_length: int = 3,
    ops: Sequence[str] = OPS,
    lexicons: Mapping[str, Sequence[str]] | None = None,
    top_words: int = 200,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = 2**24,
    progress: bool | None = None,
) -> dict[str, Explanation]:
    """Compositional explanations of many neurons; concepts are built once (pass ``concepts`` to
    reuse them across calls) and activations are read in batches of ``max_values // n_rows`` neurons
    per pass. Returns ``{"layer.3:117": Explanation}``."""
    ns = _parse_neurons(store, neurons)
    if concepts is None:
        concepts = build_concepts(store, top_words=top_words, lexicons=lexicons)
    if concepts.n_rows != store.n_rows:
        raise ValueError(f"concepts cover {concepts.n_rows} rows, the store has {store.n_rows}")
    per_batch = max(1, int(max_values) // max(store.n_rows, 1))
    out: dict[str, Explanation] = {}
    bar = tqdm(total=len(ns), desc="explaining neurons", disable=None if progress is None else not progress)
    for s in range(0, len(ns), per_batch):
        batch = ns[s : s + per_batch]
        V = gather_columns(store, batch, chunk_rows)
        for j, n in enumerate(batch):
            m, thr = neuron_mask(V[:, j], quantile, min_positives)
            out[str(n)] = explain_mask(m, concepts, beam_width, max_length, ops, name=str(n), threshold=thr)
            bar.update(1)
    bar.close()
    return out


def explain_neuron(
    store: ActivationStore,
    neuron: Neuron | str,
    concepts: ConceptSet | None = None,
    quantile: float = 0.995,
    min_positives: int = 5,
    beam_width: int = 10,
    max_length: int = 3,
    ops: Sequence[str] = OPS,
    lexicons: Mapping[str, Sequence[str]] | None = None,
    top_words: int = 200,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Explanation:
    """Best AND / OR / AND NOT formula of one neuron by IoU (Mu & Andreas 2020); see :func:`explain_mask`."""
    return explain_neurons(
        store, [neuron], concepts, quantile, min_positives, beam_width, max_length, ops, lexicons,
        top_words, chunk_rows, progress=False,
    )[str(Neuron.parse(neuron))]
