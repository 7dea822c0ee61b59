"""Is the probe telling the truth? Control tasks and selectivity (Hewitt & Liang 2019) and ablation
of neuron rankings (top / random / bottom, zeroed or retrained)."""

from finegrain.evaluate.ablation import AblationResult, ablation_curves, plot_ablation
from finegrain.evaluate.control import (
    SelectivityResult,
    control_labels,
    control_mapping,
    selectivity,
    selectivity_layers,
)

__all__ = [
    "AblationResult",
    "SelectivityResult",
    "ablation_curves",
    "control_labels",
    "control_mapping",
    "plot_ablation",
    "selectivity",
    "selectivity_layers",
]
