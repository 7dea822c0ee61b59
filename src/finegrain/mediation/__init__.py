"""Causal mediation analysis of neurons and attention heads (Vig et al. 2020)."""

from __future__ import annotations

from finegrain.mediation.mediation import (
    FALLBACK_CONTINUATIONS,
    FALLBACK_PROFESSIONS,
    FALLBACK_SUBSTITUTES,
    FALLBACK_TEMPLATES,
    Effects,
    Example,
    Mediation,
    MediationResult,
    builtin_gender_data,
    mediation_analysis,
)

__all__ = [
    "Effects", "Example", "FALLBACK_CONTINUATIONS", "FALLBACK_PROFESSIONS", "FALLBACK_SUBSTITUTES",
    "FALLBACK_TEMPLATES", "Mediation", "MediationResult", "builtin_gender_data", "mediation_analysis",
]
