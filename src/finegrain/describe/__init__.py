"""Neuron descriptions: corpus selection, word/regex search and compositional explanations.

* :func:`top_activating` / :func:`describe_neurons` / :func:`activation_stats`: top-activating words
  and sentences with activation quantiles and histograms (Kadar et al. 2017; Na et al. 2019);
* :func:`neurons_for_words`: neurons that respond to a word list or a regular expression;
* :func:`explain_neuron` / :func:`explain_neurons`: AND / OR / AND NOT formulas (:class:`NeuronFormula`)
  of primitive row concepts (:class:`ConceptMasks`: words, label values, lexicon categories, shapes,
  positions, affixes; :func:`build_concepts`) by IoU (Mu & Andreas 2020);
* :func:`token_heatmap`: one neuron's activations over sentences as a Karpathy et al. (2015) heatmap
  (characters of a token-level store of a character model, or words), HTML / SVG / PNG.

Every function takes a store view (or a store) and streams it in row blocks.
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch, zarr or scikit-learn

_API = {
    "Formula": "finegrain.describe.compositional",
    "FormulaExample": "finegrain.describe.compositional",
    "NeuronFormula": "finegrain.describe.compositional",
    "OPS": "finegrain.describe.compositional",
    "explain_mask": "finegrain.describe.compositional",
    "explain_neuron": "finegrain.describe.compositional",
    "explain_neurons": "finegrain.describe.compositional",
    "iou": "finegrain.describe.compositional",
    "neuron_mask": "finegrain.describe.compositional",
    "ConceptMasks": "finegrain.describe.concepts",
    "build_concepts": "finegrain.describe.concepts",
    "find_affixes": "finegrain.describe.concepts",
    "lexicon_categories": "finegrain.describe.concepts",
    "word_shape": "finegrain.describe.concepts",
    "parse_index_ranges": "finegrain.describe.heatmap",
    "sentence_activations": "finegrain.describe.heatmap",
    "token_heatmap": "finegrain.describe.heatmap",
    "token_separator": "finegrain.describe.heatmap",
    "SearchHit": "finegrain.describe.search",
    "match_rows": "finegrain.describe.search",
    "neurons_for_words": "finegrain.describe.search",
    "DEFAULT_QUANTILES": "finegrain.describe.top",
    "NeuronDescription": "finegrain.describe.top",
    "NeuronResults": "finegrain.describe.top",
    "NeuronStats": "finegrain.describe.top",
    "TopExample": "finegrain.describe.top",
    "activation_stats": "finegrain.describe.top",
    "describe_neurons": "finegrain.describe.top",
    "gather_columns": "finegrain.describe.top",
    "iter_neuron_columns": "finegrain.describe.top",
    "top_activating": "finegrain.describe.top",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
