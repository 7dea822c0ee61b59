"""Neuron descriptions: corpus selection, word/regex search and compositional explanations.

* :func:`top_activating` / :func:`describe_neurons` / :func:`activation_stats`: top-activating words
  and sentences with activation quantiles and histograms (Kadar et al. 2017; Na et al. 2019);
* :func:`neurons_for_words`: neurons that respond to a word list or a regular expression;
* :func:`explain_neuron` / :func:`explain_neurons`: AND / OR / AND NOT formulas of word-level
  concepts by IoU (Mu & Andreas 2020).

Everything streams the activation store in row chunks.
"""

from .compositional import (
    OPS,
    ConceptSet,
    Explanation,
    Formula,
    build_concepts,
    explain_mask,
    explain_neuron,
    explain_neurons,
    iou,
    neuron_mask,
)
from .search import SearchHit, match_rows, neurons_for_words
from .top import (
    DEFAULT_QUANTILES,
    NeuronDescription,
    NeuronStats,
    TopExample,
    activation_stats,
    describe_neurons,
    gather_columns,
    iter_neuron_columns,
    top_activating,
)

__all__ = [
    "DEFAULT_QUANTILES",
    "OPS",
    "ConceptSet",
    "Explanation",
    "Formula",
    "NeuronDescription",
    "NeuronStats",
    "SearchHit",
    "TopExample",
    "activation_stats",
    "build_concepts",
    "describe_neurons",
    "explain_mask",
    "explain_neuron",
    "explain_neurons",
    "gather_columns",
    "iou",
    "iter_neuron_columns",
    "match_rows",
    "neuron_mask",
    "neurons_for_words",
    "top_activating",
]
