"""finegrain: fine-grained interpretation and causation analysis of NLP models."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from finegrain.errors import FinegrainError  # noqa: E402
from finegrain.neurons import Neuron, NeuronIndex, parse_neurons  # noqa: E402

_SUBMODULES = {
    "data", "models", "store", "probe", "rank", "evaluate", "describe", "viz", "unsupervised", "attribute",
    "intervene", "mediation", "explain", "report", "distributed", "testing", "errors", "patching", "lens",
    "results", "translation", "neurons", "extraction", "paths", "testing_seq2seq",
}
_FUNCTIONS = {
    "load_model": "finegrain.models",
    "extract": "finegrain.extraction",
    "ActivationStore": "finegrain.store",
    "open_store": "finegrain.store",
    "Corpus": "finegrain.data.corpus",
    "Sentence": "finegrain.data.corpus",
}


def __getattr__(name: str):
    # subpackages import torch/transformers: load them on first use so `import finegrain` is instant
    if name in _SUBMODULES:
        return importlib.import_module(f"finegrain.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'finegrain' has no attribute {name!r}")


__all__ = [
    "FinegrainError", "Neuron", "NeuronIndex", "parse_neurons", "__version__",
    *sorted(_FUNCTIONS), *sorted(_SUBMODULES),
]
