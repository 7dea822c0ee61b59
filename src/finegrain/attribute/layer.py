"""Layer-space attribution through the adapters' hook points: layer Integrated Gradients, layer
conductance, gradient x activation and neuron conductance.

These run on any adapter because they only use ``adapter.hooks``: a hook point may be called once per
forward with ``[rows, T, units]`` (transformers), once with ``[rows, units]`` (a hook point with one
vector per example), or once per time step with ``[rows, units]`` (LSTMs), and even several times per
step (textgenrnn's 40-character windows: a state is recomputed in every window that contains it).
Every call is one variable of the layer: its attribution is computed for that call and summed into
the call's token position, so the layer's attributions cover every path through it.

* Layer IG (Sundararajan et al. 2017, in the layer's space, as Captum's LayerIntegratedGradients):
  ``(a(x) - a(x')) * ∫ ∂F/∂a (a(x') + α (a(x) - a(x'))) dα`` with the layer's calls replaced by the
  interpolation while the input stays ``x``; Gauss-Legendre nodes and weights (summing to 1).
* Layer conductance (Dhamdhere et al. 2018, "How important is a neuron?"): ``∫ ∂F/∂a · da/dα dα`` along
  the input path ``x' + α (x - x')``, as a Riemann-Stieltjes sum with the trapezoid rule on ``n + 1``
  equally spaced points including both ends, so the layer increments telescope exactly to
  ``a(x) - a(x')``.
* Neuron conductance (same paper): ``(x_i - x'_i) ∫ Σ_c ∂F/∂y_c · ∂y_c/∂x_i dα`` over the calls ``c``
  of the neuron that are selected (one token, or every real token: the flow through the unit at all
  positions, summed per position, not Captum's product of sums), Gauss-Legendre.

Completeness (``sum = F(x) - F(x')``) holds for layer IG and conductance when every path from the
input to the output crosses the layer (a whole hidden state, not a sublayer beside a residual stream
or textgenrnn's skip of the embedding into its attention); the reported delta says how far off it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from finegrain.attribute._core import AttributionError, Prepared, gauss_legendre
from finegrain.errors import ParameterError


class _Recorder:
    """Records every call of a hook point in order: per-step / whole-tensor calls of ``adapter.hooks``
    (``fn(act, step)``) and whole-sequence calls of LSTM output hooks (``fn(seq, steps, rows)``). With
    ``replace`` it returns the k-th replacement tensor at the k-th call (the structure of calls is
    fixed by the model)."""

    def __init__(self, layer: str, replace: Sequence[torch.Tensor] | None = None):
        self.layer = layer
        self.acts: list[torch.Tensor] = []
        self.steps: list = []  # None (whole tensor), an int (one step) or [R, W] steps of a sequence
        self.rows: list = []  # None, or [R] batch rows of a sequence's rows
        self.replace = replace

    def _take(self, act: torch.Tensor) -> torch.Tensor | None:
        if self.replace is None:
            self.acts.append(act)
            return None
        k = len(self.acts)
        if k >= len(self.replace) or self.replace[k].shape != act.shape:
            raise AttributionError(f"hook point {self.layer} was called differently from the reference run")
        self.acts.append(self.replace[k])
        return self.replace[k]

    def __call__(self, act: torch.Tensor, step):
        self.steps.append(step)
        self.rows.append(None)
        return self._take(act)

    def sequence(self, seq: torch.Tensor, steps: torch.Tensor, rows: torch.Tensor):
        self.steps.append(steps)
        self.rows.append(rows)
        return self._take(seq)

    def structure(self) -> list:
        return [(tuple(a.shape), s if s is None or isinstance(s, int) else "seq")
                for a, s in zip(self.acts, self.steps)]


def _run(prep: Prepared, layer: str, embeds: torch.Tensor, rows: Sequence[int],
         replace: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, _Recorder]:
    """Forward ``rows`` at ``embeds`` recording (or replacing) the calls of ``layer``. LSTM hidden
    states are read at the layer's output sequence (what the next layer reads), the cut every path
    crosses once."""
    rec = _Recorder(layer, replace)
    adapter = prep.adapter
    seq_layers = adapter.output_hook_layers() if callable(getattr(adapter, "output_hook_layers", None)) else []
    ctx = adapter.output_hooks({layer: rec.sequence}) if layer in seq_layers else adapter.hooks({layer: rec})
    with ctx:
        f = prep.forward(embeds, *prep.args(rows))
    if not rec.acts:
        raise AttributionError(f"hook point {layer} was not reached in the forward pass")
    return f, rec


def _same(a: _Recorder, b: _Recorder) -> None:
    if a.structure() != b.structure():
        raise AttributionError(f"hook point {a.layer} is called differently for the input and the baseline")


def _assemble(rec: _Recorder, parts: list[torch.Tensor], B: int, T: int) -> torch.Tensor:
    """Per-call attributions -> ``[B, T, units]`` (token-level, per-step and sequence calls, summed per
    token) or ``[B, units]`` (a hook point with one vector per example)."""
    if rec.steps[0] is None:
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out
    out = parts[0].new_zeros(B, T, parts[0].shape[-1])
    for s, r, p in zip(rec.steps, rec.rows, parts):
        if r is None:
            out[:, s] += p
        else:
            keep = (s >= 0) & (s < T)
            out.index_put_((r[:, None].expand_as(s)[keep], s[keep]), p[keep], accumulate=True)
    return out


def _blocks(t: torch.Tensor, B: int) -> int:
    return t.shape[0] // B


def _expand(t: torch.Tensor, k: int, B: int) -> torch.Tensor:
    """Reference rows ``p * B + b`` -> rows ``p * k * B + j * B + b`` of a forward over ``k`` points."""
    P = _blocks(t, B)
    return t.reshape(P, 1, B, *t.shape[1:]).expand(P, k, B, *t.shape[1:]).reshape(P * k * B, *t.shape[1:])


def _alpha(al: np.ndarray, t: torch.Tensor, B: int) -> torch.Tensor:
    """``α_j`` per row of the expanded layout of ``t``, broadcastable over its trailing dims."""
    P = _blocks(t, B)
    a = torch.as_tensor(al, dtype=t.dtype, device=t.device).view(1, -1, 1).expand(P, len(al), B)
    return a.reshape(-1, *[1] * (t.dim() - 1))


def _points(g: torch.Tensor, k: int, B: int) -> torch.Tensor:
    """Rows of a forward over ``k`` points -> ``[P, k, B, ...]``."""
    P = g.shape[0] // (k * B)
    return g.reshape(P, k, B, *g.shape[1:])


def _point(g: torch.Tensor, k: int, B: int, j: int) -> torch.Tensor:
    v = _points(g, k, B)[:, j]
    return v.reshape(-1, *v.shape[2:])


def _weighted(g: torch.Tensor, k: int, B: int, w: np.ndarray) -> torch.Tensor:
    """``sum_j w_j g[point j]`` in reference layout."""
    v = _points(g, k, B)
    wt = torch.as_tensor(w, dtype=g.dtype, device=g.device).view(1, k, *[1] * (v.dim() - 2))
    s = (v * wt).sum(1)
    return s.reshape(-1, *s.shape[2:])


def layer_integrated_gradients(prep: Prepared, layer: str, idx: Sequence[int], n_steps: int, rows: int) -> torch.Tensor:
    """Layer IG of examples ``idx``: ``[len(idx), T, units]`` (or ``[len(idx), units]``)."""
    idx = list(idx)
    B = len(idx)
    x, xb = prep.embeds[idx], prep.base_embeds[idx]
    with torch.no_grad():
        _, rx = _run(prep, layer, x, idx)
        _, rb = _run(prep, layer, xb, idx)
    _same(rx, rb)
    base = [a.detach() for a in rb.acts]
    diff = [a.detach() - b for a, b in zip(rx.acts, base)]
    alphas, weights = gauss_legendre(n_steps)
    acc = [torch.zeros_like(d) for d in diff]
    m = max(1, rows // B)
    for s in range(0, n_steps, m):
        al, w = alphas[s : s + m], weights[s : s + m]
        k = len(al)
        reps = [(_expand(b, k, B) + _alpha(al, b, B) * _expand(d, k, B)).requires_grad_(True)
                for b, d in zip(base, diff)]
        with torch.enable_grad():
            f, rec = _run(prep, layer, x.repeat(k, 1, 1), idx * k, replace=reps)
            grads = torch.autograd.grad(f.sum(), reps, allow_unused=True)
        for c, g in enumerate(grads):
            if g is not None:
                acc[c] += _weighted(g, k, B, w)
    return _assemble(rx, [d * a for d, a in zip(diff, acc)], B, x.shape[1])


def layer_conductance(prep: Prepared, layer: str, idx: Sequence[int], n_steps: int, rows: int) -> torch.Tensor:
    """Layer conductance of examples ``idx`` (trapezoid Riemann-Stieltjes sum on ``n_steps`` equal
    segments of the input path)."""
    if n_steps < 1:
        raise ParameterError(f"n_steps must be >= 1, got {n_steps}")
    idx = list(idx)
    B = len(idx)
    x, xb = prep.embeds[idx], prep.base_embeds[idx]
    points = np.linspace(0.0, 1.0, n_steps + 1)
    m = max(1, rows // B)
    prev = None
    cond: list[torch.Tensor] | None = None
    for s in range(0, len(points), m):
        al = points[s : s + m]
        k = len(al)
        emb = (xb.repeat(k, 1, 1) + _alpha(al, x, B) * (x - xb).repeat(k, 1, 1)).requires_grad_(True)
        with torch.enable_grad():
            f, rec = _run(prep, layer, emb, idx * k)
            grads = torch.autograd.grad(f.sum(), rec.acts, allow_unused=True)
        gs = [g if g is not None else torch.zeros_like(a) for g, a in zip(grads, rec.acts)]
        for j in range(k):
            cur = ([_point(a.detach(), k, B, j) for a in rec.acts], [_point(g, k, B, j) for g in gs])
            if prev is not None:
                if len(cur[0]) != len(prev[0]):
                    raise AttributionError(f"hook point {layer} is called differently along the path")
                if cond is None:
                    cond = [torch.zeros_like(a) for a in cur[0]]
                for c in range(len(cond)):
                    cond[c] += (cur[0][c] - prev[0][c]) * (cur[1][c] + prev[1][c]) * 0.5
            prev = cur
    # the row/step layout of the calls, in reference (B-row) layout: re-read it from one plain run
    with torch.no_grad():
        _, ref = _run(prep, layer, x, idx)
    if [tuple(a.shape) for a in ref.acts] != [tuple(c.shape) for c in cond]:
        raise AttributionError(f"hook point {layer} is called differently along the path")
    return _assemble(ref, cond, B, x.shape[1])


def gradient_x_activation(prep: Prepared, layer: str, idx: Sequence[int]) -> torch.Tensor:
    """``a ⊙ ∂F/∂a`` at the input (Shrikumar et al. 2016 at a layer), per call, summed per token."""
    idx = list(idx)
    x = prep.embeds[idx].clone().requires_grad_(True)
    with torch.enable_grad():
        f, rec = _run(prep, layer, x, idx)
        grads = torch.autograd.grad(f.sum(), rec.acts, allow_unused=True)
    attr = [a.detach() * (g if g is not None else torch.zeros_like(a)) for a, g in zip(rec.acts, grads)]
    return _assemble(rec, attr, len(idx), x.shape[1])


def _unit_weight(step, rows, act: torch.Tensor, mask: torch.Tensor, position: int | None) -> torch.Tensor | None:
    """Which rows / tokens of a call hold the selected neuron: weights broadcast to ``act[..., unit]``
    (``None``: the call is not selected). ``mask``: attention mask of the forward's rows."""
    if rows is not None:  # an output sequence [R, W, H] with text steps [R, W]
        valid = (step >= 0) & (step < mask.shape[1])
        if position is None:
            w = mask[rows[:, None].expand_as(step), step.clamp(0, mask.shape[1] - 1)].to(act.dtype)
            return w * valid.to(act.dtype)
        return (step == position).to(act.dtype)
    if step is None:
        if act.dim() == 2:  # one vector per example
            if position is not None:
                raise ParameterError("this hook point has one vector per example: neuron conductance takes no position")
            return torch.ones(act.shape[0], dtype=act.dtype, device=act.device)
        T = act.shape[1]
        if position is None:
            return mask[:, :T].to(act.dtype)
        if not -T <= position < T:
            raise ParameterError(f"position {position} is outside the {T} tokens")
        w = torch.zeros(act.shape[0], T, dtype=act.dtype, device=act.device)
        w[:, position] = 1
        return w
    if position is None:
        return mask[:, step].to(act.dtype) if step < mask.shape[1] else None
    return torch.ones(act.shape[0], dtype=act.dtype, device=act.device) if step == position else None


def neuron_conductance(prep: Prepared, layer: str, unit: int, idx: Sequence[int], n_steps: int, rows: int,
                       position: int | None = None) -> torch.Tensor:
    """Conductance of neuron ``layer:unit`` (at ``position``, or summed over real tokens) to the input
    embeddings of examples ``idx``: ``[len(idx), T, D]``."""
    idx = list(idx)
    B = len(idx)
    x, xb = prep.embeds[idx], prep.base_embeds[idx]
    alphas, weights = gauss_legendre(n_steps)
    acc = torch.zeros_like(x)
    m = max(1, rows // B)
    for s in range(0, n_steps, m):
        al, w = alphas[s : s + m], weights[s : s + m]
        k = len(al)
        emb = (xb.repeat(k, 1, 1) + _alpha(al, x, B) * (x - xb).repeat(k, 1, 1)).requires_grad_(True)
        mask = prep.batch.attention_mask[idx * k].to(x.device)
        with torch.enable_grad():
            f, rec = _run(prep, layer, emb, idx * k)
            sel = [(a, wt) for st, r, a in zip(rec.steps, rec.rows, rec.acts)
                   if (wt := _unit_weight(st, r, a, mask, position)) is not None]
            if not sel:
                raise ParameterError(f"position {position} of {layer} is never reached")
            grads = torch.autograd.grad(f.sum(), [a for a, _ in sel], retain_graph=True, allow_unused=True)
            flow = sum((g[..., unit].detach() * a[..., unit] * wt).sum()
                       for g, (a, wt) in zip(grads, sel) if g is not None)
            if not torch.is_tensor(flow) or not flow.requires_grad:
                continue  # the neuron does not depend on the input (or the output not on it)
            (gx,) = torch.autograd.grad(flow, emb, allow_unused=True)
        if gx is not None:
            acc += _weighted(gx, k, B, w)
    return acc * (x - xb)
