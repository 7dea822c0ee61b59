"""Packages whose public API is imported on first use.

``finegrain --help`` and ``finegrain info`` must start in well under a second, so a package's
``__init__`` must not import torch, transformers, scikit-learn or matplotlib. Each package lists its API
and the module that defines each name; :func:`lazy_api` gives it the module-level ``__getattr__`` and
``__dir__`` (PEP 562) that import the defining module when a name is first used::

    from finegrain.lazy import lazy_api

    __getattr__, __dir__, __all__ = lazy_api(__name__, {"probe_layers": "finegrain.probe.layers"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_api(package: str, api: Mapping[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose names ``api`` maps to defining modules."""
    api = dict(api)

    def __getattr__(name: str):
        if name in api:
            value = getattr(importlib.import_module(api[name]), name)
            setattr(sys.modules[package], name, value)  # later look-ups are plain attribute reads
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *api})

    return __getattr__, __dir__, sorted(api)


__all__ = ["lazy_api"]
