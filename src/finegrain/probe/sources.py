"""Row sources for probe training: an in-memory array or a lazily read activation store.

Both yield the same sequence of row blocks for the same ``block_rows`` and seed, so a probe trained by
streaming a store block by block equals one trained on the in-memory matrix with the same settings.
Shuffling is two-level (order of blocks, then rows within a block): a matrix larger than RAM is never
materialised, only one block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from finegrain.neurons import Neuron, NeuronIndex
from finegrain.store import ActivationStore


def as_labels(y) -> np.ndarray:
    """Labels as a plain numpy array; numpy 2 variable-width strings (what zarr stores return) become
    fixed-width ``str`` so that they sort, compare and serialise like any other label array."""
    y = np.asarray(y)
    if y.dtype.kind == "T":
        y = np.array(y.tolist(), dtype=str)
    return y


class ArraySource:
    """An in-memory ``[n, d]`` matrix seen as row blocks of ``block_rows`` (``None``: one block)."""

    def __init__(self, X, block_rows: int | None = None):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D [rows, neurons] matrix, got shape {X.shape}")
        if block_rows is not None and block_rows <= 0:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        self.X = X
        self.block_rows = block_rows
        self.index = NeuronIndex({"x": X.shape[1]})

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.X.shape[0]), int(self.X.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def _bounds(self) -> list[tuple[int, int]]:
        n = self.shape[0]
        br = self.block_rows or max(n, 1)
        return [(s, min(s + br, n)) for s in range(0, n, br)]

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.X[start:stop], dtype=np.float32)

    def iter_blocks(self, rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions, X_block)``; positions index rows of this source (and of ``y``).

        With ``rng`` the block order and the rows inside each block are shuffled.
        """
        bounds = self._bounds()
        order = rng.permutation(len(bounds)) if rng is not None else np.arange(len(bounds))
        for b in order:
            start, stop = bounds[b]
            Xb = self._read(start, stop)
            pos = np.arange(start, stop)
            if rng is not None:
                perm = rng.permutation(stop - start)
                Xb, pos = Xb[perm], pos[perm]
            yield pos, Xb

    def materialize(self) -> np.ndarray:
        return np.asarray(self.X, dtype=np.float32)


class StoreSource(ArraySource):
    """Rows (optionally a subset, e.g. a split) of an :class:`ActivationStore`, read lazily.

    ``layers`` picks layers (default: all), ``neurons`` picks single units instead. Blocks are runs of
    ``block_rows`` consecutive selected rows, read from the zarr arrays only when iterated.
    """

    def __init__(
        self,
        store: ActivationStore,
        layers: Sequence[str] | str | None = None,
        rows: np.ndarray | slice | None = None,
        neurons: Sequence[Neuron | str] | None = None,
        block_rows: int | None = 8192,
    ):
        if not isinstance(store, ActivationStore):
            raise TypeError(f"StoreSource needs an ActivationStore, got {type(store).__name__}")
        if block_rows is not None and block_rows <= 0:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        self.store = store
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self.neurons = [Neuron.parse(n) for n in neurons] if neurons is not None else None
        if rows is None:
            self.rows = np.arange(store.n_rows)
        elif isinstance(rows, slice):
            self.rows = np.arange(store.n_rows)[rows]
        else:
            rows = np.asarray(rows)
            self.rows = np.flatnonzero(rows) if rows.dtype == bool else np.sort(rows.astype(np.int64))
        if self.neurons is not None:
            self.index = None
            self.neuron_list = self.neurons
            d = len(self.neurons)
        else:
            self.index = store.neuron_index(self.layers)
            self.neuron_list = self.index.neurons()
            d = self.index.total
        self._d = d
        self.block_rows = block_rows

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self._d)

    def _read(self, start: int, stop: int) -> np.ndarray:
        r = self.rows[start:stop]
        # contiguous runs read as slices (fast path for unsplit stores)
        rows = slice(int(r[0]), int(r[-1]) + 1) if len(r) and r[-1] - r[0] + 1 == len(r) else r
        if self.neurons is not None:
            return self.store.matrix(rows=rows, neurons=self.neurons)
        return self.store.matrix(self.layers, rows=rows)

    def materialize(self) -> np.ndarray:
        return self._read(0, len(self.rows))

    def labels(self, column: str) -> np.ndarray:
        """The label column for exactly the rows of this source."""
        return self.store.labels(column)[self.rows]


def as_source(X, block_rows: int | None = None) -> ArraySource:
    """Wrap an array / store / source so that probes can iterate it in blocks."""
    if isinstance(X, ArraySource):
        return X
    if isinstance(X, ActivationStore):
        return StoreSource(X, block_rows=block_rows or 8192)
    return ArraySource(X, block_rows=block_rows)


def source_index(X) -> NeuronIndex | list[Neuron]:
    """What the columns of ``X`` are: a NeuronIndex (``{"x": d}`` for a bare array), or the list of
    neurons of a neuron-subset StoreSource."""
    if isinstance(X, StoreSource):
        return X.index if X.index is not None else list(X.neuron_list)
    if isinstance(X, ActivationStore):
        return X.neuron_index()
    if isinstance(X, ArraySource):
        return X.index
    return NeuronIndex({"x": int(np.asarray(X).shape[1])})
