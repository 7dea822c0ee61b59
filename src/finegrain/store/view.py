"""Views: the one input of every analysis (issue 17's contract).

A view is a selection of activation rows and columns that knows what it holds: its
:class:`~finegrain.neurons.NeuronIndex` (which neuron every column is), its label column, and for each
row the sentence and word it came from. Analyses take a view, never a bare matrix plus a separately
passed index, so the addresses they report are always the right ones.

* :class:`StoreView` — rows × (layers | neurons) of an :class:`~finegrain.store.ActivationStore`, read
  lazily. It is picklable (a path plus a selection: a Ray task or a subprocess reopens the store) and
  streams :meth:`~View.blocks`, so a store larger than memory is never materialised.
  ``store.view(layers=..., neurons=..., label=..., rows=...)`` makes one.
* :class:`ArrayView` — an in-memory matrix wrapped in the same type, with an explicit neuron index or the
  clearly named placeholder ``x:0, x:1, ...`` (:meth:`NeuronIndex.placeholder`).

Both split by sentence (:meth:`View.split`), never by token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import finegrain.store  # the package this module is part of (it imports this module at its top)
from finegrain.errors import ParameterError, StoreError
from finegrain.neurons import Neuron, NeuronIndex

DEFAULT_BLOCK_ROWS = 8192


def as_labels(y) -> np.ndarray:
    """Labels as a plain numpy array; numpy 2 variable-width strings (what zarr stores return) become
    fixed-width ``str`` so that they sort, compare and serialise like any other label array."""
    y = np.asarray(y)
    if y.dtype.kind == "T":
        y = np.array(y.tolist(), dtype=str)
    return y


@dataclass
class Block:
    """One streamed block of a view: rows ``start:stop`` of the view (``positions``), their activations
    ``X`` ``[rows, columns]`` and, when the view has a label, their labels ``y``."""

    start: int
    stop: int
    X: np.ndarray
    y: np.ndarray | None

    @property
    def positions(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


def _check_block_rows(block_rows: int | None) -> int | None:
    if block_rows is not None and (not isinstance(block_rows, int | np.integer) or block_rows <= 0):
        raise ParameterError(f"block_rows must be a positive integer or None, got {block_rows!r}")
    return None if block_rows is None else int(block_rows)


def _sentence_groups(sent_ids: np.ndarray, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, ...]:
    """Positions split into groups by sentence id (every row of a sentence in one group)."""
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ParameterError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    sent_ids = np.asarray(sent_ids)
    uniq = np.unique(sent_ids)
    if len(uniq) < len(fractions):
        raise ParameterError(f"need at least {len(fractions)} sentences to split, have {len(uniq)}")
    perm = np.random.default_rng(seed).permutation(uniq)
    bounds = np.round(np.cumsum(fractions)[:-1] * len(perm)).astype(int)
    return tuple(np.flatnonzero(np.isin(sent_ids, g)) for g in np.split(perm, bounds))


class View:
    """What every view offers; see :class:`StoreView` and :class:`ArrayView`."""

    label: str | None
    block_rows: int | None

    # -- what it holds -------------------------------------------------------------------
    @property
    def index(self) -> NeuronIndex:
        """Which neuron each column is."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    @property
    def neurons(self) -> list[Neuron]:
        """The neuron of every column, in column order."""
        return self.index.neurons()

    @property
    def sent_ids(self) -> np.ndarray:
        """The sentence of every row (rows of one sentence are never split apart)."""
        raise NotImplementedError

    @property
    def words(self) -> np.ndarray:
        raise NotImplementedError

    def labels(self, column: str | None = None) -> np.ndarray:
        """The label column ``column`` (default: the view's label) for exactly the rows of this view."""
        raise NotImplementedError

    @property
    def y(self) -> np.ndarray:
        """The view's labels (``label=`` when it was made)."""
        return self.labels()

    @property
    def has_labels(self) -> bool:
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the view as a float32 ``[rows, columns]`` array."""
        raise NotImplementedError

    def materialize(self) -> np.ndarray:
        """The whole view as one float32 array (only for what fits in memory)."""
        return self.read(0, len(self))

    def __array__(self, dtype=None, copy=None):
        X = self.materialize()
        return X if dtype is None else X.astype(dtype, copy=False)

    def bounds(self, block_rows: int | None = None) -> list[tuple[int, int]]:
        """``(start, stop)`` of each block of ``block_rows`` rows (default: the view's)."""
        n = len(self)
        br = _check_block_rows(block_rows) or self.block_rows or max(n, 1)
        return [(s, min(s + br, n)) for s in range(0, n, br)]

    def blocks(self, block_rows: int | None = None) -> Iterator[Block]:
        """Stream the view in consecutive blocks: memory stays one block whatever the store's size."""
        y = self.labels() if self.has_labels else None
        for start, stop in self.bounds(block_rows):
            yield Block(start, stop, self.read(start, stop), None if y is None else y[start:stop])

    def iter_blocks(self, rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions, X_block)``; with ``rng`` the block order and the rows inside each block are
        shuffled (the two-level shuffle of streamed training: one block in memory at a time)."""
        bounds = self.bounds()
        order = rng.permutation(len(bounds)) if rng is not None else np.arange(len(bounds))
        for b in order:
            start, stop = bounds[b]
            Xb, pos = self.read(start, stop), np.arange(start, stop)
            if rng is not None:
                perm = rng.permutation(stop - start)
                Xb, pos = Xb[perm], pos[perm]
            yield pos, Xb

    # the probes' streaming loop reads blocks through these two names
    def _bounds(self) -> list[tuple[int, int]]:
        return self.bounds()

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.read(start, stop)

    # -- new views ---------------------------------------------------------------------------
    def subset(self, positions) -> View:
        """The view of some of this view's rows (positions into it, or a boolean mask)."""
        raise NotImplementedError

    def select(self, columns: Sequence[int] | None = None, neurons: Sequence[Neuron | str] | None = None) -> View:
        """The view of some of this view's columns: by column number or by neuron address."""
        raise NotImplementedError

    def with_label(self, label: str | None) -> View:
        raise NotImplementedError

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[View, ...]:
        """Views of train/dev/test (any number of parts) made by *sentence*, never by token."""
        return tuple(self.subset(p) for p in _sentence_groups(self.sent_ids, fractions, seed))

    def _positions(self, positions) -> np.ndarray:
        p = np.asarray(positions)
        if p.dtype == bool:
            if len(p) != len(self):
                raise ParameterError(f"a boolean row mask needs {len(self)} entries, got {len(p)}")
            return np.flatnonzero(p)
        p = p.astype(np.int64).reshape(-1)
        if len(p) and (p.min() < 0 or p.max() >= len(self)):
            raise ParameterError(f"row positions must be in 0..{len(self) - 1}")
        return p

    def _column_positions(self, columns, neurons) -> np.ndarray:
        if (columns is None) == (neurons is None):
            raise ParameterError("select() takes columns= or neurons=, exactly one")
        if neurons is not None:
            try:
                return np.asarray(self.index.columns(neurons), dtype=np.int64)
            except (KeyError, IndexError) as e:
                raise ParameterError(f"select(): {e}") from e
        c = np.asarray(columns, dtype=np.int64).reshape(-1)
        if len(c) and (c.min() < 0 or c.max() >= self.n_features):
            raise ParameterError(f"columns must be in 0..{self.n_features - 1}")
        return c

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} rows x {self.n_features} columns, "
                f"layers={self.index.layers[:4]}{'...' if len(self.index.layers) > 4 else ''}, label={self.label!r})")


class StoreView(View):
    """Rows (optionally a subset, e.g. a split) × layers or neurons of an activation store, read lazily.

    ``layers`` picks layers (default: all), ``neurons`` picks single units instead (in the given order).
    ``rows`` are store row ids (sorted; a boolean mask or a slice works too). ``label`` names the label
    column that :attr:`y` returns. Blocks are runs of ``block_rows`` consecutive selected rows, read from
    the zarr arrays only when iterated. Pickling keeps the store's path and the selection, not the data.
    """

    def __init__(
        self,
        store,
        layers: Sequence[str] | str | None = None,
        rows: np.ndarray | slice | Sequence[int] | None = None,
        neurons: Sequence[Neuron | str] | None = None,
        block_rows: int | None = DEFAULT_BLOCK_ROWS,
        label: str | None = None,
    ):
        if isinstance(store, str | os.PathLike):
            store = finegrain.store.ActivationStore(store)
        if not isinstance(store, finegrain.store.ActivationStore):
            raise ParameterError(f"StoreView needs an ActivationStore or its path, got {type(store).__name__}")
        if layers is not None and neurons is not None:
            raise ParameterError("a view selects layers= or neurons=, not both")
        self._store = store
        self.path = Path(store.path)
        self.block_rows = _check_block_rows(block_rows)
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self._neurons = [Neuron.parse(n) for n in neurons] if neurons is not None else None
        if self._neurons is not None:
            for n in self._neurons:
                store._check_layer(n.layer)
            self._index = NeuronIndex.from_neurons(self._neurons)
            store.positions_of(self._neurons)  # every unit must be stored
        else:
            self._index = store.neuron_index(self.layers)
        if label is not None and label not in store.label_columns:
            raise StoreError(f"{self.path}: no label column {label!r}; it has {store.label_columns}")
        self.label = label
        self.rows = self._resolve_rows(rows, store.n_rows)

    @staticmethod
    def _resolve_rows(rows, n_rows: int) -> np.ndarray:
        if rows is None:
            return np.arange(n_rows)
        if isinstance(rows, slice):
            return np.arange(n_rows)[rows]
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != n_rows:
                raise ParameterError(f"a boolean row mask needs {n_rows} entries, got {len(rows)}")
            return np.flatnonzero(rows)
        rows = np.sort(rows.astype(np.int64).reshape(-1))
        if len(rows) and (rows[0] < 0 or rows[-1] >= n_rows):
            raise ParameterError(f"row ids must be in 0..{n_rows - 1}")
        return rows

    # -- pickling: a path and a selection ------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def store(self):
        """The :class:`ActivationStore` (reopened from :attr:`path` after unpickling)."""
        if self._store is None:
            self._store = finegrain.store.ActivationStore(self.path)
        return self._store

    # -- what it holds -------------------------------------------------------------------------
    @property
    def index(self) -> NeuronIndex:
        return self._index

    @property
    def neuron_list(self) -> list[Neuron]:
        return self._index.neurons()

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self._index.total)

    @property
    def level(self) -> str:
        return self.store.level

    def column(self, name: str) -> np.ndarray:
        """An index column (``sent_id``, ``word_pos``, ``word`` or a label) for this view's rows."""
        return self.store.index(name)[self.rows]

    @property
    def sent_ids(self) -> np.ndarray:
        return self.column("sent_id")

    @property
    def words(self) -> np.ndarray:
        return self.column("word")

    @property
    def has_labels(self) -> bool:
        return self.label is not None

    def labels(self, column: str | None = None) -> np.ndarray:
        column = column or self.label
        if column is None:
            raise ParameterError(f"this view of {self.path} has no label: make it with label=..., "
                                 f"one of {self.store.label_columns}")
        return as_labels(self.store.labels(column)[self.rows])

    # -- reading ---------------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> np.ndarray:
        r = self.rows[start:stop]
        if not len(r):
            return np.zeros((0, self.n_features), np.float32)
        # contiguous runs read as slices (the fast path of unsplit stores)
        rows = slice(int(r[0]), int(r[-1]) + 1) if r[-1] - r[0] + 1 == len(r) else r
        if self._neurons is not None:
            return self.store.matrix(rows=rows, neurons=self._neurons)
        return self.store.matrix(self.layers, rows=rows)

    # -- new views ---------------------------------------------------------------------------------
    def _copy(self, **changes) -> StoreView:
        new = object.__new__(StoreView)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def subset(self, positions) -> StoreView:
        return self._copy(rows=self.rows[self._positions(positions)])

    def select(self, columns=None, neurons=None) -> StoreView:
        cols = self._column_positions(columns, neurons)
        ns = self._index.neurons(cols)
        return self._copy(layers=None, _neurons=ns, _index=NeuronIndex.from_neurons(ns))

    def with_label(self, label: str | None) -> StoreView:
        if label is not None and label not in self.store.label_columns:
            raise StoreError(f"{self.path}: no label column {label!r}; it has {self.store.label_columns}")
        return self._copy(label=label)

    def with_block_rows(self, block_rows: int | None) -> StoreView:
        return self._copy(block_rows=_check_block_rows(block_rows))


class ArrayView(View):
    """An in-memory ``[rows, columns]`` matrix in the view type.

    ``index`` says which neuron each column is (a :class:`NeuronIndex` or a list of addresses); without
    one the columns are the placeholder neurons ``x:0 .. x:d-1``. ``y`` are labels (one per row),
    ``sent_ids`` the sentence of each row (default: every row its own sentence, so splits are by row),
    ``words`` the word of each row.
    """

    label = None

    def __init__(self, X, y=None, index: NeuronIndex | Sequence[Neuron | str] | None = None,
                 sent_ids=None, words=None, block_rows: int | None = None, label: str | None = None):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ParameterError(f"X must be a 2-D [rows, neurons] matrix, got shape {X.shape}")
        self.X = X
        self.block_rows = _check_block_rows(block_rows)
        if index is None:
            index = NeuronIndex.placeholder(X.shape[1])
        elif not isinstance(index, NeuronIndex):
            index = NeuronIndex.from_neurons(index)
        if index.total != X.shape[1]:
            raise ParameterError(f"the neuron index has {index.total} columns, X has {X.shape[1]}")
        self._index = index
        n = X.shape[0]
        self._y = None if y is None else as_labels(y)
        if self._y is not None and len(self._y) != n:
            raise ParameterError(f"X has {n} rows but y has {len(self._y)} labels; they must match")
        self._sent = np.arange(n) if sent_ids is None else np.asarray(sent_ids)
        self._words = None if words is None else np.asarray(words, dtype=object)
        for name, arr in (("sent_ids", self._sent), ("words", self._words)):
            if arr is not None and len(arr) != n:
                raise ParameterError(f"X has {n} rows but {name} has {len(arr)}")
        self.label = label if label is not None else ("y" if y is not None else None)

    @property
    def index(self) -> NeuronIndex:
        return self._index

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.X.shape[0]), int(self.X.shape[1]))

    @property
    def sent_ids(self) -> np.ndarray:
        return self._sent

    @property
    def words(self) -> np.ndarray:
        if self._words is None:
            raise ParameterError("this array view has no words (make it with words=...)")
        return self._words

    @property
    def has_labels(self) -> bool:
        return self._y is not None

    def labels(self, column: str | None = None) -> np.ndarray:
        if self._y is None or (column is not None and column != self.label):
            raise ParameterError("this array view has no labels" + (f" {column!r}" if column else "")
                                 + " (make it with y=...)")
        return self._y

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.X[start:stop], dtype=np.float32)

    def materialize(self) -> np.ndarray:
        return np.asarray(self.X, dtype=np.float32)

    def _copy(self, X=None, y=None, index=None, sent=None, words=None) -> ArrayView:
        new = object.__new__(ArrayView)
        new.__dict__.update(self.__dict__)
        for attr, val in (("X", X), ("_y", y), ("_index", index), ("_sent", sent), ("_words", words)):
            if val is not None:
                new.__dict__[attr] = val
        return new

    def subset(self, positions) -> ArrayView:
        p = self._positions(positions)
        new = self._copy(X=self.X[p], sent=self._sent[p])
        new._y = None if self._y is None else self._y[p]
        new._words = None if self._words is None else self._words[p]
        return new

    def select(self, columns=None, neurons=None) -> ArrayView:
        c = self._column_positions(columns, neurons)
        return self._copy(X=self.X[:, c], index=self._index.select(c))

    def with_label(self, label: str | None) -> ArrayView:
        if label is None:
            new = self._copy()
            new._y, new.label = None, None
            return new
        if label != self.label:
            raise ParameterError(f"this array view has only the labels {self.label!r}")
        return self

    def with_block_rows(self, block_rows: int | None) -> ArrayView:
        new = self._copy()
        new.block_rows = _check_block_rows(block_rows)
        return new


def as_view(X, y=None, index: NeuronIndex | Sequence[Neuron | str] | None = None,
            block_rows: int | None = None) -> tuple[View, np.ndarray | None]:
    """``(view, labels)`` for any accepted input: a view, an :class:`ActivationStore` (all of it), or an
    array (with ``index`` naming its columns). ``labels`` is ``y`` when given, else the view's labels, else
    ``None``. A view's own index wins; passing a different ``index`` with a view is an error."""
    if isinstance(X, finegrain.store.ActivationStore):
        X = StoreView(X)
    if isinstance(X, View):
        if index is not None:
            given = index if isinstance(index, NeuronIndex) else NeuronIndex.from_neurons(index)
            if given != X.index:
                raise ParameterError("the index passed does not match the view's own neuron index")
        if block_rows is not None and X.block_rows != block_rows:
            X = X.with_block_rows(block_rows)
        view = X
    else:
        view = ArrayView(X, index=index, block_rows=block_rows)
    if y is not None:
        labels = as_labels(y)
        if labels.ndim == 0:
            raise ParameterError("y must be a sequence of labels, got a scalar")
        if len(labels) != len(view):
            raise ParameterError(f"X has {len(view)} rows but y has {len(labels)} labels; they must match")
    else:
        labels = view.labels() if view.has_labels else None
    return view, labels


__all__ = ["ArrayView", "Block", "StoreView", "View", "as_labels", "as_view"]
