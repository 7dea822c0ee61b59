"""Causal mediation analysis of neurons and attention heads (Vig et al. 2020), with plausibility
checks that say when the numbers do not describe gender bias."""

from finegrain.lazy import lazy_api

# imported on first use, so that a command line that only parses arguments does not load torch
_API = {name: "finegrain.mediation.mediation" for name in (
    "CRITERIA", "POSITIONS", "Effects", "Example", "Mediation", "MediationResult", "builtin_gender_data",
    "mediation_analysis")}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
