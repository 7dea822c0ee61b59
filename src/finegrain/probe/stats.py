"""Per-unit statistics of a view, accumulated block by block (a store larger than memory streams).

:func:`column_stats` is the one implementation of the statistics finegrain standardises with: the
probes' internal standardisation, the standardised probeless ranking, the training mean that mean-ablation
fills removed units with, and the outlier ("rogue") dimensions of :func:`finegrain.rank.outlier_dimensions`
(Timkey & van Schijndel 2021).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from finegrain.errors import ParameterError
from finegrain.store.view import DEFAULT_BLOCK_ROWS, View, as_view

# rows read at a time: a large in-memory matrix is never copied whole
STAT_BLOCK_ROWS = DEFAULT_BLOCK_ROWS
# rows of one float32 work array inside a block: small enough to stay in cache and below malloc's mmap
# threshold (a fresh 30-170 MB temporary per block page-faults at ~2 GB/s on a VM), and a float32 sum over
# so few rows keeps a relative error below 64 x 6e-8 before it joins the float64 totals
CHUNK_ROWS = 64

@dataclass
class ColumnStats:
    """``n`` rows; per unit the ``mean``, the population ``std`` and the ``mean_abs`` (mean |activation|)."""

    n: int
    mean: np.ndarray
    std: np.ndarray
    mean_abs: np.ndarray

    def scale(self, eps: float = 1e-8) -> np.ndarray:
        """The divisor that standardises each unit: its std, or 1 for a constant unit (nothing to scale)."""
        return np.where(self.std > eps * np.maximum(1.0, np.abs(self.mean)), self.std, 1.0)


def view_bounds(view: View, block_rows: int | None = None) -> list[tuple[int, int]]:
    """Blocks of at most ``STAT_BLOCK_ROWS`` rows (or ``block_rows``), whatever the view's own block size."""
    br = block_rows or min(view.block_rows or STAT_BLOCK_ROWS, STAT_BLOCK_ROWS)
    return view.bounds(br)


def column_stats(X, block_rows: int | None = None) -> ColumnStats:
    """Mean, std and mean |x| of every column of ``X`` (a view, a store or an array), in one streaming pass
    (see :func:`column_stats_of_blocks`)."""
    view, _ = as_view(X)
    return column_stats_of_blocks(view.read(a, b) for a, b in view_bounds(view, block_rows))


def column_stats_of_blocks(blocks: Iterable[np.ndarray]) -> ColumnStats:
    """:func:`column_stats` of the rows of ``blocks`` (arrays with the same columns) taken together.

    The data are shifted by the first rows' mean (so that a unit whose mean is large against its spread
    keeps its variance), summed in float32 over chunks of ``CHUNK_ROWS`` rows and the chunks' sums added up
    in float64: 4-5x faster than float64 work arrays, to about 1e-6 relative."""
    n, shift32, s1, s2, sa, work = 0, None, None, None, None, None
    for block in blocks:
        if not len(block):
            continue
        if shift32 is None:
            d = block.shape[1]
            shift32 = block[:1024].mean(0, dtype=np.float64).astype(np.float32)
            s1, s2, sa = np.zeros(d), np.zeros(d), np.zeros(d)
            work = np.empty((CHUNK_ROWS, d), np.float32)
        n += len(block)
        for r in range(0, len(block), CHUNK_ROWS):
            D = block[r : r + CHUNK_ROWS]
            w = work[: len(D)]
            sa += np.abs(D, out=w).sum(0)
            np.subtract(D, shift32, out=w)
            s1 += w.sum(0)
            s2 += np.multiply(w, w, out=w).sum(0)
    if n == 0:
        raise ParameterError("cannot compute statistics of a view with 0 rows")
    m1 = s1 / n
    var = np.maximum(s2 / n - m1 * m1, 0.0)
    return ColumnStats(n=n, mean=shift32.astype(np.float64) + m1, std=np.sqrt(var), mean_abs=sa / n)


__all__ = ["ColumnStats", "column_stats", "column_stats_of_blocks", "view_bounds"]
