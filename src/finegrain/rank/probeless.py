"""Probeless ranking (Antverg & Belinkov 2022, "On the pitfalls of analyzing individual neurons in
language models", ICLR): order neurons by how much their class-conditional mean activations differ.
No probe is trained, so the ranking does not mix probe quality with ranking quality.

By default the differences are taken on standardised activations (each unit divided by its standard
deviation over the data): a few units of BERT-like models have a variance an order of magnitude above the
rest (Timkey & van Schijndel 2021, "All bark and no bite: rogue dimensions in transformer language models
obscure representational quality") and would otherwise top every ranking whatever they encode.
``standardize=False`` is the paper's raw variant. Streams: one pass over the view's blocks.
"""

from __future__ import annotations

import numpy as np

from finegrain.errors import ParameterError
from finegrain.probe.sources import labelled_view
from finegrain.probe.stats import view_bounds
from finegrain.rank.ranking import Ranking, ranking_from_scores


def class_means(X, y=None, return_std: bool = False):
    """``(classes, means [n_classes, d], counts)`` accumulated over row blocks (streams a store); with
    ``return_std`` also every unit's standard deviation over all rows (same pass)."""
    view, y = labelled_view(X, y, what="X")
    classes, yi = np.unique(y, return_inverse=True)
    C, d = len(classes), view.n_features
    sums = np.zeros((C, d))
    shift, sq = None, np.zeros(d)
    for start, stop in view_bounds(view):
        Xb = view.read(start, stop).astype(np.float64)
        onehot = np.zeros((C, stop - start))
        onehot[yi[start:stop], np.arange(stop - start)] = 1.0
        sums += onehot @ Xb
        if return_std:
            if shift is None:
                shift = Xb.mean(0)
            D = Xb - shift
            sq += np.einsum("ij,ij->j", D, D)
    counts = np.bincount(yi, minlength=C).astype(np.float64)
    means = sums / counts[:, None]
    if not return_std:
        return classes, means, counts
    n = counts.sum()
    m1 = sums.sum(0) / n - shift
    std = np.sqrt(np.maximum(sq / n - m1 * m1, 0.0))
    return classes, means, counts, std


def probeless_ranking(X, y=None, index=None, standardize: bool = True) -> Ranking:
    """score(n) = sum over class pairs c < c' of |mean_c(n) - mean_c'(n)| / std(n) (``standardize=False``:
    without the division, as in Antverg & Belinkov 2022). ``X`` is a labelled view, or an array with ``y``
    (and ``index`` naming its columns).

    Per-class detail: class c's neurons ordered by sum over c' != c of |mean_c - mean_c'| (/ std).
    """
    view, y = labelled_view(X, y, index, what="X")
    classes, M, _, std = class_means(view, y, return_std=True)
    if len(classes) < 2:
        raise ParameterError(f"probeless ranking needs at least 2 classes, got {len(classes)}")
    D = np.abs(M[:, None, :] - M[None, :, :])  # [C, C, d]
    if standardize:
        D = D / np.where(std > 0, std, np.inf)  # a constant unit separates nothing
    total = D.sum((0, 1)) / 2  # every unordered pair counted once
    per_class = {str(c): D[i].sum(0) for i, c in enumerate(classes)}
    return ranking_from_scores(
        total,
        view.index,
        "probeless",
        per_class_scores=per_class,
        meta={"paper": "Antverg & Belinkov 2022", "classes": [str(c) for c in classes],
              "standardized": bool(standardize)},
    )


__all__ = ["class_means", "probeless_ranking"]
