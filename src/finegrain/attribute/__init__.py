"""Causation analysis: which input words and which neurons caused a prediction, and which words act
together.

* :func:`attribute` — token/word attributions with Captum methods (IG, saliency, DeepLift, SHAP,
  ablation, occlusion, layer IG / conductance, neuron conductance) on any :class:`Target`;
* :func:`neuron_attribution` — attributions to every unit of a layer, per token, with neuron
  addresses;
* :func:`integrated_hessians`, :func:`shapley_taylor`, :func:`archipelago` — pairwise interactions;
* :func:`faithfulness`, :func:`evaluate_methods`, :func:`infidelity`, :func:`sensitivity` — ERASER
  comprehensiveness / sufficiency (AOPC), deletion / insertion curves, Captum's metrics;
* :func:`train_head` — a linear classification head on frozen MiniLM for a built-in task.
"""

from __future__ import annotations

from finegrain.attribute._core import AttributionError
from finegrain.attribute.faithfulness import (
    Faithfulness,
    comprehensiveness,
    evaluate_methods,
    faithfulness,
    format_table,
    infidelity,
    sensitivity,
    sufficiency,
)
from finegrain.attribute.heads import builtin_sentiment, head_adapter, load_head, save_head, train_head
from finegrain.attribute.interactions import (
    Interaction,
    arch_detect,
    archipelago,
    archipelago_game,
    find_relu,
    integrated_hessians,
    integrated_hessians_tensor,
    interactions,
    merge_pairs,
    shapley_taylor,
    shapley_taylor_game,
    softplus_substitution,
    sti_total,
)
from finegrain.attribute.methods import (
    METHODS,
    Attribution,
    AttributionMethod,
    LayerAttribution,
    TensorAttribution,
    attribute,
    attribute_tensor,
    compare_methods,
    neuron_attribution,
)
from finegrain.attribute.render import html_heatmap, interaction_table, save_interaction_png, save_json, text_table
from finegrain.attribute.targets import (
    ClassTarget,
    ContinuationTarget,
    MaskedTokenTarget,
    NeuronTarget,
    NextTokenTarget,
    SimilarityTarget,
    Target,
    TargetError,
    parse_target,
)

__all__ = [
    "METHODS", "Attribution", "AttributionError", "AttributionMethod", "ClassTarget", "ContinuationTarget",
    "Faithfulness", "Interaction", "LayerAttribution", "MaskedTokenTarget", "NeuronTarget", "NextTokenTarget",
    "SimilarityTarget", "Target", "TargetError", "TensorAttribution", "arch_detect", "archipelago",
    "archipelago_game", "attribute", "attribute_tensor", "builtin_sentiment", "compare_methods",
    "comprehensiveness", "evaluate_methods", "faithfulness", "find_relu", "format_table", "head_adapter",
    "html_heatmap", "infidelity", "integrated_hessians", "integrated_hessians_tensor", "interaction_table",
    "interactions", "load_head", "merge_pairs", "neuron_attribution", "parse_target", "save_head",
    "save_interaction_png", "save_json", "sensitivity", "shapley_taylor", "shapley_taylor_game",
    "softplus_substitution", "sti_total", "sufficiency", "text_table", "train_head",
]
