"""Search a store for neurons that respond to a word list or a regular expression.

The converse of corpus selection (Kadar et al. 2017; Na et al. 2019): instead of asking which words
activate a neuron, ask which neurons separate the rows matching a query from all other rows. The
score is the standardized mean difference (Cohen's d with the pooled standard deviation), computed
from running sums over the blocks of a view so that every neuron of every layer is scored in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finegrain.errors import ConceptError, LayerError, ParameterError
from finegrain.neurons import Neuron
from finegrain.results import Result, ResultList
from finegrain.store.view import View

from .top import DEFAULT_CHUNK_ROWS, RowInfo, _check_chunk, as_describe_view


@dataclass
class SearchHit(Result):
    """A neuron whose activation differs between matching (``in``) and other (``out``) rows.

    ``score`` is Cohen's d = (mean_in - mean_out) / pooled std: positive when the neuron is higher on
    the matching rows.
    """

    neuron: str
    score: float
    mean_in: float
    mean_out: float
    std_in: float
    std_out: float
    n_in: int
    n_out: int

    def table(self) -> str:
        return (f"{self.neuron:<24} d={self.score:+.3f}  mean in {self.mean_in:.4g} (n={self.n_in})  "
                f"out {self.mean_out:.4g} (n={self.n_out})")


def match_rows(
    source,
    words: Sequence[str] | str | None = None,
    regex: str | None = None,
    case_sensitive: bool = False,
) -> np.ndarray:
    """Boolean mask over the rows of a view (or store): the row's word is in ``words`` (a list or a
    comma-separated string) or ``re.search(regex, word)`` succeeds (anchor with ``^...$`` for whole
    words). Sentence-level rows match when any of their whitespace-separated words is in ``words``, or
    when the sentence text matches ``regex``."""
    if (words is None) == (regex is None):
        raise ParameterError("give exactly one of words= or regex=")
    info = RowInfo(as_describe_view(source))
    texts = info.words
    sentence_level = info.level == "sentence"
    if words is not None:
        if isinstance(words, str):
            words = [w for w in words.split(",")]
        wanted = {w.strip() if case_sensitive else w.strip().lower() for w in words if w.strip()}
        if not wanted:
            raise ParameterError("the word list is empty")
        low = texts if case_sensitive else np.char.lower(texts)
        if sentence_level:
            return np.array([bool(wanted & set(t.split())) for t in low], dtype=bool)
        return np.isin(low, list(wanted))
    try:
        pat = re.compile(regex, 0 if case_sensitive else re.IGNORECASE)
    except re.error as e:
        raise ParameterError(f"invalid regular expression {regex!r}: {e}") from e
    return np.array([pat.search(t) is not None for t in texts], dtype=bool)


def neurons_for_words(
    source,
    words: Sequence[str] | str | None = None,
    regex: str | None = None,
    layers: Sequence[str] | str | None = None,
    top: int = 20,
    direction: str = "both",
    case_sensitive: bool = False,
    mask: np.ndarray | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ResultList:
    """The ``top`` neurons of a view whose activation on rows matching ``words`` / ``regex`` (or a
    boolean row ``mask``) differs most from the other rows, by standardized mean difference: a list of
    :class:`SearchHit`, best first.

    ``direction``: ``"both"`` ranks by |d|, ``"up"`` by d (neurons that fire on the matches),
    ``"down"`` by -d. ``layers`` restricts the view's columns to those layers (default: all of them).
    Streams the view in ``chunk_rows`` blocks with float64 sums.
    """
    if direction not in ("both", "up", "down"):
        raise ParameterError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
    if int(top) < 1:
        raise ParameterError(f"top must be >= 1, got {top}")
    chunk_rows = _check_chunk(chunk_rows)
    view = as_describe_view(source)
    if mask is None:
        mask = match_rows(view, words, regex, case_sensitive)
    else:
        if words is not None or regex is not None:
            raise ParameterError("give either mask= or words=/regex=, not both")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(view),):
            raise ParameterError(f"mask has shape {mask.shape}, the view has {len(view)} rows")
    n_in = int(mask.sum())
    n_out = int(len(mask) - n_in)
    query = f"words={words!r}" if words is not None else (f"regex={regex!r}" if regex is not None else "mask")
    if n_in == 0:
        raise ConceptError(f"no row of the view matches {query}")
    if n_out == 0:
        raise ConceptError(f"every row of the view matches {query}; nothing to compare against")
    view = _layers_of(view, layers)
    index = view.index
    d = index.total
    # sums relative to a per-column shift (the first block's mean) keep the variance stable in float64
    shift = None
    s_in, q_in, s_all, q_all = (np.zeros(d) for _ in range(4))
    for block in view.blocks(chunk_rows):
        sl, X = slice(block.start, block.stop), block.X.astype(np.float64)
        if shift is None:
            shift = X.mean(axis=0)
        X -= shift
        m = mask[sl]
        s_all += X.sum(axis=0)
        q_all += np.einsum("ij,ij->j", X, X)
        if m.any():
            Xi = X[m]
            s_in += Xi.sum(axis=0)
            q_in += np.einsum("ij,ij->j", Xi, Xi)
    s_out, q_out = s_all - s_in, q_all - q_in
    mu_in, mu_out = s_in / n_in, s_out / n_out
    var_in = np.maximum(q_in / n_in - mu_in**2, 0.0)
    var_out = np.maximum(q_out / n_out - mu_out**2, 0.0)
    pooled = np.sqrt((n_in * var_in + n_out * var_out) / (n_in + n_out))
    diff = mu_in - mu_out
    with np.errstate(divide="ignore", invalid="ignore"):
        dval = np.where(pooled > 1e-12, diff / np.maximum(pooled, 1e-12), 0.0)
    key = np.abs(dval) if direction == "both" else (dval if direction == "up" else -dval)
    order = np.lexsort((np.arange(d), -key))[: int(top)]
    hits = ResultList()
    for c in order:
        n: Neuron = index.neuron(int(c))
        hits.append(
            SearchHit(
                neuron=str(n), score=float(dval[c]), mean_in=float(mu_in[c] + shift[c]),
                mean_out=float(mu_out[c] + shift[c]), std_in=float(np.sqrt(var_in[c])),
                std_out=float(np.sqrt(var_out[c])), n_in=n_in, n_out=n_out,
            )
        )
    return hits


def _layers_of(view: View, layers: Sequence[str] | str | None) -> View:
    """The columns of ``layers`` in ``view`` (all of them for ``None``)."""
    if layers is None:
        return view
    layers = [layers] if isinstance(layers, str) else list(layers)
    unknown = [lay for lay in layers if lay not in view.index.layers]
    if unknown:
        raise LayerError(f"unknown layer(s) {unknown}; the view has {view.index.layers}")
    return view.select(columns=[c for lay in layers for c in view.index.layer_columns(lay)])
