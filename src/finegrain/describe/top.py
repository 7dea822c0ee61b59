"""Top-activating words and sentences of neurons, and their activation statistics.

Corpus selection (Kadar et al. 2017, "Representation of linguistic form and function in recurrent
neural networks"; Na et al. 2019, "Discovery of natural language concepts in individual units of
CNNs"): a neuron is described by the inputs that activate it most. Every function takes a view
(:class:`~finegrain.store.view.StoreView`, :class:`~finegrain.store.view.ArrayView`, or a whole
:class:`~finegrain.store.ActivationStore`), streams it in row blocks and reads only the columns of the
requested neurons, so memory is one block plus O(k) candidates per neuron whatever the corpus size.

Rows are numbered by their position in the view (for a view of a whole store, the store's row ids).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from finegrain.errors import LayerError, ParameterError
from finegrain.neurons import Neuron
from finegrain.results import Result, ResultList
from finegrain.store import ActivationStore
from finegrain.store.view import StoreView, View

DEFAULT_QUANTILES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.995, 1.0)
DEFAULT_CHUNK_ROWS = 8192
# Above this many gathered values (rows x neurons) quantiles switch to a fine-histogram estimate.
MAX_EXACT_VALUES = 2**25


# -- inputs ------------------------------------------------------------------------------------
def as_describe_view(source) -> View:
    """The view an analysis of this package reads: a view as it is, a store (or its path) as a view of
    all of it."""
    if isinstance(source, View):
        return source
    if isinstance(source, ActivationStore | str | os.PathLike):
        return StoreView(source)
    raise ParameterError(f"expected a store view (store.view(...)), an ArrayView or an ActivationStore, "
                         f"got {type(source).__name__}")


def str_array(a) -> np.ndarray:
    """Fixed-width unicode copy of a string column (zarr may hand back numpy's variable-width
    ``StringDType``, which does not cast to ``str`` directly)."""
    a = np.asarray(a)
    return a if a.dtype.kind == "U" else np.asarray(a, dtype=object).astype(str)


class RowInfo:
    """The index columns of a view's rows (word, sentence, position in it, labels), read once: what
    descriptions need besides activations."""

    def __init__(self, view: View):
        self.view = view
        self.n = len(view)
        self.level = view.level if isinstance(view, StoreView) else "word"

    @cached_property
    def words(self) -> np.ndarray:
        return str_array(self.view.words)

    @cached_property
    def sent_ids(self) -> np.ndarray:
        return np.asarray(self.view.sent_ids)

    @cached_property
    def word_pos(self) -> np.ndarray:
        if isinstance(self.view, StoreView):
            return np.asarray(self.view.column("word_pos"))
        # an array view keeps rows in sentence order: a word's position is its rank inside its sentence
        sid = self.sent_ids
        order = np.argsort(sid, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(sid[order])) + 1]
        rank = np.arange(len(sid)) - np.repeat(first, np.diff(np.r_[first, len(sid)]))
        out = np.empty(len(sid), dtype=np.int64)
        out[order] = rank
        return out

    @property
    def label_columns(self) -> list[str]:
        if isinstance(self.view, StoreView):
            return list(self.view.store.label_columns)
        return [self.view.label] if self.view.has_labels else []

    def labels(self, column: str) -> np.ndarray:
        return str_array(self.view.labels(column))

    @cached_property
    def _sentences(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.sent_ids, kind="stable")
        return order, self.sent_ids[order]

    def sentence_rows(self, sent_id: int) -> np.ndarray:
        """The rows of a sentence, in word order (rows need not be sorted by sentence)."""
        order, srt = self._sentences
        lo, hi = np.searchsorted(srt, [sent_id, sent_id + 1])
        rows = order[lo:hi]
        return rows[np.argsort(self.word_pos[rows], kind="stable")]

    def context(self, row: int, width: int = 8) -> str:
        """``"... left [word] right ..."``: the row's word in its sentence (its text for sentence rows)."""
        if self.level == "sentence":
            return str(self.words[row])
        rows = self.sentence_rows(int(self.sent_ids[row]))
        words = [str(w) for w in self.words[rows]]
        pos = int(np.flatnonzero(rows == row)[0])
        lo, hi = max(0, pos - width), min(len(words), pos + width + 1)
        left = ("... " if lo > 0 else "") + " ".join(words[lo:pos])
        right = " ".join(words[pos + 1 : hi]) + (" ..." if hi < len(words) else "")
        return f"{left} [{words[pos]}] {right}".strip()


def parse_view_neurons(view: View, neurons) -> list[Neuron]:
    """``neurons`` (one, a list, or ``None`` = every column of the view) as neurons of the view."""
    if neurons is None:
        ns = view.neurons
    else:
        if isinstance(neurons, str | Neuron):
            neurons = [neurons]
        ns = [Neuron.parse(n) for n in neurons]
    if not ns:
        raise ParameterError("no neurons given")
    index = view.index
    for n in ns:
        try:
            index.column(n)
        except (KeyError, IndexError) as e:
            raise LayerError(f"neuron {n} is not in this view (its layers: {index.layers})") from e
    return ns


def _check_chunk(chunk_rows: int) -> int:
    if int(chunk_rows) < 1:
        raise ParameterError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return int(chunk_rows)


def iter_neuron_columns(
    source, neurons: Sequence[Neuron | str], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[slice, np.ndarray]]:
    """Stream ``(row_slice, X)`` with ``X[:, j]`` the activations of ``neurons[j]`` (float32).

    Only the columns of the neurons are read (a store reads just their layers), one block at a time.
    """
    view = as_describe_view(source)
    ns = parse_view_neurons(view, neurons)
    sub = view.select(neurons=ns)
    for block in sub.blocks(_check_chunk(chunk_rows)):
        yield slice(block.start, block.stop), np.asarray(block.X, dtype=np.float32)


def gather_columns(source, neurons: Sequence[Neuron | str], chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """All rows of a few neurons, ``[n_rows, len(neurons)]`` float32, read block by block."""
    view = as_describe_view(source)
    ns = parse_view_neurons(view, neurons)
    out = np.empty((len(view), len(ns)), dtype=np.float32)
    for sl, X in iter_neuron_columns(view, ns, chunk_rows):
        out[sl] = X
    return out


def read_rows(view: View, neurons: Sequence[Neuron], rows: np.ndarray) -> np.ndarray:
    """``[len(rows), len(neurons)]`` activations at some rows (sorted, unique) of the view."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return np.zeros((0, len(neurons)), np.float32)
    return np.asarray(view.select(neurons=neurons).subset(rows).materialize(), dtype=np.float32)


# -- top-k accumulators ------------------------------------------------------------------------
class _TopRows:
    """Running top-k rows per column by score; ties go to the earlier row (deterministic, so the
    streamed result does not depend on the chunk size)."""

    def __init__(self, k: int, n: int):
        self.k, self.n = k, n
        self.scores = np.empty((0, n), dtype=np.float64)
        self.rows = np.empty((0, n), dtype=np.int64)

    def update(self, scores: np.ndarray, row_ids: np.ndarray) -> None:
        scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float64)
        S = np.concatenate([self.scores, scores])
        R = np.concatenate([self.rows, np.broadcast_to(row_ids[:, None], scores.shape)])
        if len(S) <= self.k:
            self.scores, self.rows = S, R
            return
        kth = np.partition(S, len(S) - self.k, axis=0)[len(S) - self.k]  # k-th largest per column
        new_s = np.empty((self.k, self.n))
        new_r = np.empty((self.k, self.n), dtype=np.int64)
        for j in range(self.n):
            cand = np.flatnonzero(S[:, j] >= kth[j])
            order = np.lexsort((R[cand, j], -S[cand, j]))[: self.k]
            new_s[:, j] = S[cand[order], j]
            new_r[:, j] = R[cand[order], j]
        self.scores, self.rows = new_s, new_r

    def result(self, j: int, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((self.rows[:, j], -self.scores[:, j]))
        keep = order[np.isfinite(self.scores[order, j])]
        return self.rows[keep, j], self.scores[keep, j]


class _TopSentences:
    """Per sentence, the best-scoring row of each column (sentence score = max over its words)."""

    def __init__(self, sent_ids: np.ndarray, n: int):
        self.uniq, self.inverse = np.unique(sent_ids, return_inverse=True)
        self.best = np.full((len(self.uniq), n), -np.inf)
        self.row = np.full((len(self.uniq), n), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, row_ids: np.ndarray) -> None:
        scores = np.where(np.isnan(scores), -np.inf, scores)
        sids = self.inverse[row_ids]
        for j in range(scores.shape[1]):
            order = np.lexsort((row_ids, -scores[:, j], sids))  # per sentence: best score, earliest row
            s_sorted = sids[order]
            first = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
            sid = s_sorted[first]
            sc = scores[order[first], j]
            better = sc > self.best[sid, j]
            self.best[sid[better], j] = sc[better]
            self.row[sid[better], j] = row_ids[order[first]][better]

    def result(self, j: int, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        sids = np.flatnonzero(self.row[:, j] >= 0)
        order = np.lexsort((self.uniq[sids], -self.best[sids, j]))[:k]  # ties: the earlier sentence id
        sids = sids[order]
        return self.row[sids, j], self.best[sids, j]


def _accumulators(info: RowInfo, n: int, k: int, by: str, signs: Sequence[str]) -> dict:
    sentence_mode = by == "sentence" and info.level != "sentence"
    return {s: (_TopSentences(info.sent_ids, n) if sentence_mode else _TopRows(k, n)) for s in signs}


def _update(accs: dict, X: np.ndarray, row_ids: np.ndarray) -> None:
    for s, acc in accs.items():
        acc.update(X if s == "pos" else (-X if s == "neg" else np.abs(X)), row_ids)


# -- results -----------------------------------------------------------------------------------
@dataclass
class TopExample(Result):
    """One top-activating word (or sentence) of a neuron.

    ``row`` is the row's position in the view; ``word_pos`` indexes ``sentence`` (-1 for sentence-level
    rows); ``sentence_activations`` are the neuron's activations on every word of the sentence (for
    heatmaps), ``None`` for sentence rows or without context.
    """

    neuron: str
    rank: int
    row: int
    sent_id: int
    word_pos: int
    word: str
    activation: float
    score: float
    sentence: list[str]
    sentence_activations: list[float] | None = None

    def context(self, width: int = 8) -> str:
        """``"... left [word] right ..."``."""
        words, pos = self.sentence, self.word_pos
        if pos < 0 or pos >= len(words):
            return " ".join(words)
        lo, hi = max(0, pos - width), min(len(words), pos + width + 1)
        left = ("... " if lo > 0 else "") + " ".join(words[lo:pos])
        right = " ".join(words[pos + 1 : hi]) + (" ..." if hi < len(words) else "")
        return f"{left} [{words[pos]}] {right}".strip()

    def table(self) -> str:
        return f"{self.neuron} #{self.rank + 1}  {self.activation:+.4f}  {self.context()}"


@dataclass
class NeuronStats(Result):
    """Activation distribution of one neuron: moments, quantiles and a histogram."""

    neuron: str
    n: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[float, float]
    hist_counts: list[int]
    hist_edges: list[float]
    exact: bool = True

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["quantiles"] = {float(q): v for q, v in d.get("quantiles", {}).items()}
        return d

    def table(self) -> str:
        head = (f"{self.neuron}  n={self.n}  mean={self.mean:.4g}  std={self.std:.4g}  min={self.min:.4g}  "
                f"max={self.max:.4g}{'' if self.exact else '  (quantiles estimated)'}")
        return head + "\n  quantiles: " + "  ".join(f"{q:g}:{v:.4g}" for q, v in self.quantiles.items())

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain import viz  # heavy (matplotlib): imported only to draw

        return viz.plot_activation_histogram(self, path, title=f"{self.neuron}: activations")


@dataclass
class NeuronDescription(Result):
    """Everything :func:`describe_neurons` knows about one neuron."""

    neuron: str
    stats: NeuronStats
    top: list[TopExample] = field(default_factory=list)
    bottom: list[TopExample] = field(default_factory=list)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["stats"] = NeuronStats.from_dict(d["stats"])
        d["top"] = [TopExample.from_dict(e) for e in d.get("top", [])]
        d["bottom"] = [TopExample.from_dict(e) for e in d.get("bottom", [])]
        return d

    def table(self) -> str:
        lines = [self.stats.table()]
        for title, exs in (("top", self.top), ("bottom", self.bottom)):
            if exs:
                lines.append(f"  {title}:")
                lines += [f"    {e.activation:+9.4f}  {e.context()}" for e in exs]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        return self.stats.plot(path)


class NeuronResults(ResultList):
    """One result per neuron, in the order asked (list in, list out); ``results["layer.3:117"]`` and
    :meth:`get` find a neuron's result by address."""

    def _find(self, neuron) -> int | None:
        n, pos = self.__dict__.get("_pos", (-1, {}))
        if n != len(self):  # (re)built after appends: lookups stay O(1)
            pos = {}
            for i, r in enumerate(self):
                pos.setdefault(getattr(r, "neuron", None), i)
            self.__dict__["_pos"] = (len(self), pos)
        return pos.get(str(Neuron.parse(neuron)))

    def __getitem__(self, key):
        if isinstance(key, str | Neuron):
            i = self._find(key)
            if i is None:
                raise LayerError(f"no result for neuron {key}")
            return list.__getitem__(self, i)
        return list.__getitem__(self, key)

    def __contains__(self, key) -> bool:
        if isinstance(key, str | Neuron):
            return self._find(key) is not None
        return list.__contains__(self, key)

    def get(self, neuron, default=None):
        i = self._find(neuron)
        return default if i is None else list.__getitem__(self, i)

    def neurons(self) -> list[str]:
        return [r.neuron for r in self]

    def to_dict(self) -> dict:
        return {**super().to_dict(), "type": "NeuronResults"}


def _check_by(by: str) -> None:
    if by not in ("word", "sentence"):
        raise ParameterError(f"by must be 'word' or 'sentence', got {by!r}")


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ParameterError(f"k must be >= 1, got {k}")
    return int(k)


def _examples(
    view: View, info: RowInfo, neurons: list[Neuron], picks: list[tuple[np.ndarray, np.ndarray]], with_context: bool
) -> list[list[TopExample]]:
    """Turn (rows, scores) per neuron into TopExamples, reading every needed row once."""
    word_level = info.level != "sentence"
    ctx_rows: dict[int, np.ndarray] = {}
    needed = [np.asarray(r, dtype=np.int64) for r, _ in picks]
    if with_context and word_level:
        for rows, _ in picks:
            for r in rows:
                sid = int(info.sent_ids[r])
                if sid not in ctx_rows:
                    ctx_rows[sid] = info.sentence_rows(sid)
        needed += list(ctx_rows.values())
    all_rows = np.unique(np.concatenate(needed)) if needed else np.zeros(0, np.int64)
    uniq = list(dict.fromkeys(neurons))
    vals = read_rows(view, uniq, all_rows)
    col = {n: j for j, n in enumerate(uniq)}

    def act(n: Neuron, rows: np.ndarray) -> np.ndarray:
        return vals[np.searchsorted(all_rows, rows), col[n]]

    words = info.words
    out = []
    for n, (rows, scores) in zip(neurons, picks):
        exs = []
        acts = act(n, rows) if len(rows) else np.zeros(0)
        for rank, (r, s, a) in enumerate(zip(rows, scores, acts)):
            sid = int(info.sent_ids[r])
            if word_level:
                crow = ctx_rows.get(sid)
                sentence = [str(w) for w in words[crow]] if crow is not None else [str(words[r])]
                sent_acts = [float(v) for v in act(n, crow)] if crow is not None else None
                pos = int(np.flatnonzero(crow == r)[0]) if crow is not None else 0
            else:
                sentence, sent_acts, pos = str(words[r]).split(), None, -1
            exs.append(TopExample(
                neuron=str(n), rank=rank, row=int(r), sent_id=sid, word_pos=pos, word=str(words[r]),
                activation=float(a), score=float(s), sentence=sentence, sentence_activations=sent_acts,
            ))
        out.append(exs)
    return out


def _stream_top(view: View, info: RowInfo, neurons: list[Neuron], k: int, by: str, signs: Sequence[str],
                chunk_rows: int):
    """One pass: top-k per neuron for each sign ("pos": a, "neg": -a, "abs": |a|)."""
    accs = _accumulators(info, len(neurons), k, by, signs)
    for sl, X in iter_neuron_columns(view, neurons, chunk_rows):
        _update(accs, X, np.arange(sl.start, sl.stop))
    return {s: [acc.result(j, k) for j in range(len(neurons))] for s, acc in accs.items()}


# -- public API --------------------------------------------------------------------------------
def top_activating(
    source,
    neuron: Neuron | str,
    k: int = 20,
    by: str = "word",
    absolute: bool = False,
    lowest: bool = False,
    with_context: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ResultList:
    """The ``k`` words (``by="word"``) or sentences (``by="sentence"``) of a view that activate ``neuron``
    most, as a list of :class:`TopExample`.

    A sentence scores its highest-scoring word (``word``/``word_pos`` name that word). ``absolute``
    ranks by |activation| (useful for neurons that carry information in their sign, e.g. tanh LSTM
    units, Karpathy et al. 2015); ``lowest`` ranks by the most negative activation. Examples come best
    first, ties broken by row order; each carries the full sentence and, with ``with_context``, the
    neuron's activation on every word of it. Streams the view in ``chunk_rows`` blocks.
    """
    _check_by(by)
    k = _check_k(k)
    if absolute and lowest:
        raise ParameterError("absolute and lowest are mutually exclusive")
    view = as_describe_view(source)
    info = RowInfo(view)
    ns = parse_view_neurons(view, [neuron])
    sign = "abs" if absolute else ("neg" if lowest else "pos")
    picks = _stream_top(view, info, ns, k, by, [sign], _check_chunk(chunk_rows))[sign]
    return ResultList(_examples(view, info, ns, picks, with_context)[0])


def _stats_from_values(n: Neuron, v: np.ndarray, bins: int, quantiles: Sequence[float]) -> NeuronStats:
    v = v[np.isfinite(v)].astype(np.float64)
    if not len(v):
        raise ParameterError(f"neuron {n} has no finite activations")
    counts, edges = np.histogram(v, bins=bins)
    qs = np.quantile(v, quantiles)
    return NeuronStats(
        neuron=str(n), n=int(len(v)), mean=float(v.mean()), std=float(v.std()), min=float(v.min()),
        max=float(v.max()), quantiles={float(q): float(x) for q, x in zip(quantiles, qs)},
        hist_counts=[int(c) for c in counts], hist_edges=[float(e) for e in edges], exact=True,
    )


def _approx_stats(view: View, ns: list[Neuron], bins: int, quantiles: Sequence[float],
                  chunk_rows: int) -> list[NeuronStats]:
    """Two streaming passes (range, then a fine histogram) for too many values to hold at once;
    quantiles interpolate the fine histogram's CDF (error <= one fine bin)."""
    m = len(ns)
    lo, hi = np.full(m, np.inf), np.full(m, -np.inf)
    s1, s2, cnt = np.zeros(m), np.zeros(m), np.zeros(m)
    for _, X in iter_neuron_columns(view, ns, chunk_rows):
        Xf = np.where(np.isfinite(X), X, np.nan).astype(np.float64)
        lo = np.fmin(lo, np.nanmin(Xf, axis=0))
        hi = np.fmax(hi, np.nanmax(Xf, axis=0))
        s1 += np.nansum(Xf, axis=0)
        s2 += np.nansum(Xf**2, axis=0)
        cnt += np.sum(np.isfinite(Xf), axis=0)
    fine = bins * 64
    width = np.where(hi > lo, hi - lo, 1.0)
    H = np.zeros((m, fine), dtype=np.int64)
    for _, X in iter_neuron_columns(view, ns, chunk_rows):
        ok = np.isfinite(X)
        b = np.clip(((X - lo) / width * fine).astype(np.int64), 0, fine - 1)
        flat = (b + np.arange(m) * fine)[ok]
        H += np.bincount(flat, minlength=m * fine).reshape(m, fine)
    out = []
    for j, n in enumerate(ns):
        edges_f = lo[j] + np.arange(fine + 1) * width[j] / fine
        cdf = np.r_[0, np.cumsum(H[j])] / max(cnt[j], 1)
        qv = [float(np.interp(q, cdf, edges_f)) if 0 < q < 1 else float(lo[j] if q <= 0 else hi[j])
              for q in quantiles]
        mean = s1[j] / max(cnt[j], 1)
        out.append(NeuronStats(
            neuron=str(n), n=int(cnt[j]), mean=float(mean),
            std=float(np.sqrt(max(s2[j] / max(cnt[j], 1) - mean**2, 0.0))), min=float(lo[j]), max=float(hi[j]),
            quantiles={float(q): x for q, x in zip(quantiles, qv)},
            hist_counts=[int(c) for c in H[j].reshape(bins, 64).sum(1)],
            hist_edges=[float(e) for e in edges_f[::64]], exact=False,
        ))
    return out


def _check_stats_args(bins: int, quantiles: Sequence[float]) -> tuple[int, list[float]]:
    if int(bins) < 1:
        raise ParameterError(f"bins must be >= 1, got {bins}")
    qs = [float(q) for q in quantiles]
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ParameterError(f"quantiles must lie in [0, 1], got {qs}")
    return int(bins), qs


def activation_stats(
    source,
    neurons: Neuron | str | Sequence[Neuron | str] | None = None,
    bins: int = 50,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = MAX_EXACT_VALUES,
) -> NeuronStats | NeuronResults:
    """Mean, std, min, max, ``quantiles`` and a ``bins``-bin histogram of one or many neurons of a view
    (``neurons=None``: every column of the view).

    One streaming pass gathers the neurons' columns (exact quantiles, ``exact=True``) while
    ``n_rows * n_neurons <= max_values``; beyond that, two passes and a fine histogram (``exact=False``).
    A single neuron gives a :class:`NeuronStats`, a sequence gives a list in the same order.
    """
    single = isinstance(neurons, str | Neuron)
    view = as_describe_view(source)
    ns = parse_view_neurons(view, neurons)
    bins, qs = _check_stats_args(bins, quantiles)
    chunk_rows = _check_chunk(chunk_rows)
    if len(view) * len(ns) > max_values:
        out = _approx_stats(view, ns, bins, qs, chunk_rows)
    else:
        V = gather_columns(view, ns, chunk_rows)
        out = [_stats_from_values(n, V[:, j], bins, qs) for j, n in enumerate(ns)]
    return out[0] if single else NeuronResults(out)


def describe_neurons(
    source,
    neurons: Neuron | str | Sequence[Neuron | str] | None = None,
    k: int = 10,
    by: str = "word",
    bottom: bool = True,
    bins: int = 50,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    with_context: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = MAX_EXACT_VALUES,
) -> NeuronDescription | NeuronResults:
    """Statistics plus top (and, with ``bottom``, most negative) examples of neurons of a view
    (``neurons=None``: every column of it). One neuron gives a :class:`NeuronDescription`, a list gives
    a :class:`NeuronResults` in the same order (``results["layer.3:117"]`` looks one up).

    While ``n_rows * len(neurons) <= max_values`` this is a single pass over the view for all of them
    (the top-k candidates are updated on the same blocks the statistics are gathered from); larger
    requests fall back to streaming statistics.
    """
    _check_by(by)
    k = _check_k(k)
    single = isinstance(neurons, str | Neuron)
    view = as_describe_view(source)
    info = RowInfo(view)
    ns = parse_view_neurons(view, neurons)
    bins, qs = _check_stats_args(bins, quantiles)
    chunk_rows = _check_chunk(chunk_rows)
    signs = ["pos", "neg"] if bottom else ["pos"]
    if len(view) * len(ns) <= max_values:
        accs = _accumulators(info, len(ns), k, by, signs)
        V = np.empty((len(view), len(ns)), dtype=np.float32)
        for sl, X in iter_neuron_columns(view, ns, chunk_rows):
            V[sl] = X
            _update(accs, X, np.arange(sl.start, sl.stop))
        picks = {s: [acc.result(j, k) for j in range(len(ns))] for s, acc in accs.items()}
        stats = [_stats_from_values(nn, V[:, j], bins, qs) for j, nn in enumerate(ns)]
        del V
    else:
        picks = _stream_top(view, info, ns, k, by, signs, chunk_rows)
        stats = list(activation_stats(view, ns, bins, qs, chunk_rows, max_values))
    top = _examples(view, info, ns, picks["pos"], with_context)
    low = _examples(view, info, ns, picks["neg"], with_context) if bottom else [[] for _ in ns]
    for exs in low:
        for e in exs:
            e.score = -e.score  # report the activation scale, not the negated ranking key
    out = [NeuronDescription(neuron=str(n), stats=st, top=t, bottom=b) for n, st, t, b in zip(ns, stats, top, low)]
    return out[0] if single else NeuronResults(out)
