"""Probing classifiers over neuron activations (views of activation stores, or arrays).

* ``LinearProbe`` — elastic-net softmax regression (Dalvi et al. 2019, NeuroX), converging by default
  (dev-loss early stopping on standardised inputs), ``LinearProbe.neurox()`` for NeuroX's configuration;
* ``LogisticProbe`` (binary), ``RidgeProbe`` (real-valued), ``MLPProbe`` (selectivity comparisons); all
  scikit-learn estimators that remember their neurons (``neurons_in_``);
* ``probe_layers`` — one probe per layer + all layers concatenated, beside the majority, word-type and
  control-task baselines (``above_baseline``, ``best_layer()``);
* baselines, per-unit statistics, metrics (accuracy, macro-F1, per-class P/R/F1) and sentence-level splits.
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch
_API = {
    "control_labels": "finegrain.probe.baselines",
    "control_mapping": "finegrain.probe.baselines",
    "majority_baseline": "finegrain.probe.baselines",
    "majority_label": "finegrain.probe.baselines",
    "paired_bootstrap": "finegrain.probe.baselines",
    "word_type_baseline": "finegrain.probe.baselines",
    "word_type_predictions": "finegrain.probe.baselines",
    "ALL": "finegrain.probe.layers",
    "LayerProbeResult": "finegrain.probe.layers",
    "probe_layers": "finegrain.probe.layers",
    "resolve_splits": "finegrain.probe.layers",
    "accuracy": "finegrain.probe.metrics",
    "classification_metrics": "finegrain.probe.metrics",
    "BaseProbe": "finegrain.probe.probes",
    "LinearProbe": "finegrain.probe.probes",
    "LogisticProbe": "finegrain.probe.probes",
    "MLPProbe": "finegrain.probe.probes",
    "RidgeProbe": "finegrain.probe.probes",
    "check_neurons": "finegrain.probe.probes",
    "elastic_net_loss": "finegrain.probe.probes",
    "ArraySource": "finegrain.probe.sources",
    "StoreSource": "finegrain.probe.sources",
    "as_labelled": "finegrain.probe.sources",
    "as_source": "finegrain.probe.sources",
    "labelled_view": "finegrain.probe.sources",
    "source_index": "finegrain.probe.sources",
    "ColumnStats": "finegrain.probe.stats",
    "column_stats": "finegrain.probe.stats",
    "split_by_sentence": "finegrain.store",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
