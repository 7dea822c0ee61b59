"""Activation patching and attribution patching (Meng et al. 2022; Heimersheim & Nanda 2024; Nanda 2023):
which component at which position carries the difference between a clean and a corrupted input.

* :func:`activation_patching` — a component x position grid of patching effects (denoising or noising),
  normalised between the corrupted and the clean run; ``method="both"`` adds attribution patching and its
  agreement with the exact effects; :func:`attribution_patching` — the first-order estimate alone;
* :class:`PatchMetric` — logit difference, logit, probability or log-probability of a token or class;
* :class:`PatchingResult` — the grid, its table and heatmap (the Result protocol).
"""

import importlib

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


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


__all__ = sorted(_API)
