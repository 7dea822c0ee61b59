"""finegrain: fine-grained interpretation and causation analysis of NLP models."""

from __future__ import annotations

__version__ = "0.1.0"

from finegrain.neurons import Neuron, NeuronIndex, parse_neurons  # noqa: E402

__all__ = ["Neuron", "NeuronIndex", "parse_neurons", "__version__"]
