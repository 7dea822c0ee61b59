"""Neuron rankings. Every method returns a :class:`Ranking` (ordered neuron addresses + scores +
per-class detail):

* ``probe_weight_ranking`` — Dalvi et al. 2019 (LCA / NeuroX), from a trained elastic-net probe;
* ``gaussian_ranking`` / ``GaussianProbe`` — Torroba Hennigen et al. 2020;
* ``probeless_ranking`` — Antverg & Belinkov 2022;
* ``ap_ranking`` — Suau et al. 2020 expert units;
* ``minimal_neuron_set`` — LCA selection (Durrani et al. 2020).
"""

from finegrain.rank.ap import ap_ranking, average_precision_columns, sentence_max_pool
from finegrain.rank.gaussian import GaussianProbe, gaussian_ranking, greedy_select
from finegrain.rank.lca import DEFAULT_FRACTIONS, MinimalNeuronSet, minimal_neuron_set
from finegrain.rank.probeless import class_means, probeless_ranking
from finegrain.rank.ranking import Ranking, column_neurons, ranking_from_scores
from finegrain.rank.weights import entry_thresholds, probe_weight_ranking, top_neurons_per_class

__all__ = [
    "DEFAULT_FRACTIONS",
    "GaussianProbe",
    "MinimalNeuronSet",
    "Ranking",
    "ap_ranking",
    "average_precision_columns",
    "class_means",
    "column_neurons",
    "entry_thresholds",
    "gaussian_ranking",
    "greedy_select",
    "minimal_neuron_set",
    "probe_weight_ranking",
    "probeless_ranking",
    "ranking_from_scores",
    "sentence_max_pool",
    "top_neurons_per_class",
]
