"""One entry point to every ranking method, by name (what the CLI and the report call)."""

from __future__ import annotations

from finegrain.errors import ParameterError
from finegrain.probe.probes import BaseProbe, LinearProbe, check_neurons
from finegrain.probe.sources import as_labelled
from finegrain.rank.ap import ap_ranking
from finegrain.rank.gaussian import gaussian_ranking
from finegrain.rank.probeless import probeless_ranking
from finegrain.rank.ranking import Ranking
from finegrain.rank.weights import probe_weight_ranking

#: "probe" and "lca" are the same method: Dalvi et al. 2019's ordering by elastic-net probe weights
METHODS = ("probe", "lca", "gaussian", "probeless", "ap")


def rank_neurons(
    train,
    method: str = "probe",
    dev=None,
    probe: BaseProbe | None = None,
    concept=None,
    level: str = "token",
    criterion: str = "loglik",
    max_dims: int | None = None,
    standardize: bool = True,
    progress: bool = True,
) -> Ranking:
    """Rank the neurons of ``train`` (a labelled view or ``(X, y)`` pair) for its labels by ``method``:

    * ``probe`` / ``lca`` — :func:`probe_weight_ranking` of ``probe`` (a fitted linear probe is used as it
      is, after checking that its neurons are ``train``'s; an unfitted one, default ``LinearProbe()``, is
      fitted on ``train``, stopping on ``dev``);
    * ``gaussian`` — :func:`gaussian_ranking` (needs ``dev``; ``criterion``, ``max_dims``);
    * ``probeless`` — :func:`probeless_ranking` (``standardize``);
    * ``ap`` — :func:`ap_ranking` of ``concept`` (a label value or a boolean mask; ``level``).
    """
    if method not in METHODS:
        raise ParameterError(f"unknown ranking method {method!r}; choose from {METHODS}")
    view, y = as_labelled(train, "train")
    if method in ("probe", "lca"):
        probe = probe if probe is not None else LinearProbe()
        if not hasattr(type(probe), "penalized_coef_") and not hasattr(probe, "coef_"):
            raise ParameterError(f"ranking by probe weights needs a linear probe (LinearProbe, LogisticProbe), "
                                 f"not {type(probe).__name__}")
        if getattr(probe, "fitted_", False):
            check_neurons(probe, view.index, "train")
        else:
            probe = probe.clone().fit(view, y, dev=dev)
        return probe_weight_ranking(probe)
    if method == "gaussian":
        if dev is None:
            raise ParameterError("the Gaussian ranking selects dimensions on a dev split: pass dev=")
        return gaussian_ranking((view, y), dev, criterion=criterion, max_dims=max_dims, progress=progress)
    if method == "probeless":
        return probeless_ranking(view, y, standardize=standardize)
    if concept is None:
        raise ParameterError(f"the AP ranking needs a concept: one label value of {sorted(set(y.tolist()))[:20]}, "
                             "or a boolean mask per row")
    named = isinstance(concept, str)
    ranking = ap_ranking(view, y == concept if named else concept, level=level)
    if named:
        ranking.meta["concept"] = concept
    return ranking


__all__ = ["METHODS", "rank_neurons"]
