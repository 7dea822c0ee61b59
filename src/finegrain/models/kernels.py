"""Faster CPU kernels for inference-only forward passes.

``onednn_linears(module)`` runs the float32 ``nn.Linear`` layers of a model through oneDNN's inner
product with prepacked weights (``torch.ops.mkldnn._linear_pointwise``, the kernel torch.compile's CPU
freezing path emits) instead of ``F.linear``'s BLAS call. Where MKL's sgemm takes its generic code path
(non-Intel x86 CPUs) this makes a transformer forward ~1.2x faster; results agree with ``F.linear`` to
float32 rounding (a different summation order). Set ``FINEGRAIN_ONEDNN=0`` to turn it off.
"""

from __future__ import annotations

import os
import weakref
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# nn.Linear -> ((weight data_ptr, weight version), packed weight): packing costs a copy of the
# weights, so it is done once per weight state, not once per forward
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_USABLE: list[bool] = []  # checked once per process


def onednn_usable() -> bool:
    """Whether oneDNN's packed linear exists here and matches ``F.linear`` (checked once)."""
    if not _USABLE:
        ok = os.environ.get("FINEGRAIN_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available()
        if ok:
            try:
                g = torch.Generator().manual_seed(0)
                x, w = torch.randn(33, 40, generator=g), torch.randn(24, 40, generator=g)
                b = torch.randn(24, generator=g)
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 33)
                out = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
                ok = bool(torch.allclose(out, F.linear(x, w, b), rtol=1e-4, atol=1e-4))
            except (AttributeError, RuntimeError):
                ok = False
        _USABLE.append(ok)
    return _USABLE[0]


def _packed_forward(linear: nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return F.linear(x, linear.weight, linear.bias)  # oneDNN's op has no autograd formula
    return torch.ops.mkldnn._linear_pointwise(x, packed, linear.bias, "none", [], "")


@contextmanager
def onednn_linears(module: nn.Module, rows_hint: int = 1024, enabled: bool = True):
    """Within the block, float32 CPU ``nn.Linear`` layers of ``module`` compute with oneDNN and
    prepacked weights; their forwards are restored on exit (also on error). Hooks keep working (they
    wrap ``forward``). Inputs that need gradients, other dtypes (autocast) or devices take ``F.linear``.
    ``rows_hint`` is the typical number of rows per call, for oneDNN's choice of weight layout."""
    patched: list[nn.Linear] = []
    try:
        if enabled and onednn_usable():
            for m in module.modules():
                w = getattr(m, "weight", None)
                if type(m) is not nn.Linear or "forward" in m.__dict__ or w.dtype != torch.float32 \
                        or w.device.type != "cpu":
                    continue
                key = (w.data_ptr(), w._version)
                hit = _PACKED.get(m)
                if hit is None or hit[0] != key:
                    hit = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), rows_hint))
                    _PACKED[m] = hit
                m.forward = partial(_packed_forward, m, hit[1])
                patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward
