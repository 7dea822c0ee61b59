"""Unsupervised neuron analysis: cross-model correlation (Bau et al. 2019), representation
similarity (Wu et al. 2020), redundancy (Dalvi et al. 2020) and latent concepts (Dalvi et al. 2022).

Everything accepts aligned ``ActivationStore``s (same corpus, same rows), ``[rows, d]`` arrays or
``{layer: array}`` dicts; second-order statistics are streamed over row chunks in float64.
"""

from __future__ import annotations

from finegrain.unsupervised.concepts import Concept, LabelAlignment, LatentConcepts
from finegrain.unsupervised.correlation import (
    AlignmentError,
    BlockMoments,
    CorrelationRanking,
    CrossModelCorrelation,
    NeuronCorrelation,
    Representation,
    check_aligned,
    correlation_matrix,
    cross_model_correlation,
)
from finegrain.unsupervised.redundancy import (
    NeuronClusters,
    RedundancyReport,
    analyze_redundancy,
    cluster_from_correlation,
    cluster_neurons,
)
from finegrain.unsupervised.similarity import (
    SIMILARITY_METHODS,
    SimilarityMatrix,
    linear_cka,
    mixedsim,
    neuronsim,
    pwcca,
    representation_similarity,
    similarity_matrices,
    similarity_matrix,
    svcca,
)

__all__ = [
    "AlignmentError",
    "BlockMoments",
    "Concept",
    "CorrelationRanking",
    "CrossModelCorrelation",
    "LabelAlignment",
    "LatentConcepts",
    "NeuronClusters",
    "NeuronCorrelation",
    "RedundancyReport",
    "Representation",
    "SIMILARITY_METHODS",
    "SimilarityMatrix",
    "analyze_redundancy",
    "check_aligned",
    "cluster_from_correlation",
    "cluster_neurons",
    "correlation_matrix",
    "cross_model_correlation",
    "linear_cka",
    "mixedsim",
    "neuronsim",
    "pwcca",
    "representation_similarity",
    "similarity_matrices",
    "similarity_matrix",
    "svcca",
]
