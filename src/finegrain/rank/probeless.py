"""Probeless ranking (Antverg & Belinkov 2022, "On the pitfalls of analyzing individual neurons in
language models", ICLR): order neurons by how much their class-conditional mean activations differ.
No probe is trained, so the ranking does not mix probe quality with ranking quality."""

from __future__ import annotations

import numpy as np

from finegrain.probe.sources import as_labels, as_source, source_index
from finegrain.rank.ranking import Ranking, ranking_from_scores


def class_means(X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, means [n_classes, d], counts)`` accumulated over row blocks (streams a store)."""
    src = as_source(X, 8192)
    y = as_labels(y)
    if len(y) != src.shape[0]:
        raise ValueError(f"X has {src.shape[0]} rows but y has {len(y)} labels; they must match")
    classes, yi = np.unique(y, return_inverse=True)
    sums = np.zeros((len(classes), src.shape[1]))
    counts = np.bincount(yi, minlength=len(classes)).astype(np.float64)
    for pos, Xb in src.iter_blocks():
        np.add.at(sums, yi[pos], Xb.astype(np.float64))
    return classes, sums / counts[:, None], counts


def probeless_ranking(X, y, index=None) -> Ranking:
    """score(n) = sum over class pairs c < c' of |mean_c(n) - mean_c'(n)|.

    Per-class detail: class c's neurons ordered by sum over c' != c of |mean_c - mean_c'|.
    """
    classes, M, _ = class_means(X, y)
    if len(classes) < 2:
        raise ValueError(f"probeless ranking needs at least 2 classes, got {len(classes)}")
    D = np.abs(M[:, None, :] - M[None, :, :])  # [C, C, d]
    total = D.sum((0, 1)) / 2  # every unordered pair counted once
    per_class = {str(c): D[i].sum(0) for i, c in enumerate(classes)}
    return ranking_from_scores(
        total,
        index if index is not None else source_index(X),
        "probeless",
        per_class_scores=per_class,
        meta={"paper": "Antverg & Belinkov 2022", "classes": [str(c) for c in classes]},
    )
