"""Causation analysis: which input words and which neurons caused a prediction, and which words act
together.

* :func:`attribute` — token/word attributions with Captum methods (IG, saliency, DeepLift, SHAP,
  ablation, occlusion) and layer IG / conductance, neuron conductance through the hook points, on
  any :class:`Target` and any adapter (transformers, LSTMs such as textgenrnn, users' own modules);
  every result names its target in words (:class:`TargetDescription`, :func:`describe_target`) and
  checks completeness;
* :func:`visualization_records` / :func:`html_heatmap` — Captum-style records (true / predicted /
  target label, total, words) in HTML and the terminal;
* :func:`attribute_generation` — inseq-style attribution of a generated continuation: each generated
  token to the prompt and the tokens before it (a token x token matrix, HTML, PNG), with a KV-cached
  greedy :func:`generate_greedy` on decoders, encoder-decoders and LSTM language models;
* :func:`neuron_attribution` — attributions to every unit of a layer, per token, with neuron
  addresses;
* :func:`integrated_hessians`, :func:`shapley_taylor`, :func:`archipelago` — pairwise interactions;
* :func:`faithfulness`, :func:`evaluate_methods`, :func:`infidelity`, :func:`sensitivity` — ERASER
  comprehensiveness / sufficiency (AOPC), deletion / insertion curves, Captum's metrics;
* :func:`train_head` — a linear classification head on frozen MiniLM for a built-in task.
"""

from finegrain.lazy import lazy_api

# imported on first use, so that a command line that only parses arguments does not load torch (no
# submodule is named like a function it exports: importing it would shadow the function)
_API = {
    **{name: "finegrain.attribute._core" for name in (
        "DELTA_TOLERANCE", "AttributionError", "CompletenessWarning", "Prepared", "as_word_lists", "describe_target",
        "prepare")},
    **{name: "finegrain.attribute.metrics" for name in (
        "Faithfulness", "FaithfulnessList", "MethodComparison", "comprehensiveness", "evaluate_methods",
        "faithfulness", "format_table",
        "infidelity", "sensitivity", "sufficiency")},
    **{name: "finegrain.attribute.generation" for name in (
        "Generation", "GenerationAttribution", "GenerationTarget", "attribute_generation", "generate_greedy",
        "generations_html")},
    **{name: "finegrain.attribute.heads" for name in (
        "builtin_sentiment", "head_adapter", "load_head", "save_head", "train_head")},
    **{name: "finegrain.attribute.interaction" for name in (
        "Interaction", "arch_detect", "archipelago", "archipelago_game", "find_relu", "integrated_hessians",
        "integrated_hessians_tensor", "interactions", "merge_pairs", "shapley_taylor", "shapley_taylor_game",
        "softplus_substitution", "sti_total")},
    **{name: "finegrain.attribute.methods" for name in (
        "AUTO_STEPS", "METHODS", "Attribution", "AttributionComparison", "AttributionMethod", "LayerAttribution",
        "LayerAttributionList",
        "TensorAttribution", "attribute", "attribute_tensor", "compare_methods", "neuron_attribution")},
    **{name: "finegrain.attribute.render" for name in (
        "VisualizationRecord", "html_heatmap", "interaction_table", "load_json", "records_html", "records_table",
        "save_interaction_png", "save_json", "text_table", "visualization_records")},
    **{name: "finegrain.attribute.targets" for name in (
        "ClassTarget", "ContinuationTarget", "MaskedTokenTarget", "NeuronTarget", "NextTokenTarget",
        "SimilarityTarget", "Target", "TargetDescription", "TargetError", "class_labels", "parse_target")},
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
