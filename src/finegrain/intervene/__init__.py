"""Interventions on neurons during the forward pass, ablation inside the model, and controlling
behaviour (Dalvi et al. 2019; Lakretz et al. 2019; Suau et al. 2020; Bau et al. 2019).

* edits (:class:`Zero`, :class:`Set`, :class:`Scale`, :class:`Mean`, :class:`Steer`, :class:`Resample`,
  :class:`PerRow`, :class:`Hook`) applied with :func:`intervene`;
* objectives (:class:`LMLoss`, :class:`Accuracy`, :class:`Agreement`) and continuation scores (word
  boundaries on character models);
* :func:`model_ablation_curve` and :func:`single_unit_sweep` (layers below the edit shared,
  :func:`shared_prefix`), :func:`sweep_agreement` against an estimate;
* :func:`expert_units` (Suau et al. 2020) and :func:`concept_control` (against random units).
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch
_API = {
    "ModelAblationCurve": "finegrain.intervene.ablation",
    "SweepAgreement": "finegrain.intervene.ablation",
    "SweepResult": "finegrain.intervene.ablation",
    "ablation_edit": "finegrain.intervene.ablation",
    "benchmark_sweep": "finegrain.intervene.ablation",
    "model_ablation_curve": "finegrain.intervene.ablation",
    "ranked_neurons": "finegrain.intervene.ablation",
    "rows_to_csv": "finegrain.intervene.ablation",
    "single_unit_sweep": "finegrain.intervene.ablation",
    "sweep_agreement": "finegrain.intervene.ablation",
    "ControlResult": "finegrain.intervene.control",
    "ExpertUnits": "finegrain.intervene.control",
    "concept_classes": "finegrain.intervene.control",
    "concept_control": "finegrain.intervene.control",
    "concept_sentences": "finegrain.intervene.control",
    "concept_words": "finegrain.intervene.control",
    "expert_units": "finegrain.intervene.control",
    "expert_units_from_store": "finegrain.intervene.control",
    "expert_units_from_texts": "finegrain.intervene.control",
    "generate": "finegrain.intervene.control",
    "sentence_responses": "finegrain.intervene.control",
    "Edit": "finegrain.intervene.edits",
    "Head": "finegrain.intervene.edits",
    "Hook": "finegrain.intervene.edits",
    "Mean": "finegrain.intervene.edits",
    "PerRow": "finegrain.intervene.edits",
    "Resample": "finegrain.intervene.edits",
    "Scale": "finegrain.intervene.edits",
    "Set": "finegrain.intervene.edits",
    "Steer": "finegrain.intervene.edits",
    "Zero": "finegrain.intervene.edits",
    "eval_mode": "finegrain.models.base",
    "head_neurons": "finegrain.intervene.edits",
    "intervene": "finegrain.intervene.edits",
    "last_positions": "finegrain.intervene.edits",
    "mean_values": "finegrain.intervene.edits",
    "neuron_list": "finegrain.intervene.edits",
    "resolve_neurons": "finegrain.intervene.edits",
    "word_positions": "finegrain.intervene.edits",
    "Prefix": "finegrain.intervene.resume",
    "shared_prefix": "finegrain.intervene.resume",
    "Accuracy": "finegrain.intervene.scoring",
    "Agreement": "finegrain.intervene.scoring",
    "AgreementPair": "finegrain.intervene.scoring",
    "LMLoss": "finegrain.intervene.scoring",
    "Objective": "finegrain.intervene.scoring",
    "agreement_accuracy": "finegrain.intervene.scoring",
    "agreement_margins": "finegrain.intervene.scoring",
    "continuation_logprob": "finegrain.intervene.scoring",
    "continuation_logprobs": "finegrain.intervene.scoring",
    "encode_continuations": "finegrain.intervene.scoring",
    "simple_agreement_pairs": "finegrain.intervene.scoring",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
