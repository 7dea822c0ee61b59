"""Unsupervised neuron analysis: cross-model correlation (Bau et al. 2019), representation
similarity (Wu et al. 2020), redundancy (Dalvi et al. 2020) and latent concepts (Dalvi et al. 2022).

Everything accepts aligned store views (:class:`~finegrain.store.view.StoreView`, same corpus, same
rows; a whole ``ActivationStore`` is one), ``[rows, d]`` arrays or ``{layer: array}`` dicts;
second-order statistics are streamed over row blocks in float64. Results follow
:class:`finegrain.results.Result`.
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch, zarr or scikit-learn

_API = {
    "AlignmentError": "finegrain.errors",
    "LabelAlignment": "finegrain.unsupervised.concepts",
    "LatentCluster": "finegrain.unsupervised.concepts",
    "LatentConcepts": "finegrain.unsupervised.concepts",
    "BlockMoments": "finegrain.unsupervised.correlation",
    "CorrelationRanking": "finegrain.unsupervised.correlation",
    "CrossModelCorrelation": "finegrain.unsupervised.correlation",
    "NeuronCorrelation": "finegrain.unsupervised.correlation",
    "Representation": "finegrain.unsupervised.correlation",
    "check_aligned": "finegrain.unsupervised.correlation",
    "correlation_matrix": "finegrain.unsupervised.correlation",
    "cross_model_correlation": "finegrain.unsupervised.correlation",
    "NeuronClusters": "finegrain.unsupervised.redundancy",
    "RedundancyReport": "finegrain.unsupervised.redundancy",
    "analyze_redundancy": "finegrain.unsupervised.redundancy",
    "cluster_from_correlation": "finegrain.unsupervised.redundancy",
    "cluster_neurons": "finegrain.unsupervised.redundancy",
    "default_probe": "finegrain.unsupervised.redundancy",
    "probe_accuracy": "finegrain.unsupervised.redundancy",
    "SIMILARITY_METHODS": "finegrain.unsupervised.similarity",
    "SimilarityMatrix": "finegrain.unsupervised.similarity",
    "linear_cka": "finegrain.unsupervised.similarity",
    "mixedsim": "finegrain.unsupervised.similarity",
    "neuronsim": "finegrain.unsupervised.similarity",
    "pwcca": "finegrain.unsupervised.similarity",
    "representation_similarity": "finegrain.unsupervised.similarity",
    "similarity_matrices": "finegrain.unsupervised.similarity",
    "similarity_matrix": "finegrain.unsupervised.similarity",
    "svcca": "finegrain.unsupervised.similarity",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
