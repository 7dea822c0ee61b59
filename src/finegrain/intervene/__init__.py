"""Interventions on neurons during the forward pass, ablation inside the model, and controlling
behaviour (Dalvi et al. 2019; Lakretz et al. 2019; Suau et al. 2020; Bau et al. 2019)."""

from __future__ import annotations

from finegrain.intervene.ablation import (
    AblationCurve,
    SweepResult,
    ablation_curve,
    ablation_edit,
    benchmark_sweep,
    ranked_neurons,
    single_unit_sweep,
)
from finegrain.intervene.control import (
    ControlResult,
    ExpertUnits,
    average_precision,
    expert_units,
    expert_units_control,
    expert_units_from_store,
    generate,
)
from finegrain.intervene.edits import (
    Edit,
    Head,
    Hook,
    Mean,
    PerRow,
    Resample,
    Scale,
    Set,
    Steer,
    Zero,
    head_neurons,
    intervene,
    last_positions,
    mean_values,
    neuron_list,
    resolve_neurons,
    word_positions,
)
from finegrain.intervene.scoring import (
    Accuracy,
    Agreement,
    AgreementPair,
    LMLoss,
    Objective,
    agreement_accuracy,
    agreement_margins,
    continuation_logprob,
    continuation_logprobs,
    encode_continuations,
    simple_agreement_pairs,
)

__all__ = [
    "AblationCurve", "Accuracy", "Agreement", "AgreementPair", "ControlResult", "Edit", "ExpertUnits", "Head",
    "Hook", "LMLoss", "Mean", "Objective", "PerRow", "Resample", "Scale", "Set", "Steer", "SweepResult", "Zero",
    "ablation_curve", "ablation_edit", "agreement_accuracy", "agreement_margins", "average_precision",
    "benchmark_sweep", "continuation_logprob", "continuation_logprobs", "encode_continuations", "expert_units",
    "expert_units_control", "expert_units_from_store", "generate", "head_neurons", "intervene",
    "last_positions", "mean_values", "neuron_list", "ranked_neurons", "resolve_neurons",
    "simple_agreement_pairs", "single_unit_sweep", "word_positions",
]
