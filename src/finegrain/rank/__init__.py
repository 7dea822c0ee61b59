"""Neuron rankings. Every method returns a :class:`Ranking` (ordered neuron addresses + scores +
per-class detail) and takes views (the neurons come from the data or the probe, never from a separate
index):

* ``probe_weight_ranking`` — Dalvi et al. 2019 (LCA / NeuroX), from a trained elastic-net probe;
* ``gaussian_ranking`` / ``GaussianProbe`` — Torroba Hennigen et al. 2020;
* ``probeless_ranking`` — Antverg & Belinkov 2022 (on standardised units by default);
* ``ap_ranking`` — Suau et al. 2020 expert units; ``average_precision_columns`` is finegrain's one AP;
* ``minimal_neuron_set`` — LCA selection (Durrani et al. 2020);
* ``rank_neurons`` — any of them by name; ``outlier_dimensions`` — rogue units (Timkey & van Schijndel 2021).
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch
_API = {
    "ap_ranking": "finegrain.rank.ap",
    "average_precision": "finegrain.rank.ap",
    "average_precision_columns": "finegrain.rank.ap",
    "sentence_max_pool": "finegrain.rank.ap",
    "GaussianProbe": "finegrain.rank.gaussian",
    "gaussian_ranking": "finegrain.rank.gaussian",
    "greedy_select": "finegrain.rank.gaussian",
    "DEFAULT_FRACTIONS": "finegrain.rank.lca",
    "MinimalNeuronSet": "finegrain.rank.lca",
    "minimal_neuron_set": "finegrain.rank.lca",
    "METHODS": "finegrain.rank.methods",
    "rank_neurons": "finegrain.rank.methods",
    "OutlierDimensions": "finegrain.rank.outliers",
    "outlier_dimensions": "finegrain.rank.outliers",
    "class_means": "finegrain.rank.probeless",
    "probeless_ranking": "finegrain.rank.probeless",
    "Ranking": "finegrain.rank.ranking",
    "column_neurons": "finegrain.rank.ranking",
    "ranking_from_scores": "finegrain.rank.ranking",
    "entry_thresholds": "finegrain.rank.weights",
    "probe_weight_ranking": "finegrain.rank.weights",
    "top_neurons_per_class": "finegrain.rank.weights",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
