"""Concept-based explanations of predictions: which *concepts* a prediction relied on, and a causal
check that it did.

* concepts, one interface (:class:`Concept`: ``name``, ``kind``, ``layer``, ``neurons`` or
  ``direction``, ``contribution(attr, context)``): supervised neuron sets from probes
  (:class:`SupervisedConcepts`, Dalvi et al. 2019), latent clusters (:func:`latent_concepts`,
  Dalvi et al. 2022 ConceptX / NxPlain) and concept activation vectors (:func:`learn_cavs`,
  :func:`tcav`, :func:`concept_cavs`, Kim et al. 2018; as explanation concepts their null is random
  directions with as much activation along them, :func:`scale_matched_directions`);
* :func:`explain` — per prediction: each concept's share of the layer's neuron attribution, its
  z-score / p-value against random concepts of the same size, ablation effect of the top concepts
  (:mod:`finegrain.intervene`), and :func:`ablation_agreement` (Spearman over a batch);
* :func:`explain_dataset` — which concepts the model relies on for each output class;
* :func:`explain_section_html` — HTML fragment with per-concept token highlighting for the report;
* :func:`default_concepts` — supervised + latent concepts of a layer from the built-in generated
  corpus (store extracted on the fly and cached), as used by ``finegrain explain``.
"""

from __future__ import annotations

from finegrain.explain.cli import default_concepts
from finegrain.explain.concepts import (
    Concept,
    ConceptError,
    ConceptSet,
    DirectionConcept,
    LatentConcept,
    LayerContext,
    NeuronConcept,
    SupervisedConcepts,
    latent_concepts,
    layer_spectrum,
    random_concepts,
    scale_matched_directions,
)
from finegrain.explain.explain import (
    ConceptScore,
    DatasetExplanation,
    Explanation,
    ablation_agreement,
    explain,
    explain_dataset,
    explain_section_html,
    layer_context,
)
from finegrain.explain.tcav import (
    CAVSet,
    TCAVResult,
    cavs_from_store,
    concept_cavs,
    learn_cav,
    learn_cavs,
    mean_difference_direction,
    store_spectrum,
    tcav,
)

__all__ = [
    "CAVSet", "Concept", "ConceptError", "ConceptScore", "ConceptSet", "DatasetExplanation", "DirectionConcept",
    "Explanation", "LatentConcept", "LayerContext", "NeuronConcept", "SupervisedConcepts", "TCAVResult",
    "ablation_agreement", "cavs_from_store", "concept_cavs", "default_concepts", "explain", "explain_dataset",
    "explain_section_html", "latent_concepts", "layer_context", "layer_spectrum", "learn_cav", "learn_cavs",
    "mean_difference_direction", "random_concepts", "store_spectrum", "tcav", "scale_matched_directions",
]
