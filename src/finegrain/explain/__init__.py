"""Concept-based explanations of predictions: which *concepts* a prediction relied on, and a causal
check that it did.

* concepts, one interface (:class:`Concept`: ``name``, ``kind``, ``layer``, ``neurons`` or
  ``direction``, ``contribution(attr, context)``): supervised neuron sets from probes
  (:class:`NeuronConcept` via :class:`SupervisedConcepts`, Dalvi et al. 2019), latent clusters
  (:class:`LatentConcept` via :func:`latent_concepts`, Dalvi et al. 2022 ConceptX / NxPlain) and
  concept activation vectors (:class:`DirectionConcept` via :func:`learn_cavs`, :func:`concept_cavs`;
  :func:`tcav`, Kim et al. 2018; as explanation concepts their null is random directions with as much
  activation along them, :func:`scale_matched_directions`); a :class:`ConceptSet` is a list of them;
* :func:`explain` — per prediction a :class:`PredictionExplanation`: each concept's share of the
  layer's neuron attribution, its z-score / p-value against random concepts of the same size,
  ablation effect of the top concepts (:mod:`finegrain.intervene`), and :func:`ablation_agreement`
  (Spearman over a batch);
* :func:`explain_dataset` — which concepts the model relies on for each output class;
* :func:`explain_section_html` — HTML fragment with per-concept token highlighting for the report;
* :func:`default_concepts` — supervised + latent + direction concepts of a layer from the built-in
  generated corpus (store extracted on the fly; cached under ``cache_dir`` when given), as used by
  ``finegrain explain``.

(Compositional explanations of single neurons — formulas over row concepts — are
:mod:`finegrain.describe`'s :class:`~finegrain.describe.NeuronFormula` / :class:`~finegrain.describe.ConceptMasks`.)
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch, zarr or scikit-learn

_API = {
    "ConceptError": "finegrain.errors",
    "Concept": "finegrain.explain.concepts",
    "ConceptSet": "finegrain.explain.concepts",
    "DirectionConcept": "finegrain.explain.concepts",
    "LatentConcept": "finegrain.explain.concepts",
    "LayerContext": "finegrain.explain.concepts",
    "NeuronConcept": "finegrain.explain.concepts",
    "SupervisedConcepts": "finegrain.explain.concepts",
    "latent_concepts": "finegrain.explain.concepts",
    "layer_spectrum": "finegrain.explain.concepts",
    "layer_view": "finegrain.explain.concepts",
    "random_concepts": "finegrain.explain.concepts",
    "scale_matched_directions": "finegrain.explain.concepts",
    "DEFAULT_PROPERTIES": "finegrain.explain.defaults",
    "default_cache_dir": "finegrain.explain.defaults",
    "default_concepts": "finegrain.explain.defaults",
    "negation_cues": "finegrain.explain.defaults",
    "ConceptScore": "finegrain.explain.predictions",
    "DatasetExplanation": "finegrain.explain.predictions",
    "PredictionExplanation": "finegrain.explain.predictions",
    "ablation_agreement": "finegrain.explain.predictions",
    "explain": "finegrain.explain.predictions",
    "explain_dataset": "finegrain.explain.predictions",
    "explain_section_html": "finegrain.explain.predictions",
    "layer_context": "finegrain.explain.predictions",
    "CAVSet": "finegrain.explain.cavs",
    "TCAVResult": "finegrain.explain.cavs",
    "cav_probe": "finegrain.explain.cavs",
    "cavs_from_store": "finegrain.explain.cavs",
    "concept_cavs": "finegrain.explain.cavs",
    "learn_cav": "finegrain.explain.cavs",
    "learn_cavs": "finegrain.explain.cavs",
    "mean_difference_direction": "finegrain.explain.cavs",
    "store_spectrum": "finegrain.explain.cavs",
    "tcav": "finegrain.explain.cavs",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
