"""Compositional explanations of neurons (Mu & Andreas 2020, "Compositional Explanations of Neurons").

A neuron is binarised at its top quantile (``M = act >= T``, T the 99.5th percentile by default);
primitive concepts are row masks (:mod:`finegrain.describe.concepts`: words, label values, lexicon
categories, shapes, positions, affixes); a beam search over formulas built with AND, OR and AND NOT
finds the formula C maximising IoU(M, C) = |M ∧ C| / |M ∨ C|. The beam keeps old formulas next to
their extensions, so the best IoU never decreases with the allowed formula length.

The IoU of every one-concept extension of a formula F is computed from two counts per concept,
|F ∧ c| and |F ∧ c ∧ M|, each one sparse product against all concepts
(:meth:`ConceptMasks.counts_in`):

* AND:     |G| = |F∧c|,              |G∧M| = |F∧c∧M|
* OR:      |G| = |F| + |c| - |F∧c|,  |G∧M| = |F∧M| + |c∧M| - |F∧c∧M|
* AND NOT: |G| = |F| - |F∧c|,        |G∧M| = |F∧M| - |F∧c∧M|

Streaming: the concepts come from the view's index columns (words, labels) and each neuron's column is
read block by block from the view (only its layer is read from a store); nothing else is materialised.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finegrain.errors import ConceptError, ParameterError
from finegrain.neurons import Neuron
from finegrain.results import Result

from .concepts import ConceptMasks, build_concepts
from .top import (
    DEFAULT_CHUNK_ROWS,
    NeuronResults,
    RowInfo,
    as_describe_view,
    gather_columns,
    parse_view_neurons,
)

OPS: tuple[str, ...] = ("AND", "OR", "AND NOT")


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
        raise ParameterError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = int(np.sum(a | b))
    return int(np.sum(a & b)) / union if union else 0.0


# -- formulas ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """A left-deep formula over the concepts of a :class:`ConceptMasks`: a single concept (``op is
    None``) or ``left OP concept``."""

    concept: int
    op: str | None = None
    left: Formula | None = None

    @property
    def length(self) -> int:
        return 1 if self.left is None else self.left.length + 1

    def concepts(self) -> list[int]:
        return [self.concept] if self.left is None else self.left.concepts() + [self.concept]

    def steps(self) -> list[tuple[str | None, int]]:
        """``[(None, c0), (op1, c1), ...]``: the formula read left to right."""
        return [(None, self.concept)] if self.left is None else self.left.steps() + [(self.op, self.concept)]

    def render(self, names: Sequence[str]) -> str:
        """``"(pos=NOUN AND number=Plur) OR word=dogs"``: compound left operands are parenthesised."""
        return render_steps([(op, names[c]) for op, c in self.steps()])

    def mask(self, concepts: ConceptMasks) -> np.ndarray:
        return steps_mask([(op, c) for op, c in self.steps()], concepts)


def render_steps(steps: Sequence[tuple[str | None, str]]) -> str:
    out = ""
    for i, (op, name) in enumerate(steps):
        if i == 0:
            out = name
        else:
            out = f"{f'({out})' if i > 1 else out} {op} {name}"
    return out


def steps_mask(steps: Sequence[tuple[str | None, str | int]], concepts: ConceptMasks) -> np.ndarray:
    """The row mask of a left-deep formula given as ``[(None, concept), (op, concept), ...]`` (concept
    names or indices of ``concepts``)."""
    if not steps:
        raise ConceptError("an empty formula has no mask")
    m = concepts.mask(steps[0][1])
    for op, c in steps[1:]:
        cm = concepts.mask(c)
        if op == "AND":
            m &= cm
        elif op == "OR":
            m |= cm
        elif op == "AND NOT":
            m &= ~cm
        else:
            raise ConceptError(f"unknown operator {op!r}; formulas use {OPS}")
    return m


# -- results -----------------------------------------------------------------------------------
@dataclass
class FormulaExample(Result):
    """One row next to a formula: its word in context, the neuron's activation there, and whether the
    formula holds (``matched``) and the neuron is on (``on``)."""

    row: int
    word: str
    context: str
    activation: float
    on: bool
    matched: bool


@dataclass
class NeuronFormula(Result):
    """The best compositional explanation of one neuron (Mu & Andreas 2020).

    The neuron is on at ``n_on`` of ``n_rows`` rows: where its activation is ``>= threshold``, the
    ``quantile`` of its activations (``quantile`` is ``None`` for a given absolute threshold). ``formula``
    holds on ``n_formula`` rows, ``n_both`` of them with the neuron on: ``iou`` = n_both / (n_on +
    n_formula - n_both), ``precision`` = n_both / n_formula, ``recall`` = n_both / n_on. ``per_length[i]``
    is the best formula of length <= i + 1; ``beam`` the final beam as ``(formula, iou)`` pairs;
    ``steps`` the formula as ``[(None, concept), (op, concept), ...]`` (rebuild its mask with
    :meth:`mask`).

    Examples: ``matched`` — the most activating rows where the neuron is on and the formula holds;
    ``missed`` — where it is on and the formula does not hold; ``false_alarms`` — the most activating
    rows where the formula holds and the neuron is off.
    """

    neuron: str
    formula: str
    iou: float
    length: int
    quantile: float | None
    threshold: float | None
    n_on: int
    n_rows: int
    n_formula: int = 0
    n_both: int = 0
    per_length: list[dict] = field(default_factory=list)
    beam: list[tuple[str, float]] = field(default_factory=list)
    steps: list[tuple[str | None, str]] = field(default_factory=list)
    matched: list[FormulaExample] = field(default_factory=list)
    missed: list[FormulaExample] = field(default_factory=list)
    false_alarms: list[FormulaExample] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)
    hist_formula: list[int] = field(default_factory=list)
    hist_other: list[int] = field(default_factory=list)
    n_concepts: int = 0
    tree: Formula | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        for k in ("matched", "missed", "false_alarms"):
            d[k] = [FormulaExample.from_dict(e) for e in d.get(k, [])]
        d["beam"] = [(str(f), float(v)) for f, v in d.get("beam", [])]
        d["steps"] = [(op, str(c)) for op, c in d.get("steps", [])]
        return d

    @property
    def precision(self) -> float:
        return self.n_both / self.n_formula if self.n_formula else 0.0

    @property
    def recall(self) -> float:
        return self.n_both / self.n_on if self.n_on else 0.0

    @property
    def on_fraction(self) -> float:
        return self.n_on / self.n_rows if self.n_rows else 0.0

    def mask(self, concepts: ConceptMasks) -> np.ndarray:
        """The formula's row mask over ``concepts`` (by concept name)."""
        return steps_mask(self.steps, concepts)

    def threshold_text(self) -> str:
        q = f"top {100 * (1 - self.quantile):.3g}% (quantile {self.quantile:g})" if self.quantile is not None \
            else "absolute threshold"
        thr = "-" if self.threshold is None else f"{self.threshold:.4g}"
        return f"act >= {thr}, {q}: on at {self.n_on} of {self.n_rows} rows"

    def table(self) -> str:
        lines = [f"{self.neuron}: {self.formula}",
                 f"  IoU {self.iou:.3f}  (precision {self.precision:.3f}, recall {self.recall:.3f}; "
                 f"{self.threshold_text()}; formula on {self.n_formula} rows)"]
        if len(self.per_length) > 1:
            lines.append("  best by length: " + "; ".join(f"{p['length']}: {p['iou']:.3f} {p['formula']}"
                                                          for p in self.per_length))
        for title, exs in (("matched (on, formula holds)", self.matched), ("missed (on, formula fails)", self.missed),
                           ("false alarms (formula holds, off)", self.false_alarms)):
            if exs:
                lines.append(f"  {title}:")
                lines += [f"    {e.activation:+9.4f}  {e.context}" for e in exs]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_formula  # heavy (matplotlib): imported only to draw

        return plot_formula(self, path)


@dataclass
class _Entry:
    iou: float
    formula: Formula
    mask: np.ndarray
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
        raise ParameterError("no activations to binarise")
    if threshold is not None:
        return v >= threshold, float(threshold)
    if not 0.0 < quantile < 1.0:
        raise ParameterError(f"quantile must lie in (0, 1), got {quantile}")
    if min_positives < 1:
        raise ParameterError(f"min_positives must be >= 1, got {min_positives}")
    n_on = min(n, max(math.ceil((1.0 - quantile) * n - 1e-9), int(min_positives)))
    thr = float(np.partition(v, n - n_on)[n - n_on])
    mask = v >= thr
    if thr <= v.min() and v.max() > thr:
        # a mostly-constant neuron (e.g. ReLU at 0): ">= floor" would switch on nearly every row
        mask = v > thr
    return mask, thr


def _select(cands: list[tuple[float, int, int, Formula | _Entry]], width: int, concepts: ConceptMasks,
            M: np.ndarray, parents: dict[Formula, np.ndarray]) -> list[_Entry]:
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
            c = concepts.mask(item.concept)
            if item.left is None:
                m = c
            else:
                p = parents[item.left]
                m = p & c if item.op == "AND" else (p | c if item.op == "OR" else p & ~c)
            e = _Entry(score, item, m, int(m.sum()), int((m & M).sum()))
        key = pack(e.mask).tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append(e)
    return out


def _check_search(beam_width: int, max_length: int, ops: Sequence[str]) -> None:
    if beam_width < 1 or max_length < 1:
        raise ParameterError(f"beam_width and max_length must be >= 1, got {beam_width}, {max_length}")
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise ParameterError(f"unknown ops {bad}; choose from {OPS}")


def _search(mask: np.ndarray, concepts: ConceptMasks, beam_width: int, max_length: int,
            ops: Sequence[str]) -> tuple[list[_Entry], list[_Entry]]:
    """The beam search; returns the final beam and the best entry after each length."""
    M = mask
    n_m = int(mask.sum())
    cnt = concepts.counts.astype(np.float64)
    cm = concepts.counts_in(M).astype(np.float64)  # |c ∧ M|
    with np.errstate(divide="ignore", invalid="ignore"):
        iou1 = np.nan_to_num(cm / (cnt + n_m - cm))
    cands: list = [(float(iou1[i]), 1, i, Formula(i)) for i in range(len(concepts))]
    tick = len(concepts)
    beam = _select(cands, beam_width, concepts, M, {})
    per_length = [beam[0]]
    for _length in range(2, max_length + 1):
        cands = [(e.iou, e.formula.length, -1, e) for e in beam]  # old formulas stay in the running
        parents = {e.formula: e.mask for e in beam}
        for e in beam:
            a = concepts.counts_in(e.mask).astype(np.float64)  # |F ∧ c|
            b = concepts.counts_in(e.mask & M).astype(np.float64)  # |F ∧ c ∧ M|
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
        beam = _select(cands, beam_width, concepts, M, parents)
        per_length.append(beam[0])
    return beam, per_length


def explain_mask(
    mask: np.ndarray,
    concepts: ConceptMasks,
    beam_width: int = 10,
    max_length: int = 3,
    ops: Sequence[str] = OPS,
    name: str = "mask",
    threshold: float | None = None,
    quantile: float | None = None,
) -> NeuronFormula:
    """Beam search (Mu & Andreas 2020) for the formula over ``concepts`` with the highest IoU with
    the boolean row ``mask`` (no examples: see :func:`explain_neurons` for a neuron of a view)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (concepts.n_rows,):
        raise ParameterError(f"mask has shape {mask.shape}, the concepts cover {concepts.n_rows} rows")
    _check_search(beam_width, max_length, ops)
    if len(concepts) == 0:
        raise ConceptError("no concepts to explain with")
    beam, per_length = _search(mask, concepts, beam_width, max_length, ops)
    best = beam[0]
    names = concepts.names
    out = NeuronFormula(
        neuron=name, formula=best.formula.render(names), iou=float(best.iou), length=best.formula.length,
        quantile=quantile, threshold=threshold, n_on=int(mask.sum()), n_rows=concepts.n_rows,
        n_formula=best.size, n_both=best.hit,
        per_length=[{"length": i + 1, "formula": e.formula.render(names), "iou": float(e.iou)}
                    for i, e in enumerate(per_length)],
        beam=[(e.formula.render(names), float(e.iou)) for e in beam],
        steps=[(op, names[c]) for op, c in best.formula.steps()], n_concepts=len(concepts),
    )
    out.tree = best.formula
    return out


def _formula_examples(info: RowInfo, values: np.ndarray, on: np.ndarray, fm: np.ndarray, k: int):
    """``(matched, missed, false_alarms)``: the ``k`` most activating rows of each group."""

    def pick(sel: np.ndarray) -> list[FormulaExample]:
        rows = np.flatnonzero(sel)
        rows = rows[np.lexsort((rows, -values[rows]))][:k]
        return [FormulaExample(int(r), str(info.words[r]), info.context(int(r)), float(values[r]), bool(on[r]),
                               bool(fm[r])) for r in rows]

    return pick(on & fm), pick(on & ~fm), pick(~on & fm)


def _histograms(values: np.ndarray, fm: np.ndarray, bins: int = 40) -> tuple[list[float], list[int], list[int]]:
    v = values[np.isfinite(values)]
    if not len(v):
        return [], [], []
    edges = np.histogram_bin_edges(v, bins=bins)
    ok = np.isfinite(values)
    h_in, _ = np.histogram(values[ok & fm], bins=edges)
    h_out, _ = np.histogram(values[ok & ~fm], bins=edges)
    return [float(e) for e in edges], [int(c) for c in h_in], [int(c) for c in h_out]


def explain_neurons(
    source,
    neurons: Neuron | str | Sequence[Neuron | str] | None = None,
    concepts: ConceptMasks | None = None,
    quantile: float = 0.995,
    min_positives: int = 5,
    beam_width: int = 10,
    max_length: int = 3,
    ops: Sequence[str] = OPS,
    lexicons: Mapping | str | None = "builtin",
    min_count: int = 5,
    top_words: int | None = None,
    threshold: float | None = None,
    examples: int = 5,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = 2**24,
    progress: bool | None = None,
) -> NeuronFormula | NeuronResults:
    """Compositional explanations (Mu & Andreas 2020) of neurons of a view (``neurons=None``: every
    column of it): one :class:`NeuronFormula` per neuron, a single one for a single neuron.

    Each neuron is on where its activation is ``>= threshold`` (default: its ``quantile``, raised so
    that at least ``min_positives`` rows are on); the beam search (``beam_width``, formulas of up to
    ``max_length`` concepts joined by ``ops``) runs over ``concepts`` (default :func:`build_concepts` of
    the view with ``lexicons``, ``min_count`` and ``top_words``; pass them to reuse across calls). Every
    result carries the ``examples`` most activating rows the formula matches, those it misses and its
    false alarms. Activations are read in batches of ``max_values // n_rows`` neurons, one view block at a
    time; only the neurons' columns are read. Each neuron's whole column is held while it is explained
    (``n_rows`` floats): its threshold is a quantile of all its values and the search scores masks over
    all rows.
    """
    single = isinstance(neurons, str | Neuron)
    view = as_describe_view(source)
    info = RowInfo(view)
    ns = parse_view_neurons(view, neurons)
    _check_search(beam_width, max_length, ops)
    if examples < 0:
        raise ParameterError(f"examples must be >= 0, got {examples}")
    if concepts is None:
        concepts = build_concepts(view, min_count=min_count, lexicons=lexicons, top_words=top_words)
    if concepts.n_rows != len(view):
        raise ConceptError(f"the concepts cover {concepts.n_rows} rows, the view has {len(view)}")
    per_batch = max(1, int(max_values) // max(len(view), 1))
    out = NeuronResults()
    bar = tqdm(total=len(ns), desc="explaining neurons", disable=None if progress is None else not progress)
    for s in range(0, len(ns), per_batch):
        batch = ns[s : s + per_batch]
        V = gather_columns(view, batch, chunk_rows)
        for j, n in enumerate(batch):
            m, thr = neuron_mask(V[:, j], quantile, min_positives, threshold)
            res = explain_mask(m, concepts, beam_width, max_length, ops, name=str(n), threshold=thr,
                               quantile=None if threshold is not None else float(quantile))
            fm = res.tree.mask(concepts)
            values = V[:, j].astype(np.float64)
            if examples:
                res.matched, res.missed, res.false_alarms = _formula_examples(info, values, m, fm, examples)
            res.hist_edges, res.hist_formula, res.hist_other = _histograms(values, fm)
            out.append(res)
            bar.update(1)
    bar.close()
    return out[0] if single else out


def explain_neuron(source, neuron: Neuron | str, concepts: ConceptMasks | None = None, **kw) -> NeuronFormula:
    """Best AND / OR / AND NOT formula of one neuron by IoU (Mu & Andreas 2020); the keywords are those
    of :func:`explain_neurons`."""
    if not isinstance(neuron, str | Neuron):
        raise ParameterError("explain_neuron takes one neuron; use explain_neurons for several")
    return explain_neurons(source, neuron, concepts, progress=False, **kw)
