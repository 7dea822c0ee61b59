"""Search a store for neurons that respond to a word list or a regular expression.

The converse of corpus selection (Kadar et al. 2017; Na et al. 2019): instead of asking which words
activate a neuron, ask which neurons separate the rows matching a query from all other rows. The
score is the standardized mean difference (Cohen's d with the pooled standard deviation), computed
from running sums over row chunks so that every neuron of every layer is scored in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from finegrain.neurons import Neuron
from finegrain.store import ActivationStore, StoreError

from .top import DEFAULT_CHUNK_ROWS, _check_chunk, str_array


@dataclass
class SearchHit:
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

    def to_dict(self) -> dict:
        return asdict(self)


def match_rows(
    store: ActivationStore,
    words: Sequence[str] | str | None = None,
    regex: str | None = None,
    case_sensitive: bool = False,
) -> np.ndarray:
    """Boolean mask over store rows: the row's word is in ``words`` (a list or a comma-separated
    string) or ``re.search(regex, word)`` succeeds (anchor with ``^...$`` for whole words).
    Sentence-level rows match when any of their whitespace-separated words is in ``words``, or when
    the sentence text matches ``regex``."""
    if (words is None) == (regex is None):
        raise ValueError("give exactly one of words= or regex=")
    texts = str_array(store.words)
    sentence_level = store.level == "sentence"
    if words is not None:
        if isinstance(words, str):
            words = [w for w in words.split(",")]
        wanted = {w.strip() if case_sensitive else w.strip().lower() for w in words if w.strip()}
        if not wanted:
            raise ValueError("the word list is empty")
        low = texts if case_sensitive else np.char.lower(texts)
        if sentence_level:
            return np.array([bool(wanted & set(t.split())) for t in low], dtype=bool)
        return np.isin(low, list(wanted))
    try:
        pat = re.compile(regex, 0 if case_sensitive else re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"invalid regular expression {regex!r}: {e}") from e
    return np.array([pat.search(t) is not None for t in texts], dtype=bool)


def neurons_for_words(
    store: ActivationStore,
    words: Sequence[str] | str | None = None,
    regex: str | None = None,
    layers: Sequence[str] | str | None = None,
    top: int = 20,
    direction: str = "both",
    case_sensitive: bool = False,
    mask: np.ndarray | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[SearchHit]:
    """The ``top`` neurons whose activation on rows matching ``words`` / ``regex`` (or a boolean row
    ``mask``) differs most from the other rows, by standardized mean difference.

    ``direction``: ``"both"`` ranks by |d|, ``"up"`` by d (neurons that fire on the matches),
    ``"down"`` by -d. Streams ``layers`` (default all) in ``chunk_rows`` blocks with float64 sums.
    """
    if direction not in ("both", "up", "down"):
        raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
    if int(top) < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    chunk_rows = _check_chunk(chunk_rows)
    if mask is None:
        mask = match_rows(store, words, regex, case_sensitive)
    else:
        if words is not None or regex is not None:
            raise ValueError("give either mask= or words=/regex=, not both")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (store.n_rows,):
            raise ValueError(f"mask has shape {mask.shape}, the store has {store.n_rows} rows")
    n_in = int(mask.sum())
    n_out = int(len(mask) - n_in)
    query = f"words={words!r}" if words is not None else (f"regex={regex!r}" if regex is not None else "mask")
    if n_in == 0:
        raise ValueError(f"no row of the store matches {query}")
    if n_out == 0:
        raise ValueError(f"every row of the store matches {query}; nothing to compare against")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers) if layers is not None else list(store.layers)
    for lay in layers:
        if lay not in store.layers:
            raise StoreError(f"unknown layer {lay!r}; store has {list(store.layers)}")
    index = store.neuron_index(layers)
    d = index.total
    # sums relative to a per-column shift (the first chunk's mean) keep the variance stable in float64
    shift = None
    s_in, q_in, s_all, q_all = (np.zeros(d) for _ in range(4))
    for sl, X in store.iter_chunks(layers, chunk_rows):
        X = X.astype(np.float64)
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
    hits = []
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
