"""Probing classifiers over neuron activations (arrays or activation stores).

* ``LinearProbe`` — elastic-net softmax regression (Dalvi et al. 2019, NeuroX), streams stores;
* ``LogisticProbe`` (binary), ``RidgeProbe`` (real-valued), ``MLPProbe`` (selectivity comparisons);
* ``probe_layers`` — one probe per layer + all layers concatenated, with a PNG plot helper;
* metrics (accuracy, macro-F1, per-class P/R/F1) and sentence-level splits.
"""

from finegrain.probe.layers import LayerProbeResult, plot_layer_accuracy, probe_layers, resolve_splits
from finegrain.probe.metrics import accuracy, classification_metrics
from finegrain.probe.probes import (
    BaseProbe,
    LinearProbe,
    LogisticProbe,
    MLPProbe,
    RidgeProbe,
    elastic_net_loss,
)
from finegrain.probe.sources import ArraySource, StoreSource, as_source, source_index
from finegrain.store import split_by_sentence

__all__ = [
    "ArraySource",
    "BaseProbe",
    "LayerProbeResult",
    "LinearProbe",
    "LogisticProbe",
    "MLPProbe",
    "RidgeProbe",
    "StoreSource",
    "accuracy",
    "as_source",
    "classification_metrics",
    "elastic_net_loss",
    "plot_layer_accuracy",
    "probe_layers",
    "resolve_splits",
    "source_index",
    "split_by_sentence",
]
