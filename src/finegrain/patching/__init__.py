"""Activation patching and attribution patching (Meng et al. 2022; Heimersheim & Nanda 2024; Nanda 2023):
which component at which position carries the difference between a clean and a corrupted input.

* :func:`activation_patching` — a component x position grid of patching effects (denoising or noising),
  normalised between the corrupted and the clean run; ``method="both"`` adds attribution patching and its
  agreement with the exact effects; :func:`attribution_patching` — the first-order estimate alone;
* :class:`PatchMetric` — logit difference, logit, probability or log-probability of a token or class;
* :class:`PatchingResult` — the grid, its table and heatmap (the Result protocol).
"""

from finegrain.lazy import lazy_api

# the API and the module that defines it: imported on first use, so that a command line
# that only parses arguments (``finegrain --help``) does not load torch

_API = {
    "MEASURES": "finegrain.patching.metric",
    "BoundMetric": "finegrain.patching.metric",
    "PatchMetric": "finegrain.patching.metric",
    "KINDS": "finegrain.patching.patching",
    "Component": "finegrain.patching.patching",
    "PatchingResult": "finegrain.patching.patching",
    "activation_patching": "finegrain.patching.patching",
    "agreement": "finegrain.patching.patching",
    "attribution_patching": "finegrain.patching.patching",
    "components_of": "finegrain.patching.patching",
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
