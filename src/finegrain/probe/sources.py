"""Row sources for probe training: the views of :mod:`finegrain.store.view` under their probe-side names.

Both kinds yield the same sequence of row blocks for the same ``block_rows`` and seed, so a probe trained
by streaming a store block by block equals one trained on the in-memory matrix with the same settings.
Shuffling is two-level (order of blocks, then rows within a block): a matrix larger than RAM is never
materialised, only one block at a time.
"""

from __future__ import annotations

import numpy as np

from finegrain.errors import ParameterError
from finegrain.neurons import NeuronIndex
from finegrain.store import ActivationStore
from finegrain.store.view import ArrayView, StoreView, View, as_labels, as_view

# the names probes have always used for the two kinds of view
ArraySource = ArrayView
StoreSource = StoreView


def as_source(X, block_rows: int | None = None) -> View:
    """Wrap an array / store / view so that probes can iterate it in blocks."""
    if isinstance(X, View):
        return X if block_rows is None or X.block_rows == block_rows else X.with_block_rows(block_rows)
    if isinstance(X, ActivationStore):
        return StoreView(X, block_rows=block_rows or 8192)
    return ArrayView(X, block_rows=block_rows)


def source_index(X) -> NeuronIndex:
    """What the columns of ``X`` are: the view's (or store's) NeuronIndex, the placeholder ``x:0..`` for a
    bare array."""
    if isinstance(X, View):
        return X.index
    if isinstance(X, ActivationStore):
        return X.neuron_index()
    return NeuronIndex.placeholder(int(np.asarray(X).shape[1]))


def labelled_view(X, y=None, index=None, what: str = "X") -> tuple[View, np.ndarray]:
    """``(view, labels)`` like :func:`as_view`, but labels are required: ``y``, or the view's own label."""
    view, labels = as_view(X, y, index)
    if labels is None:
        raise ParameterError(f"{what} has no labels: pass y=... (one label per row) or a view made with label=...")
    return view, labels


def as_labelled(data, what: str = "data") -> tuple[View, np.ndarray]:
    """A split given as a labelled view (or store view with ``label=``) or as an ``(X, y)`` pair, as
    ``(view, labels)``: the one way every analysis with train/dev/test inputs reads them."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ParameterError(f"{what}: a split is a labelled view or an (X, y) pair, got a {len(data)}-tuple")
        return labelled_view(data[0], data[1], what=what)
    return labelled_view(data, what=what)


__all__ = ["ArraySource", "StoreSource", "as_labelled", "as_labels", "as_source", "as_view", "labelled_view",
           "source_index"]
