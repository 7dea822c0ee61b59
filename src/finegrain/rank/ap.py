"""Expert units (Suau et al. 2020, "Finding experts in transformer models"): each unit's response
used as a detector of a concept, scored by average precision (AP). A random unit's AP is about the
positive fraction, not 0.5."""

from __future__ import annotations

import numpy as np

from finegrain.probe.sources import as_source, source_index
from finegrain.rank.ranking import Ranking, ranking_from_scores


def average_precision_columns(S: np.ndarray, positive: np.ndarray, chunk: int = 256) -> np.ndarray:
    """AP of every column of ``S`` [n, d] as a score for the boolean ``positive`` [n].

    Same definition as ``sklearn.metrics.average_precision_score``: sum over distinct thresholds of
    (recall increase) * precision, so tied scores are handled as one threshold.
    """
    S = np.asarray(S, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n, d = S.shape
    if len(pos) != n:
        raise ValueError(f"{n} rows of responses but {len(pos)} concept labels")
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError("the concept mask needs both positive and negative examples")
    out = np.empty(d)
    ar = np.arange(n)
    for c0 in range(0, d, chunk):
        block = S[:, c0 : c0 + chunk]
        order = np.argsort(-block, axis=0, kind="stable")
        srt = np.take_along_axis(block, order, 0)
        hits = pos[order]
        tp = np.cumsum(hits, axis=0)
        prec = tp / (ar[:, None] + 1)
        # end of each tie group: the precision every positive inside the group gets
        last = np.ones_like(srt, dtype=bool)
        last[:-1] = srt[:-1] != srt[1:]
        end = np.where(last, ar[:, None], n)
        end = np.minimum.accumulate(end[::-1], axis=0)[::-1]
        prec_end = np.take_along_axis(prec, end, 0)
        out[c0 : c0 + chunk] = (hits * prec_end).sum(0) / n_pos
    return out


def sentence_max_pool(X: np.ndarray, sent_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sentence ids sorted, [n_sentences, d] max over each sentence's rows)``."""
    sent_ids = np.asarray(sent_ids)
    order = np.argsort(sent_ids, kind="stable")
    sids, starts = np.unique(sent_ids[order], return_index=True)
    return sids, np.maximum.reduceat(np.asarray(X)[order], starts, axis=0)


def ap_ranking(
    X,
    concept_mask,
    level: str = "token",
    sent_ids=None,
    index=None,
    both_directions: bool = False,
) -> Ranking:
    """Rank units by their AP as detectors of a concept (Suau et al. 2020).

    ``concept_mask``: boolean per row of ``X`` (e.g. ``labels == "NN"``). ``level="sentence"``
    max-pools each unit's response over the tokens of every sentence (``sent_ids`` per row) and labels
    a sentence positive if any of its tokens is (or pass a mask with one entry per sentence, in
    sorted sentence-id order). ``both_directions`` also scores the negated response and keeps the
    better AP (Suau et al. use the raw response only).
    """
    if level not in ("token", "sentence"):
        raise ValueError(f"level must be 'token' or 'sentence', got {level!r}")
    src = as_source(X)
    Xm = src.materialize()
    mask = np.asarray(concept_mask).astype(bool)
    if level == "sentence":
        if sent_ids is None:
            sent_ids = getattr(getattr(src, "store", None), "sent_ids", None)
            if sent_ids is not None:
                sent_ids = sent_ids[src.rows]
        if sent_ids is None:
            raise ValueError("level='sentence' needs sent_ids (one sentence id per row)")
        sent_ids = np.asarray(sent_ids)
        if len(sent_ids) != len(Xm):
            raise ValueError(f"X has {len(Xm)} rows but sent_ids has {len(sent_ids)}")
        sids, Xm = sentence_max_pool(Xm, sent_ids)
        if len(mask) == len(sent_ids):
            _, pooled = sentence_max_pool(mask[:, None].astype(np.int8), sent_ids)
            mask = pooled[:, 0].astype(bool)
        elif len(mask) != len(sids):
            raise ValueError(
                f"concept_mask has {len(mask)} entries: expected one per row ({len(sent_ids)}) or per "
                f"sentence ({len(sids)})"
            )
    elif len(mask) != len(Xm):
        raise ValueError(f"X has {len(Xm)} rows but concept_mask has {len(mask)}")
    ap = average_precision_columns(Xm, mask)
    if both_directions:
        ap = np.maximum(ap, average_precision_columns(-Xm, mask))
    return ranking_from_scores(
        ap,
        index if index is not None else source_index(X),
        "ap",
        meta={"paper": "Suau et al. 2020", "level": level, "positive_fraction": float(mask.mean())},
    )
