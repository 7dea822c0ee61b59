"""Is the probe telling the truth? Baselines (majority, word type, control task), selectivity (Hewitt &
Liang 2019) and probe-side ablation of neuron rankings (top / random / bottom kept, removed or retrained,
ablated units at their training mean)."""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch
_API = {
    "FILLS": "finegrain.evaluate.ablation",
    "MODES": "finegrain.evaluate.ablation",
    "AblationResult": "finegrain.evaluate.ablation",
    "probe_ablation": "finegrain.evaluate.ablation",
    "control_labels": "finegrain.evaluate.baselines",
    "control_mapping": "finegrain.evaluate.baselines",
    "majority_baseline": "finegrain.evaluate.baselines",
    "majority_label": "finegrain.evaluate.baselines",
    "paired_bootstrap": "finegrain.evaluate.baselines",
    "word_type_baseline": "finegrain.evaluate.baselines",
    "word_type_predictions": "finegrain.evaluate.baselines",
    "Selectivity": "finegrain.evaluate.control",
    "SelectivityResult": "finegrain.evaluate.control",
    "selectivity": "finegrain.evaluate.control",
    "selectivity_layers": "finegrain.evaluate.control",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
