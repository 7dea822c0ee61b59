"""Representation similarity between layers / models (Wu et al. 2020, *Similarity Analysis of
Contextual Word Representation Models*), all computed from streamed centred second moments
``S_xx, S_yy, S_xy`` (one pass over row chunks, memory O(d^2), see ``correlation.BlockMoments``).

Definitions (X: ``[n, dx]``, Y: ``[n, dy]``, both centred over rows):

* ``cka``: linear CKA, ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` (Kornblith et al. 2019).
* ``neuronsim``: mean over the neurons of X of ``max_j |corr(x_i, y_j)|``; symmetrised by averaging
  the X->Y and Y->X directions (``symmetric=True``).
* ``mixedsim``: mean over the neurons of Y of the in-sample ``R^2`` of a least-squares fit of that
  neuron from all of X (a tiny ridge ``1e-6 * mean variance`` only for numerical stability), i.e.
  how much of each neuron is linearly explained by a *mix* of the other representation's neurons;
  symmetrised by averaging both directions. In-sample, so it needs ``n >> d`` to be meaningful.
* ``svcca``: keep the top principal directions of each representation explaining ``variance``
  (99%) of its variance, then the mean of all canonical correlations between the reduced
  representations (Raghu et al. 2017).
* ``pwcca``: canonical correlations ``rho_i`` of the full (rank-thresholded) representations weighted
  by ``alpha_i ∝ sum_j |<h_i, x_j>|`` with ``h_i`` the i-th canonical variate of X and ``x_j`` the
  neurons of X (Morcos et al. 2018); asymmetric (weights from X), so ``pwcca(X, Y) != pwcca(Y, X)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finegrain.errors import ParameterError
from finegrain.results import Result
from finegrain.store import ActivationStore
from finegrain.store.view import View
from finegrain.unsupervised.correlation import (
    DEFAULT_CHUNK_ROWS,
    BlockMoments,
    Representation,
    accumulate,
    check_aligned,
)

SIMILARITY_METHODS = ("cka", "neuronsim", "mixedsim", "svcca", "pwcca")


# ----------------------------------------------------------------------------------------------
# Similarities from moments
# ----------------------------------------------------------------------------------------------
def _cka(Sxx: np.ndarray, Syy: np.ndarray, Sxy: np.ndarray) -> float:
    den = np.linalg.norm(Sxx) * np.linalg.norm(Syy)
    return float(np.sum(Sxy**2) / den) if den > 0 else 0.0


def _corr(Sxy: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    den = np.outer(np.sqrt(vx), np.sqrt(vy))
    out = np.zeros_like(Sxy)
    np.divide(Sxy, den, out=out, where=den > 1e-12 * max(float(den.max(initial=0.0)), 1e-300))
    return np.abs(np.clip(out, -1, 1))


def _neuronsim(Sxy, vx, vy, symmetric=True) -> float:
    c = _corr(Sxy, vx, vy)
    xy = float(c.max(axis=1).mean())
    return 0.5 * (xy + float(c.max(axis=0).mean())) if symmetric else xy


def _r2(Sxx: np.ndarray, Sxy: np.ndarray, vy: np.ndarray, ridge: float = 1e-6) -> float:
    """Mean in-sample R^2 of regressing each Y column on X (from scatter matrices)."""
    d = Sxx.shape[0]
    lam = ridge * float(np.trace(Sxx)) / max(d, 1) + 1e-300
    B = np.linalg.solve(Sxx + lam * np.eye(d), Sxy)
    # explained sum of squares of a ridge fit: 2 b^T s_xy - b^T S_xx b
    ess = 2 * np.einsum("ij,ij->j", B, Sxy) - np.einsum("ij,ij->j", B, Sxx @ B)
    ok = vy > 1e-12 * max(float(vy.max(initial=0.0)), 1e-300)
    if not ok.any():
        return 0.0
    return float(np.clip(ess[ok] / vy[ok], 0.0, 1.0).mean())


def _mixedsim(Sxx, Syy, Sxy, symmetric=True) -> float:
    xy = _r2(Sxx, Sxy, np.diag(Syy).copy())
    return 0.5 * (xy + _r2(Syy, Sxy.T, np.diag(Sxx).copy())) if symmetric else xy


def _whitener(S: np.ndarray, variance: float | None, eps: float) -> np.ndarray:
    """Columns ``U_k diag(lam_k^-1/2)``: maps centred X to uncorrelated unit-variance directions.

    ``variance`` keeps the fewest top principal directions explaining that fraction of variance
    (SVCCA); ``None`` keeps every direction above ``eps * lam_max`` (PWCCA / plain CCA)."""
    lam, U = np.linalg.eigh((S + S.T) / 2)
    lam, U = lam[::-1], U[:, ::-1]
    top = float(lam[0]) if lam.size else 0.0
    if top <= 0:
        return np.zeros((S.shape[0], 0))
    keep = lam > eps * top
    if variance is not None:
        pos = np.clip(lam, 0, None)
        k = int(np.searchsorted(np.cumsum(pos) / pos.sum(), variance - 1e-12) + 1)
        keep &= np.arange(len(lam)) < k
    return U[:, keep] / np.sqrt(lam[keep])


def _cca(Sxx, Syy, Sxy, variance=None, eps=1e-10, Wx=None, Wy=None, weights=True):
    """Canonical correlations ``rho`` (descending) and, with ``weights``, the X-side canonical
    weights ``A`` (variates ``X A`` have unit scatter). ``Wx`` / ``Wy``: precomputed whiteners."""
    Wx = _whitener(Sxx, variance, eps) if Wx is None else Wx
    Wy = _whitener(Syy, variance, eps) if Wy is None else Wy
    if Wx.shape[1] == 0 or Wy.shape[1] == 0:
        return np.zeros(0), np.zeros((Sxx.shape[0], 0))
    T = Wx.T @ Sxy @ Wy
    if not weights:
        return np.clip(np.linalg.svd(T, compute_uv=False), 0.0, 1.0), None
    # left singular vectors of T from the (cheaper) symmetric eigenproblem of T T^T
    lam, P = np.linalg.eigh(T @ T.T)
    m = min(T.shape)
    lam, P = lam[::-1][:m], P[:, ::-1][:, :m]
    return np.sqrt(np.clip(lam, 0.0, 1.0)), Wx @ P


def _svcca(Sxx, Syy, Sxy, variance=0.99, Wx=None, Wy=None) -> float:
    rho, _ = _cca(Sxx, Syy, Sxy, variance=variance, Wx=Wx, Wy=Wy, weights=False)
    return float(rho.mean()) if rho.size else 0.0


def _pwcca(Sxx, Syy, Sxy, eps=1e-10, Wx=None, Wy=None) -> float:
    rho, A = _cca(Sxx, Syy, Sxy, variance=None, eps=eps, Wx=Wx, Wy=Wy)
    if not rho.size:
        return 0.0
    # <h_i, x_j> = (X A)_i . X_j = (S_xx A)_{j i}
    alpha = np.abs(Sxx @ A).sum(axis=0)
    if alpha.sum() <= 0:
        return float(rho.mean())
    return float((alpha / alpha.sum()) @ rho)


def similarity_from_moments(
    mom: BlockMoments,
    i: int,
    j: int,
    method: str,
    variance: float = 0.99,
    symmetric: bool = True,
    cache: dict | None = None,
) -> float:
    """Similarity of groups ``i`` and ``j`` of accumulated moments (blocks (i,i), (j,j), (i,j)).
    ``cache`` (a dict reused across calls on the same moments) keeps each group's whitener."""
    Sxx, Syy, Sxy = mom.scatter(i, i), mom.scatter(j, j), mom.scatter(i, j)

    def white(g, S, var):
        if cache is None:
            return None
        key = (g, var)
        if key not in cache:
            cache[key] = _whitener(S, var, 1e-10)
        return cache[key]

    if method == "cka":
        return _cka(Sxx, Syy, Sxy)
    if method == "neuronsim":
        return _neuronsim(Sxy, mom.m2[i], mom.m2[j], symmetric)
    if method == "mixedsim":
        return _mixedsim(Sxx, Syy, Sxy, symmetric)
    if method == "svcca":
        return _svcca(Sxx, Syy, Sxy, variance, white(i, Sxx, variance), white(j, Syy, variance))
    if method == "pwcca":
        return _pwcca(Sxx, Syy, Sxy, 1e-10, white(i, Sxx, None), white(j, Syy, None))
    raise ParameterError(f"unknown similarity method {method!r}; choose from {SIMILARITY_METHODS}")


# ----------------------------------------------------------------------------------------------
# Pairwise API
# ----------------------------------------------------------------------------------------------
def representation_similarity(
    x,
    y,
    method: str = "cka",
    layers_x: Sequence[str] | str | None = None,
    layers_y: Sequence[str] | str | None = None,
    variance: float = 0.99,
    symmetric: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """Similarity of two aligned representations (arrays, ``{layer: array}``, store views or stores,
    restricted to ``layers_x`` / ``layers_y``), streamed in one pass. ``method`` in :data:`SIMILARITY_METHODS`."""
    _check_method(method)
    rx, ry = Representation(x, layers_x, "x"), Representation(y, layers_y, "y")
    mom = accumulate([(rx, None), (ry, None)], [(0, 0), (1, 1), (0, 1)], chunk_rows)
    assert isinstance(mom, BlockMoments)
    return similarity_from_moments(mom, 0, 1, method, variance, symmetric)


def linear_cka(x, y, **kw) -> float:
    """Linear CKA (see module docstring)."""
    return representation_similarity(x, y, "cka", **kw)


def neuronsim(x, y, **kw) -> float:
    """Mean best |correlation| per neuron, symmetrised (Wu et al. 2020)."""
    return representation_similarity(x, y, "neuronsim", **kw)


def mixedsim(x, y, **kw) -> float:
    """Mean linear-regression R^2 per neuron, symmetrised (Wu et al. 2020; see module docstring)."""
    return representation_similarity(x, y, "mixedsim", **kw)


def svcca(x, y, variance: float = 0.99, **kw) -> float:
    """SVCCA: mean canonical correlation after keeping ``variance`` of each side's variance."""
    return representation_similarity(x, y, "svcca", variance=variance, **kw)


def pwcca(x, y, **kw) -> float:
    """Projection-weighted CCA (Morcos et al. 2018), weights from ``x``."""
    return representation_similarity(x, y, "pwcca", **kw)


def _check_method(method: str) -> None:
    if method not in SIMILARITY_METHODS:
        raise ParameterError(f"unknown similarity method {method!r}; choose from {SIMILARITY_METHODS}")


# ----------------------------------------------------------------------------------------------
# Layer-by-layer matrices
# ----------------------------------------------------------------------------------------------
@dataclass
class SimilarityMatrix(Result):
    """``values[i, j]`` = similarity of ``rows[i]`` (of model ``names[0]``) and ``cols[j]`` (of
    model ``names[-1]``)."""

    values: np.ndarray
    rows: list[str]
    cols: list[str]
    method: str
    names: tuple[str, str]

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["values"] = np.asarray([[np.nan if v is None else v for v in r] for r in d["values"]], dtype=np.float64)
        d["names"] = tuple(d["names"])
        return d

    def table(self) -> str:
        w = max(8, *(len(c) for c in self.cols))
        lw = max(len(r) for r in self.rows)
        head = " " * (lw + 1) + " ".join(f"{c:>{w}}" for c in self.cols)
        lines = [f"{self.method}: {self.names[0]} (rows) vs {self.names[1]} (columns)", head]
        for r, vals in zip(self.rows, self.values):
            lines.append(f"{r:<{lw}} " + " ".join(f"{v:>{w}.3f}" for v in vals))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Heatmap PNG of the matrix (through :func:`finegrain.viz.plot_matrix`)."""
        from finegrain.viz import plot_matrix  # heavy (matplotlib): imported only to draw

        return plot_matrix(self.values, path, row_labels=self.rows, col_labels=self.cols, vmin=0.0, vmax=1.0,
                           title=title or f"{self.method}: {self.names[0]} vs {self.names[1]}",
                           xlabel=self.names[1], ylabel=self.names[0], annotate=self.values.size <= 400)


def _is_many(sources) -> bool:
    return isinstance(sources, (list, tuple)) and not isinstance(sources, Mapping)


def similarity_matrices(
    sources,
    layers: Sequence[str] | None = None,
    methods: Sequence[str] = ("cka",),
    layers_b: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    variance: float = 0.99,
    symmetric: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> dict[str, SimilarityMatrix]:
    """Similarity of every pair of layers, for several methods from a single streamed pass.

    ``sources``: one model (a store view, a store or a ``{layer: array}`` dict: all pairs of its layers)
    or a list of two aligned models (layers of A x layers of B). ``layers`` selects A's layers (and B's unless
    ``layers_b`` is given; default: every layer). Memory: the scatter blocks of every needed pair.
    """
    for m in methods:
        _check_method(m)
    if not methods:
        raise ParameterError("no similarity method given")
    srcs = list(sources) if _is_many(sources) else [sources]
    if not 1 <= len(srcs) <= 2:
        raise ParameterError(f"give one or two models, got {len(srcs)}")
    for s in srcs:
        if not isinstance(s, ActivationStore | View | Mapping | Representation):
            raise ParameterError(
                "similarity_matrix needs layered inputs: a store view, an ActivationStore or a {layer: array} "
                f"dict (got {type(s).__name__}); for two plain arrays use representation_similarity"
            )
    reps = [Representation(s, None, None if names is None else names[k]) for k, s in enumerate(srcs)]
    la = list(layers) if layers is not None else list(reps[0].sizes)
    lb = list(layers_b) if layers_b is not None else (la if layers is not None else list(reps[-1].sizes))
    reps[0] = Representation(reps[0], la)
    reps[-1] = Representation(reps[-1], lb)
    if len(reps) == 2:
        if names is None and reps[0].name == reps[1].name:
            reps[0].name, reps[1].name = f"{reps[0].name}[A]", f"{reps[1].name}[B]"
        check_aligned(*reps)
    groups = [(reps[0], [lay]) for lay in la]
    if len(reps) == 1:
        # one model: every layer pair of the union of the requested layers
        union = list(dict.fromkeys(la + lb))
        groups = [(reps[0], [lay]) for lay in union]
        ia = [union.index(x) for x in la]
        ib = [union.index(x) for x in lb]
    else:
        groups = [(reps[0], [lay]) for lay in la] + [(reps[1], [lay]) for lay in lb]
        ia = list(range(len(la)))
        ib = [len(la) + k for k in range(len(lb))]
    pairs = {(g, g) for g in ia + ib} | {(min(a, b), max(a, b)) for a in ia for b in ib}
    mom = accumulate(groups, sorted(pairs), chunk_rows, progress="similarity" if progress else None)
    assert isinstance(mom, BlockMoments)
    out = {}
    cache: dict = {}
    nm = (reps[0].name, reps[-1].name)
    for m in methods:
        vals = np.zeros((len(ia), len(ib)))
        for r, a in enumerate(ia):
            for c, b in enumerate(ib):
                vals[r, c] = similarity_from_moments(mom, a, b, m, variance, symmetric, cache)
        out[m] = SimilarityMatrix(vals, la, lb, m, nm)
    return out


def similarity_matrix(
    sources,
    layers: Sequence[str] | None = None,
    method: str = "cka",
    layers_b: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    plot: str | os.PathLike | None = None,
    **kw,
) -> SimilarityMatrix:
    """One method's layer-by-layer similarity matrix (see :func:`similarity_matrices`); ``plot``
    writes a heatmap PNG there."""
    res = similarity_matrices(sources, layers, (method,), layers_b, names, **kw)[method]
    if plot is not None:
        res.plot(plot)
    return res
