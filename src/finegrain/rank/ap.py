"""Expert units (Suau et al. 2020, "Finding experts in transformer models"): each unit's response
used as a detector of a concept, scored by average precision (AP). A random unit's AP is about the
positive fraction, not 0.5.

:func:`average_precision_columns` is finegrain's one AP (scikit-learn's definition, ties as one
threshold); every analysis that scores units by AP uses it.

AP depends only on the *order* of a unit's responses, so it is unchanged by standardising a unit (or any
increasing affine map of it): outlier ("rogue") dimensions with a large variance (Timkey & van Schijndel
2021) get no advantage from their scale here, and there is no raw / standardised variant to choose.
"""

from __future__ import annotations

import numpy as np

from finegrain.errors import ParameterError
from finegrain.probe.stats import view_bounds
from finegrain.rank.ranking import Ranking, ranking_from_scores
from finegrain.store.view import View, as_view

LEVELS = ("token", "sentence")


def average_precision_columns(S, positive, chunk: int = 256) -> np.ndarray:
    """AP of every column of ``S`` [n, d] as a score for the boolean ``positive`` [n].

    Same definition as ``sklearn.metrics.average_precision_score``: sum over distinct thresholds of
    (recall increase) * precision, so tied scores are handled as one threshold. Columns are converted to
    float64 ``chunk`` at a time (never the whole matrix).
    """
    S = np.asarray(S)
    if S.ndim == 1:
        S = S[:, None]
    pos = np.asarray(positive, dtype=bool)
    n, d = S.shape
    if len(pos) != n:
        raise ParameterError(f"{n} rows of responses but {len(pos)} concept labels")
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == n:
        raise ParameterError("the concept mask needs both positive and negative examples")
    out = np.empty(d)
    ar = np.arange(n)
    for c0 in range(0, d, chunk):
        block = np.asarray(S[:, c0 : c0 + chunk], dtype=np.float64)
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


def average_precision(scores, positive) -> float:
    """AP of one score vector (:func:`average_precision_columns` of a single column)."""
    return float(average_precision_columns(np.asarray(scores).reshape(-1, 1), positive)[0])


def sentence_max_pool(X, sent_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """``(sentence ids sorted, [n_sentences, d] max over each sentence's rows)``, streamed over the blocks
    of a view (``X``: a view, whose own sentence ids are used, or an array with ``sent_ids``)."""
    view, _ = as_view(X)
    sent_ids = view.sent_ids if sent_ids is None else np.asarray(sent_ids)
    if len(sent_ids) != len(view):
        raise ParameterError(f"X has {len(view)} rows but sent_ids has {len(sent_ids)}")
    sids, inverse = np.unique(sent_ids, return_inverse=True)
    out = np.full((len(sids), view.n_features), -np.inf, dtype=np.float32)
    for start, stop in view_bounds(view):
        Xb = view.read(start, stop)
        g = inverse[start:stop]
        order = np.argsort(g, kind="stable")
        gs, first = np.unique(g[order], return_index=True)
        out[gs] = np.maximum(out[gs], np.maximum.reduceat(Xb[order], first, axis=0))
    return sids, out


def _concept_mask(view: View, concept) -> np.ndarray:
    if isinstance(concept, str | int | np.integer) and not isinstance(concept, bool):
        if not view.has_labels:
            raise ParameterError(f"concept {concept!r} names a label value, but the view has no labels")
        return view.labels() == concept
    return np.asarray(concept).astype(bool)


def ap_ranking(
    X,
    concept,
    level: str = "token",
    sent_ids=None,
    index=None,
    both_directions: bool = False,
) -> Ranking:
    """Rank units by their AP as detectors of a concept (Suau et al. 2020).

    ``X``: a view (or an array, with ``index`` naming its columns). ``concept``: a label value of the
    view's labels (e.g. ``"NOUN"``) or a boolean mask per row (or, at sentence level, per sentence in
    sorted sentence-id order). ``level="sentence"`` max-pools each unit's response over the tokens of
    every sentence (the view's sentence ids, or ``sent_ids``) and labels a sentence positive if any of its
    tokens is; it streams. Token level sorts every unit's responses over all rows, so it reads the view
    into memory once (float32; select fewer neurons for a store larger than memory).
    ``both_directions`` also scores the negated response and keeps the better AP (Suau et al. use the
    raw response only).
    """
    if level not in LEVELS:
        raise ParameterError(f"level must be 'token' or 'sentence', got {level!r}")
    if level == "sentence" and sent_ids is None and not isinstance(X, View):
        raise ParameterError("level='sentence' on an array needs sent_ids (one sentence id per row)")
    view, _ = as_view(X, index=index)
    mask = _concept_mask(view, concept)
    if level == "sentence":
        sids, S = sentence_max_pool(view, sent_ids)
        if len(mask) == len(view):
            _, pooled = sentence_max_pool(mask[:, None].astype(np.float32), view.sent_ids if sent_ids is None
                                          else sent_ids)
            mask = pooled[:, 0] > 0
        elif len(mask) != len(sids):
            raise ParameterError(
                f"concept has {len(mask)} entries: expected one per row ({len(view)}) or per "
                f"sentence ({len(sids)})"
            )
    else:
        if len(mask) != len(view):
            raise ParameterError(f"X has {len(view)} rows but the concept mask has {len(mask)}")
        S = view.materialize()
    ap = average_precision_columns(S, mask)
    if both_directions:
        ap = np.maximum(ap, average_precision_columns(-S, mask))
    return ranking_from_scores(
        ap,
        view.index,
        "ap",
        meta={"paper": "Suau et al. 2020", "level": level, "positive_fraction": float(mask.mean()),
              **({"concept": concept} if isinstance(concept, str) else {})},
    )


__all__ = ["LEVELS", "ap_ranking", "average_precision", "average_precision_columns", "sentence_max_pool"]
