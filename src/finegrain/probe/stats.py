"""Per-unit statistics of a view, accumulated block by block (a store larger than memory streams).

:func:`column_stats` is the one implementation of the statistics finegrain standardises with: the
probes' internal standardisation, the standardised probeless ranking, the training mean that mean-ablation
fills removed units with, and the outlier ("rogue") dimensions of :func:`finegrain.rank.outlier_dimensions`
(Timkey & van Schijndel 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finegrain.errors import ParameterError
from finegrain.store.view import DEFAULT_BLOCK_ROWS, View, as_view

# rows read at a time: a large in-memory matrix is never copied whole
STAT_BLOCK_ROWS = DEFAULT_BLOCK_ROWS
FLOAT64_ROWS = 1024  # rows of one float64 work array inside a block


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
    """Mean, std and mean |x| of every column of ``X`` (a view, a store or an array), in one streaming pass.

    Sums are taken in float64 around the first block's mean (a shifted accumulation), so a unit whose mean
    is large against its spread keeps its variance."""
    view, _ = as_view(X)
    n, d = view.shape
    if n == 0:
        raise ParameterError("cannot compute statistics of a view with 0 rows")
    shift = None
    s1, s2, sa = np.zeros(d), np.zeros(d), np.zeros(d)
    for start, stop in view_bounds(view, block_rows):
        block = view.read(start, stop)
        # float64 work arrays of FLOAT64_ROWS rows: a block of 8,192 rows x 2,688 units would need three
        # 176 MB ones at once (its copy, the shifted copy, |x|), which was the peak of fitting a probe
        for r in range(0, len(block), FLOAT64_ROWS):
            D = block[r : r + FLOAT64_ROWS].astype(np.float64)
            sa += np.abs(D).sum(0)
            if shift is None:
                shift = D.mean(0)
            D -= shift
            s1 += D.sum(0)
            s2 += np.einsum("ij,ij->j", D, D)
    m1 = s1 / n
    var = np.maximum(s2 / n - m1 * m1, 0.0)
    return ColumnStats(n=n, mean=shift + m1, std=np.sqrt(var), mean_abs=sa / n)


__all__ = ["ColumnStats", "column_stats", "view_bounds"]
