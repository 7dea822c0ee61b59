"""Top-activating words and sentences of neurons, and their activation statistics.

Corpus selection (Kadar et al. 2017, "Representation of linguistic form and function in recurrent
neural networks"; Na et al. 2019, "Discovery of natural language concepts in individual units of
CNNs"): a neuron is described by the inputs that activate it most. Everything here streams the
store in row chunks and reads only the layers of the requested neurons, so memory is one chunk plus
O(k) candidates per neuron whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from finegrain.neurons import Neuron
from finegrain.store import ActivationStore, StoreError

DEFAULT_QUANTILES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.995, 1.0)
DEFAULT_CHUNK_ROWS = 8192
# Above this many gathered values (rows x neurons) quantiles switch to a fine-histogram estimate.
MAX_EXACT_VALUES = 2**25


# -- streaming ---------------------------------------------------------------------------------
def _parse_neurons(store: ActivationStore, neurons) -> list[Neuron]:
    if isinstance(neurons, (str, Neuron)):
        neurons = [neurons]
    ns = [Neuron.parse(n) for n in neurons]
    if not ns:
        raise ValueError("no neurons given")
    for n in ns:
        if n.layer not in store.layers:
            raise StoreError(f"unknown layer {n.layer!r} in neuron {n}; store has {list(store.layers)}")
        store.positions(n.layer, [n.unit])  # raises StoreError naming the neuron when it is not stored
    return ns


def str_array(a) -> np.ndarray:
    """Fixed-width unicode copy of a string column (zarr may hand back numpy's variable-width
    ``StringDType``, which does not cast to ``str`` directly)."""
    a = np.asarray(a)
    return a if a.dtype.kind == "U" else np.asarray(a, dtype=object).astype(str)


def _check_chunk(chunk_rows: int) -> int:
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return int(chunk_rows)


def iter_neuron_columns(
    store: ActivationStore, neurons: Sequence[Neuron | str], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[slice, np.ndarray]]:
    """Stream ``(row_slice, X)`` with ``X[:, j]`` the activations of ``neurons[j]`` (float32).

    Only the layers holding the neurons are read, one row chunk at a time.
    """
    ns = _parse_neurons(store, neurons)
    chunk_rows = _check_chunk(chunk_rows)
    by_layer: dict[str, tuple[list[int], list[int]]] = {}
    for j, n in enumerate(ns):
        units, cols = by_layer.setdefault(n.layer, ([], []))
        units.append(n.unit)
        cols.append(j)
    positions = {layer: store.positions(layer, units) for layer, (units, _) in by_layer.items()}
    for start in range(0, store.n_rows, chunk_rows):
        sl = slice(start, min(start + chunk_rows, store.n_rows))
        X = np.empty((sl.stop - sl.start, len(ns)), dtype=np.float32)
        for layer, (_, cols) in by_layer.items():
            X[:, cols] = np.asarray(store[layer][sl], dtype=np.float32)[:, positions[layer]]
        yield sl, X


def gather_columns(
    store: ActivationStore, neurons: Sequence[Neuron | str], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> np.ndarray:
    """All rows of a few neurons, ``[n_rows, len(neurons)]`` float32, read chunk by chunk."""
    ns = _parse_neurons(store, neurons)
    out = np.empty((store.n_rows, len(ns)), dtype=np.float32)
    for sl, X in iter_neuron_columns(store, ns, chunk_rows):
        out[sl] = X
    return out


class _SentenceRows:
    """Row indices of each sentence, built once (rows need not be sorted by sentence)."""

    def __init__(self, store: ActivationStore):
        sid = store.sent_ids
        self.order = np.argsort(sid, kind="stable")
        self.sorted = sid[self.order]

    def rows(self, sent_id: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.sorted, [sent_id, sent_id + 1])
        return self.order[lo:hi]


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

    def result(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((self.rows[:, j], -self.scores[:, j]))
        keep = order[np.isfinite(self.scores[order, j])]
        return self.rows[keep, j], self.scores[keep, j]


class _TopSentences:
    """Per sentence, the best-scoring row of each column (sentence score = max over its words)."""

    def __init__(self, n_sent: int, n: int):
        self.best = np.full((n_sent, n), -np.inf)
        self.row = np.full((n_sent, n), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, row_ids: np.ndarray, sids: np.ndarray) -> None:
        scores = np.where(np.isnan(scores), -np.inf, scores)
        for j in range(scores.shape[1]):
            order = np.lexsort((row_ids, -scores[:, j], sids))  # per sentence: best score, earliest row
            s_sorted = sids[order]
            first = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
            sid = s_sorted[first]
            sc = scores[order[first], j]
            better = sc > self.best[sid, j]
            self.best[sid[better], j] = sc[better]
            self.row[sid[better], j] = row_ids[order[first]][better]

    def result(self, j: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        sids = np.flatnonzero(self.row[:, j] >= 0)
        order = np.lexsort((sids, -self.best[sids, j]))[:k]
        sids = sids[order]
        return self.row[sids, j], self.best[sids, j]


# -- results -----------------------------------------------------------------------------------
@dataclass
class TopExample:
    """One top-activating word (or sentence) of a neuron.

    ``word_pos`` indexes ``sentence`` (-1 for sentence-level rows); ``sentence_activations`` are the
    neuron's activations on every word of the sentence (for heatmaps), ``None`` for sentence rows.
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NeuronStats:
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantiles"] = {str(q): v for q, v in self.quantiles.items()}
        return d


@dataclass
class NeuronDescription:
    """Everything :func:`describe_neurons` knows about one neuron."""

    neuron: str
    stats: NeuronStats
    top: list[TopExample] = field(default_factory=list)
    bottom: list[TopExample] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "neuron": self.neuron,
            "stats": self.stats.to_dict(),
            "top": [e.to_dict() for e in self.top],
            "bottom": [e.to_dict() for e in self.bottom],
        }


def _check_by(by: str) -> None:
    if by not in ("word", "sentence"):
        raise ValueError(f"by must be 'word' or 'sentence', got {by!r}")


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _examples(
    store: ActivationStore,
    neurons: list[Neuron],
    picks: list[tuple[np.ndarray, np.ndarray]],
    with_context: bool,
) -> list[list[TopExample]]:
    """Turn (rows, scores) per neuron into TopExamples, reading each needed row once per layer."""
    words, sids, wpos = store.words, store.sent_ids, store.index("word_pos")
    word_level = store.level != "sentence"
    sent_rows = _SentenceRows(store) if (with_context and word_level) else None
    ctx_rows: dict[int, np.ndarray] = {}
    needed = [np.asarray(r, dtype=np.int64) for r, _ in picks]
    if sent_rows is not None:
        for rows in picks:
            for r in rows[0]:
                sid = int(sids[r])
                if sid not in ctx_rows:
                    ctx_rows[sid] = sent_rows.rows(sid)
        needed += list(ctx_rows.values())
    all_rows = np.unique(np.concatenate(needed)) if needed else np.zeros(0, np.int64)
    # one orthogonal read per layer for every row any example needs
    units_by_layer: dict[str, list[int]] = {}
    for n in neurons:
        units_by_layer.setdefault(n.layer, [])
        if n.unit not in units_by_layer[n.layer]:
            units_by_layer[n.layer].append(n.unit)
    vals: dict[str, np.ndarray] = {}
    if len(all_rows):
        for layer, units in units_by_layer.items():
            vals[layer] = np.asarray(
                store[layer].get_orthogonal_selection((all_rows, np.asarray(store.positions(layer, units)))),
                dtype=np.float32,
            )

    def act(n: Neuron, rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(all_rows, rows)
        return vals[n.layer][pos, units_by_layer[n.layer].index(n.unit)]

    out = []
    for n, (rows, scores) in zip(neurons, picks):
        exs = []
        acts = act(n, rows) if len(rows) else np.zeros(0)
        for rank, (r, s, a) in enumerate(zip(rows, scores, acts)):
            sid = int(sids[r])
            if word_level:
                crow = ctx_rows.get(sid)
                sentence = [str(w) for w in words[crow]] if crow is not None else [str(words[r])]
                sent_acts = [float(v) for v in act(n, crow)] if crow is not None else None
                pos = int(np.flatnonzero(crow == r)[0]) if crow is not None else int(wpos[r])
            else:
                sentence, sent_acts, pos = str(words[r]).split(), None, -1
            exs.append(
                TopExample(
                    neuron=str(n), rank=rank, row=int(r), sent_id=sid,
                    word_pos=pos, word=str(words[r]),
                    activation=float(a), score=float(s), sentence=sentence, sentence_activations=sent_acts,
                )
            )
        out.append(exs)
    return out


def _stream_top(
    store: ActivationStore, neurons: list[Neuron], k: int, by: str, signs: Sequence[str], chunk_rows: int
):
    """One pass: top-k per neuron for each sign ("pos": a, "neg": -a, "abs": |a|)."""
    n = len(neurons)
    sentence_mode = by == "sentence" and store.level != "sentence"
    sids_all = store.sent_ids
    n_sent = int(sids_all.max()) + 1 if len(sids_all) else 0
    accs = {s: (_TopSentences(n_sent, n) if sentence_mode else _TopRows(k, n)) for s in signs}
    for sl, X in iter_neuron_columns(store, neurons, chunk_rows):
        row_ids = np.arange(sl.start, sl.stop)
        for s, acc in accs.items():
            sc = X if s == "pos" else (-X if s == "neg" else np.abs(X))
            if sentence_mode:
                acc.update(sc, row_ids, sids_all[sl])
            else:
                acc.update(sc, row_ids)
    return {
        s: [acc.result(j, k) if sentence_mode else acc.result(j) for j in range(n)] for s, acc in accs.items()
    }


# -- public API --------------------------------------------------------------------------------
def top_activating(
    store: ActivationStore,
    neuron: Neuron | str,
    k: int = 20,
    by: str = "word",
    absolute: bool = False,
    lowest: bool = False,
    with_context: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[TopExample]:
    """The ``k`` words (``by="word"``) or sentences (``by="sentence"``) that activate ``neuron`` most.

    A sentence scores its highest-scoring word (``word``/``word_pos`` name that word). ``absolute``
    ranks by |activation| (useful for neurons that carry information in their sign, e.g. tanh LSTM
    units, Karpathy et al. 2015); ``lowest`` ranks by the most negative activation. Examples come best
    first, ties broken by row order; each carries the full sentence and, with ``with_context``, the
    neuron's activation on every word of it. Streams the store in ``chunk_rows`` blocks.
    """
    _check_by(by)
    k = _check_k(k)
    if absolute and lowest:
        raise ValueError("absolute and lowest are mutually exclusive")
    ns = _parse_neurons(store, [neuron])
    sign = "abs" if absolute else ("neg" if lowest else "pos")
    picks = _stream_top(store, ns, k, by, [sign], _check_chunk(chunk_rows))[sign]
    return _examples(store, ns, picks, with_context)[0]


def _stats_from_values(n: Neuron, v: np.ndarray, bins: int, quantiles: Sequence[float]) -> NeuronStats:
    v = v[np.isfinite(v)].astype(np.float64)
    if not len(v):
        raise ValueError(f"neuron {n} has no finite activations")
    counts, edges = np.histogram(v, bins=bins)
    qs = np.quantile(v, quantiles)
    return NeuronStats(
        neuron=str(n), n=int(len(v)), mean=float(v.mean()), std=float(v.std()), min=float(v.min()),
        max=float(v.max()), quantiles={float(q): float(x) for q, x in zip(quantiles, qs)},
        hist_counts=[int(c) for c in counts], hist_edges=[float(e) for e in edges], exact=True,
    )


def _approx_stats(
    store: ActivationStore, ns: list[Neuron], bins: int, quantiles: Sequence[float], chunk_rows: int
) -> list[NeuronStats]:
    """Two streaming passes (range, then a fine histogram) for too many values to hold at once;
    quantiles interpolate the fine histogram's CDF (error <= one fine bin)."""
    m = len(ns)
    lo, hi = np.full(m, np.inf), np.full(m, -np.inf)
    s1, s2, cnt = np.zeros(m), np.zeros(m), np.zeros(m)
    for _, X in iter_neuron_columns(store, ns, chunk_rows):
        Xf = np.where(np.isfinite(X), X, np.nan).astype(np.float64)
        lo = np.fmin(lo, np.nanmin(Xf, axis=0))
        hi = np.fmax(hi, np.nanmax(Xf, axis=0))
        s1 += np.nansum(Xf, axis=0)
        s2 += np.nansum(Xf**2, axis=0)
        cnt += np.sum(np.isfinite(Xf), axis=0)
    fine = bins * 64
    width = np.where(hi > lo, hi - lo, 1.0)
    H = np.zeros((m, fine), dtype=np.int64)
    for _, X in iter_neuron_columns(store, ns, chunk_rows):
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
        raise ValueError(f"bins must be >= 1, got {bins}")
    qs = [float(q) for q in quantiles]
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles must lie in [0, 1], got {qs}")
    return int(bins), qs


def activation_stats(
    store: ActivationStore,
    neurons: Neuron | str | Sequence[Neuron | str],
    bins: int = 50,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = MAX_EXACT_VALUES,
) -> NeuronStats | list[NeuronStats]:
    """Mean, std, min, max, ``quantiles`` and a ``bins``-bin histogram of one or many neurons.

    One streaming pass gathers the neurons' columns (exact quantiles, ``exact=True``) while
    ``n_rows * n_neurons <= max_values``; beyond that, two passes and a fine histogram (``exact=False``).
    A single neuron gives a :class:`NeuronStats`, a sequence gives a list in the same order.
    """
    single = isinstance(neurons, (str, Neuron))
    ns = _parse_neurons(store, neurons)
    bins, qs = _check_stats_args(bins, quantiles)
    chunk_rows = _check_chunk(chunk_rows)
    if store.n_rows * len(ns) > max_values:
        out = _approx_stats(store, ns, bins, qs, chunk_rows)
    else:
        V = gather_columns(store, ns, chunk_rows)
        out = [_stats_from_values(n, V[:, j], bins, qs) for j, n in enumerate(ns)]
    return out[0] if single else out


def describe_neurons(
    store: ActivationStore,
    neurons: Sequence[Neuron | str],
    k: int = 10,
    by: str = "word",
    bottom: bool = True,
    bins: int = 50,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    with_context: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_values: int = MAX_EXACT_VALUES,
) -> dict[str, NeuronDescription]:
    """Statistics plus top (and, with ``bottom``, most negative) examples for many neurons.

    While ``n_rows * len(neurons) <= max_values`` this is a single pass over the store for all of them
    (the top-k candidates are updated on the same chunks the statistics are gathered from); larger
    requests fall back to streaming statistics. Returns ``{"layer.3:117": NeuronDescription}``.
    """
    _check_by(by)
    k = _check_k(k)
    ns = _parse_neurons(store, neurons)
    bins, qs = _check_stats_args(bins, quantiles)
    chunk_rows = _check_chunk(chunk_rows)
    signs = ["pos", "neg"] if bottom else ["pos"]
    if store.n_rows * len(ns) <= max_values:
        n = len(ns)
        sentence_mode = by == "sentence" and store.level != "sentence"
        sids_all = store.sent_ids
        n_sent = int(sids_all.max()) + 1
        accs = {s: (_TopSentences(n_sent, n) if sentence_mode else _TopRows(k, n)) for s in signs}
        V = np.empty((store.n_rows, n), dtype=np.float32)
        for sl, X in iter_neuron_columns(store, ns, chunk_rows):
            V[sl] = X
            row_ids = np.arange(sl.start, sl.stop)
            for s, acc in accs.items():
                sc = X if s == "pos" else -X
                if sentence_mode:
                    acc.update(sc, row_ids, sids_all[sl])
                else:
                    acc.update(sc, row_ids)
        picks = {
            s: [acc.result(j, k) if sentence_mode else acc.result(j) for j in range(n)]
            for s, acc in accs.items()
        }
        stats = [_stats_from_values(nn, V[:, j], bins, qs) for j, nn in enumerate(ns)]
        del V
    else:
        picks = _stream_top(store, ns, k, by, signs, chunk_rows)
        stats = activation_stats(store, ns, bins, qs, chunk_rows, max_values)
    top = _examples(store, ns, picks["pos"], with_context)
    low = _examples(store, ns, picks["neg"], with_context) if bottom else [[] for _ in ns]
    for exs in low:
        for e in exs:
            e.score = -e.score  # report the activation scale, not the negated ranking key
    return {
        str(n): NeuronDescription(neuron=str(n), stats=st, top=t, bottom=b)
        for n, st, t, b in zip(ns, stats, top, low)
    }
