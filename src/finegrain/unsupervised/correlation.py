"""Streaming second-order statistics and cross-model neuron correlation (Bau et al. 2019).

Everything here is computed in one pass over row chunks of the inputs (store views, read block by block;
in-memory arrays), in float64, with memory ``O(d^2)`` for ``d`` neurons and never ``O(rows)``.

Bau et al. 2019, *Identifying and Controlling Important Neurons in Neural Machine Translation*:

* **MaxCorr** ranks neuron ``n`` of model ``m`` by ``max_{m' != m} max_{n'} |rho(n, n')|``;
* **MinCorr** by ``min_{m' != m} max_{n'} |rho(n, n')|`` (a neuron must be matched in *every* model);
* **LinReg** by how well each other model's full representation predicts the neuron with a linear
  (ridge) regression. We score held-out ``R^2`` (``1 - MSE / Var``; the paper ranks by regression
  error, and ``R^2`` is the error normalised by the neuron's variance so that neurons of different
  scales are comparable) and average it over the other models; higher = better predicted = ranked first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finegrain.errors import AlignmentError, LayerError, ParameterError
from finegrain.neurons import Neuron
from finegrain.rank import Ranking
from finegrain.results import Result
from finegrain.store import ActivationStore
from finegrain.store.view import StoreView, View

DEFAULT_CHUNK_ROWS = 4096


# ----------------------------------------------------------------------------------------------
# Inputs: views (stores), arrays, or {layer: array} dicts, all read chunk by chunk
# ----------------------------------------------------------------------------------------------
class Representation:
    """One model's activations, read in row chunks: a store view (:class:`StoreView` /
    :class:`ArrayView`; a whole :class:`ActivationStore` is viewed as one), optionally restricted to
    ``layers``; a ``[rows, d]`` array (its neurons are addressed ``name:unit``); or a
    ``{layer: [rows, d]}`` dict."""

    def __init__(self, source, layers: Sequence[str] | str | None = None, name: str | None = None):
        if isinstance(source, Representation):
            self.__dict__.update(source.__dict__)
            self._sub = {}
            if layers is not None:
                self.layers = self._pick(layers)
            if name is not None:
                self.name = name
            return
        if isinstance(layers, str):
            layers = [layers]
        self.view: View | None = None
        self.arrays: dict[str, np.ndarray] | None = None
        self._sub: dict[tuple[str, ...], View] = {}
        if isinstance(source, ActivationStore | str | os.PathLike):
            source = StoreView(source)
        if isinstance(source, View):
            self.view = source
            index = source.index
            self.sizes = {lay: int(index.sizes[lay]) for lay in index.layers}
            self.n_rows = len(source)
            default_name = Path(source.path).name.removesuffix(".fgstore") if isinstance(source, StoreView) else "x"
        elif isinstance(source, Mapping):
            if not source:
                raise ParameterError("empty {layer: array} mapping")
            self.arrays = {str(k): _as_2d(v, k) for k, v in source.items()}
            self.sizes = {k: v.shape[1] for k, v in self.arrays.items()}
            rows = {v.shape[0] for v in self.arrays.values()}
            if len(rows) != 1:
                raise AlignmentError(f"arrays of one representation have different row counts {sorted(rows)}")
            self.n_rows = rows.pop()
            default_name = "x"
        else:
            arr = _as_2d(source, name or "x")
            key = name or "x"
            self.arrays = {key: arr}
            self.sizes = {key: arr.shape[1]}
            self.n_rows = arr.shape[0]
            default_name = key
        self.name = name or default_name
        self.layers = list(self.sizes) if layers is None else self._pick(layers)
        if self.n_rows == 0:
            raise ParameterError(f"representation {self.name!r} has no rows")

    @property
    def store_view(self) -> StoreView | None:
        """The store view behind this representation, if it reads a store."""
        return self.view if isinstance(self.view, StoreView) else None

    def _pick(self, layers: Sequence[str] | str) -> list[str]:
        layers = [layers] if isinstance(layers, str) else list(layers)
        unknown = [lay for lay in layers if lay not in self.sizes]
        if unknown:
            raise LayerError(f"{self.name}: unknown layer(s) {unknown}; have {list(self.sizes)}")
        if not layers:
            raise ParameterError(f"{self.name}: no layers selected")
        return layers

    def __repr__(self) -> str:
        return f"Representation({self.name!r}, rows={self.n_rows}, layers={self.layers})"

    def dim(self, layers: Sequence[str] | None = None) -> int:
        return sum(self.sizes[lay] for lay in (layers or self.layers))

    def neurons(self, layers: Sequence[str] | None = None) -> list[Neuron]:
        layers = list(layers or self.layers)
        if self.view is not None:  # a view may hold only some units of a layer, in any order
            index = self.view.index
            return [n for lay in layers for n in index.neurons(index.layer_columns(lay))]
        return [Neuron(lay, u) for lay in layers for u in range(self.sizes[lay])]

    def _layer_view(self, layers: Sequence[str]) -> View:
        """The view of exactly these layers' columns (made once: a store then reads only those layers)."""
        key = tuple(layers)
        if key not in self._sub:
            index = self.view.index
            cols = [c for lay in layers for c in index.layer_columns(lay)]
            self._sub[key] = self.view if cols == list(range(index.total)) else self.view.select(columns=cols)
        return self._sub[key]

    def read(self, rows: slice, layers: Sequence[str] | None = None) -> np.ndarray:
        """Rows ``rows`` of the given layers, concatenated, as float64."""
        layers = list(layers or self.layers)
        if self.view is not None:
            return np.asarray(self._layer_view(layers).read(rows.start, rows.stop), dtype=np.float64)
        assert self.arrays is not None
        parts = [np.asarray(self.arrays[lay][rows], dtype=np.float64) for lay in layers]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    @property
    def sent_ids(self) -> np.ndarray | None:
        return None if self.view is None else np.asarray(self.view.sent_ids)

    def load(self, layers: Sequence[str] | None = None, rows=None, dtype=np.float32) -> np.ndarray:
        """Load (a row subset of) the matrix into memory: only for the methods that need it."""
        layers = list(layers or self.layers)
        if self.view is not None:
            v = self._layer_view(layers)
            return np.asarray(v.materialize() if rows is None else v.subset(np.sort(rows)).materialize(), dtype=dtype)
        assert self.arrays is not None
        sel = slice(None) if rows is None else rows
        return np.concatenate([np.asarray(self.arrays[lay][sel], dtype=dtype) for lay in layers], axis=1)


def _as_2d(arr, name) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ParameterError(f"{name}: expected a [rows, neurons] matrix, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ParameterError(f"{name}: expected a numeric matrix, got dtype {a.dtype}")
    return a


def check_aligned(*sources) -> None:
    """Raise :class:`AlignmentError` unless all inputs hold the same rows.

    Row counts must agree; for store views the level and the sentence ids and word positions of the rows
    must agree too (two stores extracted from the same corpus at the same level do)."""
    reps = [s if isinstance(s, Representation) else Representation(s) for s in sources]
    if len(reps) < 2:
        return
    first = reps[0]
    for other in reps[1:]:
        if other.n_rows != first.n_rows:
            raise AlignmentError(
                f"{first.name!r} has {first.n_rows} rows but {other.name!r} has {other.n_rows}: rows must be "
                "aligned (activations of the same corpus, same level); re-extract both on one corpus"
            )
        a_view, b_view = first.store_view, other.store_view
        if a_view is not None and b_view is not None:
            if a_view.level != b_view.level:
                raise AlignmentError(
                    f"{first.name!r} is {a_view.level}-level but {other.name!r} is {b_view.level}-level"
                )
            for col in ("sent_id", "word_pos"):
                a, b = a_view.column(col), b_view.column(col)
                if not np.array_equal(a, b):
                    bad = int(np.flatnonzero(a != b)[0])
                    raise AlignmentError(
                        f"{first.name!r} and {other.name!r} have the same number of rows but different "
                        f"{col} (first difference at row {bad}: {a[bad]} vs {b[bad]}); they were not "
                        "extracted from the same corpus"
                    )


def iter_aligned(
    groups: Sequence[tuple[Representation, Sequence[str] | None]], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """Stream ``(row_slice, [block of each group])`` over aligned representations (float64 blocks)."""
    if chunk_rows <= 0:
        raise ParameterError(f"chunk_rows must be positive, got {chunk_rows}")
    check_aligned(*{id(r): r for r, _ in groups}.values())
    n = groups[0][0].n_rows
    for start in range(0, n, chunk_rows):
        sl = slice(start, min(start + chunk_rows, n))
        yield sl, [rep.read(sl, layers) for rep, layers in groups]


# ----------------------------------------------------------------------------------------------
# Running moments
# ----------------------------------------------------------------------------------------------
class BlockMoments:
    """Running means and centred (co-)moments of several column groups, one chunk at a time.

    ``dims[i]`` is the width of group *i*; ``pairs`` says which cross blocks ``S_ij = sum_t (x_i -
    mean_i)(x_j - mean_j)^T`` to keep (``(i, i)`` keeps the full within-group scatter); per-column
    variances are always kept. Chunks are merged with the pairwise update of Chan et al. (1979):
    ``S += S_chunk + (n k / (n + k)) d_i d_j^T`` with ``d`` the chunk-mean minus running-mean
    difference, i.e. the one-pass sums formula without the catastrophic cancellation of raw
    ``sum x y - n mean_x mean_y`` when activations have large means.
    """

    def __init__(self, dims: Sequence[int], pairs: Iterable[tuple[int, int]] = ()):
        self.dims = [int(d) for d in dims]
        self.n = 0
        self.mean = [np.zeros(d) for d in self.dims]
        self.m2 = [np.zeros(d) for d in self.dims]
        self.cross: dict[tuple[int, int], np.ndarray] = {}
        for i, j in pairs:
            if not (0 <= i < len(self.dims) and 0 <= j < len(self.dims)):
                raise ParameterError(f"pair {(i, j)} out of range for {len(self.dims)} groups")
            key = (min(i, j), max(i, j))
            self.cross[key] = np.zeros((self.dims[key[0]], self.dims[key[1]]))

    def update(self, blocks: Sequence[np.ndarray]) -> None:
        if len(blocks) != len(self.dims):
            raise ParameterError(f"expected {len(self.dims)} blocks, got {len(blocks)}")
        k = blocks[0].shape[0]
        if k == 0:
            return
        centred, delta = [], []
        for i, b in enumerate(blocks):
            if b.shape != (k, self.dims[i]):
                raise ParameterError(f"block {i} has shape {b.shape}, expected {(k, self.dims[i])}")
            b = np.asarray(b, dtype=np.float64)
            mu = b.mean(axis=0)
            centred.append(b - mu)
            delta.append(mu - self.mean[i])
        w = self.n * k / (self.n + k)
        for (i, j), S in self.cross.items():
            S += centred[i].T @ centred[j]
            S += w * np.outer(delta[i], delta[j])
        for i in range(len(self.dims)):
            self.m2[i] += np.einsum("ij,ij->j", centred[i], centred[i]) + w * delta[i] ** 2
            self.mean[i] += delta[i] * (k / (self.n + k))
        self.n += k

    def _need(self) -> None:
        if self.n < 2:
            raise ParameterError(f"need at least 2 rows for second-order statistics, have {self.n}")

    def scatter(self, i: int, j: int) -> np.ndarray:
        """Centred scatter ``S_ij`` (``n`` times the covariance)."""
        self._need()
        if (i, j) in self.cross:
            return self.cross[(i, j)]
        if (j, i) in self.cross:
            return self.cross[(j, i)].T
        raise ParameterError(f"block {(i, j)} was not accumulated (pairs: {sorted(self.cross)})")

    def cov(self, i: int, j: int) -> np.ndarray:
        return self.scatter(i, j) / self.n

    def var(self, i: int) -> np.ndarray:
        self._need()
        return self.m2[i] / self.n

    def corr(self, i: int, j: int) -> np.ndarray:
        """Pearson correlation block; a constant neuron gets correlation 0 with everything."""
        S = self.scatter(i, j)
        sd_i, sd_j = np.sqrt(self.m2[i]), np.sqrt(self.m2[j])
        denom = np.outer(sd_i, sd_j)
        out = np.zeros_like(S)
        np.divide(S, denom, out=out, where=denom > 1e-12 * max(float(denom.max(initial=0.0)), 1e-300))
        return np.clip(out, -1.0, 1.0)


def accumulate(
    groups: Sequence[tuple[Representation, Sequence[str] | None]],
    pairs: Iterable[tuple[int, int]],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    row_mask: np.ndarray | None = None,
    progress: str | None = None,
) -> BlockMoments | tuple[BlockMoments, BlockMoments]:
    """One pass over aligned groups. With ``row_mask`` returns ``(moments of rows where the mask is
    False, moments where it is True)`` (e.g. train / held-out)."""
    pairs = list(pairs)
    dims = [rep.dim(layers) for rep, layers in groups]
    mom = BlockMoments(dims, pairs)
    mom2 = BlockMoments(dims, pairs) if row_mask is not None else None
    n = groups[0][0].n_rows
    bar = tqdm(total=n, desc=progress or "moments", unit="row", disable=None if progress else True)
    for sl, blocks in iter_aligned(groups, chunk_rows):
        if row_mask is None:
            mom.update(blocks)
        else:
            m = row_mask[sl]
            mom.update([b[~m] for b in blocks])
            mom2.update([b[m] for b in blocks])  # type: ignore[union-attr]
        bar.update(sl.stop - sl.start)
    bar.close()
    return mom if mom2 is None else (mom, mom2)


# ----------------------------------------------------------------------------------------------
# Neuron-by-neuron correlation
# ----------------------------------------------------------------------------------------------
def _neurons(items) -> list[Neuron]:
    return [Neuron.parse(n) for n in items]


@dataclass
class NeuronCorrelation(Result):
    """Pearson correlations ``corr[i, j]`` between ``neurons_a[i]`` and ``neurons_b[j]``."""

    corr: np.ndarray
    neurons_a: list[Neuron]
    neurons_b: list[Neuron]

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["corr"] = np.asarray(d["corr"], dtype=np.float64).reshape(len(d["neurons_a"]), len(d["neurons_b"]))
        d["neurons_a"], d["neurons_b"] = _neurons(d["neurons_a"]), _neurons(d["neurons_b"])
        return d

    def best_match(self) -> list[tuple[Neuron, Neuron, float]]:
        """For each neuron of A: its most |correlated| neuron of B and that correlation."""
        j = np.abs(self.corr).argmax(axis=1)
        return [(n, self.neurons_b[k], float(self.corr[i, k])) for i, (n, k) in enumerate(zip(self.neurons_a, j))]

    def table(self, k: int = 20) -> str:
        best = sorted(self.best_match(), key=lambda t: -abs(t[2]))[:k]
        lines = [f"Pearson correlation of {len(self.neurons_a)} x {len(self.neurons_b)} neurons; best matches:"]
        lines += [f"  {str(a):<22} {str(b):<22} {r:+.3f}" for a, b, r in best]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz import plot_matrix  # heavy (matplotlib): imported only to draw

        return plot_matrix(self.corr, path, title="Pearson correlation", vmin=-1, vmax=1, center=0.0,
                           row_labels=[str(n) for n in self.neurons_a] if len(self.neurons_a) <= 40 else None,
                           col_labels=[str(n) for n in self.neurons_b] if len(self.neurons_b) <= 40 else None)


def correlation_matrix(
    a,
    b=None,
    layers_a: Sequence[str] | str | None = None,
    layers_b: Sequence[str] | str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> NeuronCorrelation:
    """Pearson correlation between every neuron of ``a`` and every neuron of ``b`` (``b=None``: of
    ``a`` with itself), streamed in one pass over row chunks in float64."""
    ra = Representation(a, layers_a, name="a")
    if b is None:
        mom = accumulate([(ra, None)], [(0, 0)], chunk_rows)
        assert isinstance(mom, BlockMoments)
        return NeuronCorrelation(mom.corr(0, 0), ra.neurons(), ra.neurons())
    rb = Representation(b, layers_b, name="b")
    mom = accumulate([(ra, None), (rb, None)], [(0, 1)], chunk_rows)
    assert isinstance(mom, BlockMoments)
    return NeuronCorrelation(mom.corr(0, 1), ra.neurons(), rb.neurons())


# ----------------------------------------------------------------------------------------------
# Rankings (Bau et al. 2019)
# ----------------------------------------------------------------------------------------------
@dataclass
class CorrelationRanking(Result):
    """Neurons of one model ordered best first by ``scores`` (descending)."""

    neurons: list[Neuron]
    scores: np.ndarray
    method: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if len(self.neurons) != len(self.scores):
            raise ParameterError(f"{len(self.neurons)} neurons but {len(self.scores)} scores")

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["neurons"] = _neurons(d["neurons"])
        d["scores"] = np.asarray([np.nan if v is None else v for v in d["scores"]], dtype=np.float64)
        return d

    def __len__(self) -> int:
        return len(self.neurons)

    def top(self, k: int) -> list[Neuron]:
        return list(self.neurons[: max(0, int(k))])

    def score_of(self, neuron: Neuron | str) -> float:
        return float(self.scores[self.neurons.index(Neuron.parse(neuron))])

    def to_ranking(self):
        """Convert to :class:`finegrain.rank.Ranking`."""
        return Ranking(
            list(self.neurons),
            [float(s) for s in self.scores],
            self.method,
            meta={"model": self.model, "source": "finegrain.unsupervised (Bau et al. 2019)"},
        )

    def to_dict(self, k: int | None = None) -> dict:
        k = len(self) if k is None else k
        return {
            "type": type(self).__name__,
            "method": self.method,
            "model": self.model,
            "neurons": [str(n) for n in self.neurons[:k]],
            "scores": [float(s) for s in self.scores[:k]],
        }

    def table(self, k: int = 20) -> str:
        lines = [f"{self.method} ranking of {self.model} ({len(self)} neurons; Bau et al. 2019)"]
        lines += [f"  {i + 1:>3} {str(n):<24} {s:.4f}" for i, (n, s) in enumerate(zip(self.neurons[:k], self.scores))]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_score_curves  # heavy (matplotlib): imported only to draw

        return plot_score_curves({f"{self.model} {self.method}": self.scores}, path, ylabel=self.method)


def _ranking(neurons: list[Neuron], scores: np.ndarray, method: str, model: str) -> CorrelationRanking:
    # stable sort on -score keeps the natural neuron order among ties
    order = np.argsort(-scores, kind="stable")
    return CorrelationRanking([neurons[i] for i in order], scores[order], method, model)


def _pair_key(pair: tuple[str, str]) -> str:
    return f"{pair[0]}|{pair[1]}"


@dataclass
class CrossModelCorrelation(Result):
    """Result of :func:`cross_model_correlation`: per model, a ranking per method, plus the
    per-neuron best |corr| against each other model (``max_corr[(m, m')]``, unordered neurons) and the
    LinReg held-out R^2 (``linreg_r2[(m, m')]``: ``m``'s neurons predicted from ``m'``)."""

    names: list[str]
    neurons: dict[str, list[Neuron]]
    rankings: dict[str, dict[str, CorrelationRanking]]
    max_corr: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    linreg_r2: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def ranking(self, model: str, method: str = "maxcorr") -> CorrelationRanking:
        if model not in self.rankings:
            raise ParameterError(f"unknown model {model!r}; have {self.names}")
        if method not in self.rankings[model]:
            raise ParameterError(f"no {method!r} ranking; have {list(self.rankings[model])}")
        return self.rankings[model][method]

    def to_dict(self, k: int | None = None) -> dict:
        """JSON data; ``k`` keeps only the top ``k`` neurons of each ranking."""
        return {
            "type": type(self).__name__,
            "names": list(self.names),
            "neurons": {m: [str(n) for n in ns] for m, ns in self.neurons.items()},
            "rankings": {m: {meth: r.to_dict(k) for meth, r in d.items()} for m, d in self.rankings.items()},
            "max_corr": {_pair_key(p): [float(x) for x in v] for p, v in self.max_corr.items()},
            "linreg_r2": {_pair_key(p): [float(x) for x in v] for p, v in self.linreg_r2.items()},
        }

    @classmethod
    def from_dict(cls, d) -> CrossModelCorrelation:
        def pairs(x):
            return {tuple(k.split("|", 1)): np.asarray(v, dtype=np.float64) for k, v in (x or {}).items()}

        return cls(list(d["names"]), {m: _neurons(ns) for m, ns in d["neurons"].items()},
                   {m: {meth: CorrelationRanking.from_dict(r) for meth, r in by.items()}
                    for m, by in d["rankings"].items()},
                   pairs(d.get("max_corr")), pairs(d.get("linreg_r2")))

    def table(self, k: int = 10) -> str:
        lines = [f"cross-model neuron correlation of {', '.join(self.names)} (Bau et al. 2019)"]
        for model, by in self.rankings.items():
            for method, r in by.items():
                top = ", ".join(f"{n} ({s:.3f})" for n, s in zip(r.neurons[:k], r.scores[:k]))
                lines.append(f"{model} {method}: {top}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_score_curves  # heavy (matplotlib): imported only to draw

        return plot_score_curves({f"{m} {meth}": r.scores for m, by in self.rankings.items() for meth, r in by.items()},
                                 path, ylabel="score")


METHODS = ("maxcorr", "mincorr", "linreg")


def cross_model_correlation(
    sources: Sequence,
    layers: Sequence[str] | Sequence[Sequence[str]] | str | None = None,
    names: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    ridge: float = 1e-3,
    holdout: float = 0.2,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> CrossModelCorrelation:
    """MaxCorr / MinCorr / LinReg rankings of every model's neurons against the other models
    (Bau et al. 2019). ``sources``: two or more aligned store views (or stores) / arrays /
    ``{layer: array}`` dicts (or layers of one model passed as separate inputs). ``layers``: one list for
    every source, or one list per source.

    LinReg fits ``neuron ~ other model's representation`` by ridge regression (penalty ``ridge`` times
    the mean feature variance) from streamed normal equations on a train part and scores ``R^2`` on
    the held-out ``holdout`` fraction of sentences (rows for arrays); the score is the mean over other
    models. ``holdout=0`` scores in-sample.

    Memory: the full scatter of the concatenation of all models' neurons, ``O((sum d)^2)``.
    """
    if len(sources) < 2:
        raise ParameterError("cross-model correlation needs at least two models")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ParameterError(f"unknown method(s) {bad}; choose from {METHODS}")
    if not 0 <= holdout < 1:
        raise ParameterError(f"holdout must be in [0, 1), got {holdout}")
    if ridge < 0:
        raise ParameterError(f"ridge must be >= 0, got {ridge}")
    per_source = _per_source_layers(layers, len(sources))
    names = list(names) if names is not None else None
    reps = [Representation(s, per_source[i], None if names is None else names[i]) for i, s in enumerate(sources)]
    if names is None:
        _dedupe_names(reps)
    names = [r.name for r in reps]
    if len(set(names)) != len(names):
        raise ParameterError(f"model names must be unique, got {names}")
    M = len(reps)
    check_aligned(*reps)
    want_lin = "linreg" in methods
    pairs = [(i, j) for i in range(M) for j in range(i + 1, M)]
    if want_lin:
        pairs += [(i, i) for i in range(M)]
    groups = [(r, None) for r in reps]
    mask = _holdout_mask(reps[0], holdout, seed) if want_lin and holdout > 0 else None
    desc = "cross-model moments" if progress else None
    if mask is None:
        train = accumulate(groups, pairs, chunk_rows, progress=desc)
        test = train
    else:
        train, test = accumulate(groups, pairs, chunk_rows, row_mask=mask, progress=desc)
    assert isinstance(train, BlockMoments) and isinstance(test, BlockMoments)
    corr_mom = _merge(train, test) if mask is not None else train

    result = CrossModelCorrelation(names, {r.name: r.neurons() for r in reps}, {r.name: {} for r in reps})
    for i, ri in enumerate(reps):
        best = []
        for j in range(M):
            if j == i:
                continue
            c = np.abs(corr_mom.corr(i, j))
            result.max_corr[(ri.name, reps[j].name)] = c.max(axis=1)
            best.append(c.max(axis=1))
        best_arr = np.stack(best)
        if "maxcorr" in methods:
            result.rankings[ri.name]["maxcorr"] = _ranking(ri.neurons(), best_arr.max(0), "maxcorr", ri.name)
        if "mincorr" in methods:
            result.rankings[ri.name]["mincorr"] = _ranking(ri.neurons(), best_arr.min(0), "mincorr", ri.name)
        if want_lin:
            r2s = []
            for j in range(M):
                if j == i:
                    continue
                r2 = _ridge_r2(train, test, x=j, y=i, ridge=ridge)
                result.linreg_r2[(ri.name, reps[j].name)] = r2
                r2s.append(r2)
            result.rankings[ri.name]["linreg"] = _ranking(ri.neurons(), np.mean(r2s, axis=0), "linreg", ri.name)
    return result


def _per_source_layers(layers, n: int) -> list:
    if layers is None or isinstance(layers, str):
        return [layers] * n
    layers = list(layers)
    if layers and all(not isinstance(x, str) for x in layers):
        if len(layers) != n:
            raise ParameterError(f"got {len(layers)} layer lists for {n} sources")
        return layers
    return [layers] * n


def _dedupe_names(reps: list[Representation]) -> None:
    seen: dict[str, int] = {}
    for i, r in enumerate(reps):
        if r.store_view is None or r.name in seen:
            r.name = f"m{i}" if r.store_view is None else f"{r.name}#{i}"
        seen[r.name] = i


def _holdout_mask(rep: Representation, frac: float, seed: int) -> np.ndarray:
    """Held-out rows chosen by sentence for stores (no sentence is split), by row for arrays."""
    rng = np.random.default_rng(seed)
    sids = rep.sent_ids
    if sids is None:
        mask = np.zeros(rep.n_rows, dtype=bool)
        mask[rng.permutation(rep.n_rows)[: max(1, int(round(frac * rep.n_rows)))]] = True
        return mask
    uniq = np.unique(sids)
    held = rng.permutation(uniq)[: max(1, int(round(frac * len(uniq))))]
    if len(held) == len(uniq):
        raise ParameterError("holdout leaves no training sentences; lower holdout")
    return np.isin(sids, held)


def _merge(a: BlockMoments, b: BlockMoments) -> BlockMoments:
    """Moments of the union of two disjoint row sets (Chan et al. merge)."""
    out = BlockMoments(a.dims, list(a.cross))
    n = a.n + b.n
    w = a.n * b.n / n if n else 0.0
    out.n = n
    for i in range(len(a.dims)):
        d = b.mean[i] - a.mean[i]
        out.mean[i] = a.mean[i] + d * (b.n / n)
        out.m2[i] = a.m2[i] + b.m2[i] + w * d**2
    for i, j in a.cross:
        di, dj = b.mean[i] - a.mean[i], b.mean[j] - a.mean[j]
        out.cross[(i, j)] = a.cross[(i, j)] + b.cross[(i, j)] + w * np.outer(di, dj)
    return out


def ridge_coefficients(Sxx: np.ndarray, Sxy: np.ndarray, ridge: float) -> np.ndarray:
    """``(Sxx + lam I)^-1 Sxy`` with ``lam = ridge * trace(Sxx) / d`` (scale-free penalty)."""
    d = Sxx.shape[0]
    lam = ridge * float(np.trace(Sxx)) / max(d, 1)
    A = Sxx + (lam if lam > 0 else 1e-12 * max(float(np.trace(Sxx)), 1e-300) / max(d, 1)) * np.eye(d)
    try:
        return np.linalg.solve(A, Sxy)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, Sxy, rcond=None)[0]


def _ridge_r2(train: BlockMoments, test: BlockMoments, x: int, y: int, ridge: float) -> np.ndarray:
    """Held-out R^2 of predicting every column of group ``y`` from all of group ``x``.

    With train means (mx, my) and coefficients B, the residual on a test row is
    ``r = (y - x B) - c`` with ``c = my - mx B``; its sum of squares over the test rows is
    ``n_te (Var_te(y - xB) + (mean_te(y - xB) - c)^2)``, all available from the test moments.
    """
    B = ridge_coefficients(train.scatter(x, x), train.scatter(x, y), ridge)
    c = train.mean[y] - train.mean[x] @ B
    Sxx, Sxy = test.scatter(x, x), test.scatter(x, y)
    syy = test.m2[y]
    var_res = syy - 2 * np.einsum("ij,ij->j", B, Sxy) + np.einsum("ij,ij->j", B, Sxx @ B)
    mean_res = test.mean[y] - test.mean[x] @ B - c
    sse = np.maximum(var_res, 0.0) + test.n * mean_res**2
    out = np.zeros_like(syy)
    ok = syy > 1e-12 * max(float(syy.max(initial=0.0)), 1e-300)
    out[ok] = 1.0 - sse[ok] / syy[ok]
    return out
