"""Forward passes that share the layers below an edit (issue 19: ablation sweeps that reuse work).

A single-unit sweep runs one fixed batch many times, each copy with another unit of one layer
ablated (Lakretz et al. 2019). Everything *below* the edited layer is the same in every copy, so
:func:`shared_prefix` computes it once and, while active, makes every forward pass of ``n`` stacked
copies of that batch (:func:`~finegrain.intervene.scoring.repeat_batch`) start at the edited layer:

* HF transformers: the output of the block below the edit (the input of the edited block, or the
  edited block's own output for ``layer.i``) is cached; the blocks below are swapped, for the
  duration, for stand-ins that hand the cached states back (repeated for the copies), so the model's
  own code runs the embeddings (a table look-up), the blocks from the edited one up and its head.
* LSTMs (:class:`~finegrain.models.lstm.LSTMAdapter`): the outputs and final states of the layers
  below ``lstm.k`` are cached per call of the model's ``rnn.forward_layers`` (textgenrnn makes one
  call per batch of windows); the stand-in ``rnn`` runs layer ``k`` and above on the cached input.
  Every replayed call first checks that its input is the cached input repeated (an edit of the
  embedding, or a forward of another batch, fails the check) and otherwise computes everything.

The results equal those of the unshared passes (up to the last bits of float reductions whose
blocking depends on the batch size); the model is restored on exit, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from finegrain.models.base import Batch, ModelAdapter
from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter, UnrolledLSTM


@dataclass
class Prefix:
    """What :func:`shared_prefix` computed: the plain forward output of the batch, and how many
    layers (transformer blocks or LSTM layers) later passes skip (0: nothing is shared)."""

    output: object
    skipped: int = 0
    #: passes (LSTM: ``rnn`` calls) that started at the edited layer, and that had to compute everything
    stats: dict = field(default_factory=lambda: {"shared": 0, "computed": 0})

    @property
    def shared(self) -> bool:
        return self.skipped > 0


def cut_index(adapter: ModelAdapter, layer: str) -> int:
    """How many blocks / LSTM layers lie entirely below the hook point ``layer`` (0 when nothing can
    be shared: the embeddings, the first block's sublayers, the first LSTM layer, other adapters)."""
    adapter.check_layer(layer)
    parts = layer.split(".")
    if isinstance(adapter, HFAdapter) and parts[0] == "layer":
        i = int(parts[1])
        return i if len(parts) == 2 else i - 1  # layer.i is block i's output; layer.i.mlp lies inside it
    if _lstm_supported(adapter) and parts[0] == "lstm":
        return int(parts[1]) - 1
    return 0


def _lstm_supported(adapter: ModelAdapter) -> bool:
    rnn = getattr(getattr(adapter, "model", None), "rnn", None)
    return isinstance(adapter, LSTMAdapter) and isinstance(rnn, UnrolledLSTM) and rnn.batch_first


@contextlib.contextmanager
def shared_prefix(adapter: ModelAdapter, layer: str, batch: Batch, enabled: bool = True) -> Iterator[Prefix]:
    """Compute ``batch`` up to ``layer`` once; inside the block, forward passes of stacked copies of
    ``batch`` (edits at ``layer`` or above attached *inside* the block) skip the layers below.

    >>> with shared_prefix(model, "layer.3", objective.batch) as prefix:
    ...     with intervene(model, PerRow("layer.3", units)):
    ...         out = model.forward(repeat_batch(objective.batch, len(units)))

    ``prefix.output`` is the plain forward of ``batch``. Edits attached *before* the block act on the
    cached states once (their effect is in the cache), as they would in every unshared pass.
    ``enabled=False`` shares nothing (``prefix.output`` is still the plain forward).
    """
    cut = cut_index(adapter, layer) if enabled else 0
    if cut == 0:
        with torch.no_grad():
            yield Prefix(adapter.forward(batch), 0)
        return
    if isinstance(adapter, HFAdapter):
        with _hf_prefix(adapter, cut, batch) as p:
            yield p
    else:
        with _lstm_prefix(adapter, layer, cut, batch) as p:
            yield p


# -- transformers ------------------------------------------------------------------------------
def _like(output, hidden: torch.Tensor):
    """``hidden`` in the structure of a block's output (a tensor, or a tuple whose first item it is)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class _PassBlock(nn.Module):
    """Stands in for a skipped block: hands its input on (the block after it ignores it anyway)."""

    def __init__(self, like):
        super().__init__()
        self.like = like

    def forward(self, *args, **kwargs):
        return _like(self.like, _hidden_in(args, kwargs))


class _CachedBlock(nn.Module):
    """Stands in for the last skipped block: returns its cached output, one copy per stacked batch."""

    def __init__(self, output, rows: int, stats: dict):
        super().__init__()
        self.output, self.rows, self.stats = output, rows, stats
        self.hidden = output[0] if isinstance(output, tuple) else output

    def forward(self, *args, **kwargs):
        n, rest = divmod(_hidden_in(args, kwargs).shape[0], self.rows)
        if rest:
            raise RuntimeError(f"shared_prefix: a batch of {n * self.rows + rest} rows is not stacked copies of "
                               f"the cached {self.rows}")
        self.stats["shared"] += 1
        return _like(self.output, self.hidden.repeat(n, *([1] * (self.hidden.dim() - 1))))


@contextlib.contextmanager
def _hf_prefix(adapter: HFAdapter, cut: int, batch: Batch) -> Iterator[Prefix]:
    blocks = adapter.blocks
    seen = {}

    def grab(module, args, output):
        seen["out"] = output

    handle = blocks[cut - 1].register_forward_hook(grab)
    try:
        with torch.no_grad():
            out = adapter.forward(batch)
    finally:
        handle.remove()
    cached = seen["out"]
    originals = [blocks[j] for j in range(cut)]
    prefix = Prefix(out, cut)
    stand_ins = [_PassBlock(cached) for _ in range(cut - 1)] + [_CachedBlock(cached, len(batch), prefix.stats)]
    try:
        for j, m in enumerate(stand_ins):
            blocks[j] = m
        yield prefix
    finally:
        for j, m in enumerate(originals):
            blocks[j] = m


# -- LSTMs -------------------------------------------------------------------------------------
class _RNNProxy(nn.Module):
    """Stands in for ``model.rnn`` (attributes and hook registration go to the real one)."""

    def __init__(self, rnn: UnrolledLSTM):
        super().__init__()
        self.inner = rnn

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


@dataclass
class _Call:
    x: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor] | None
    outs: list[torch.Tensor]
    h: torch.Tensor
    c: torch.Tensor


class _Recorder(_RNNProxy):
    def __init__(self, rnn: UnrolledLSTM, cut: int):
        super().__init__(rnn)
        self.cut, self.calls = cut, []

    def forward_layers(self, x, state=None, *args, **kwargs):
        outs, (h, c) = self.inner.forward_layers(x, state, *args, **kwargs)
        self.calls.append(_Call(x, state, outs[: self.cut], h[: self.cut], c[: self.cut]))
        return outs, (h, c)


class _Replayer(_RNNProxy):
    def __init__(self, rnn: UnrolledLSTM, cut: int, calls: list[_Call], rows: int, stats: dict):
        super().__init__(rnn)
        self.cut, self.calls, self.rows, self.i, self.stats = cut, calls, rows, 0, stats
        upper = UnrolledLSTM(rnn.hidden_size, rnn.hidden_size, rnn.num_layers - cut, rnn.bias, rnn.batch_first)
        upper.cells = nn.ModuleList(list(rnn.cells)[cut:])  # the same parameters
        upper.hidden_hooks, upper.cell_hooks = rnn.hidden_hooks[cut:], rnn.cell_hooks[cut:]  # the same hook lists
        upper.output_hooks = rnn.output_hooks[cut:]  # whole-sequence output hooks above the cut, too
        self.upper = upper

    def forward_layers(self, x, state=None, *args, **kwargs):
        call = self.calls[self.i % len(self.calls)]
        self.i += 1
        n, rest = divmod(x.shape[0], call.x.shape[0])
        blocks = call.x.shape[0] // self.rows if call.x.shape[0] % self.rows == 0 else 0
        if rest or not blocks or not _same(x, call.x, blocks, n, 0) or not _same_state(state, call.state, blocks, n):
            # not the cached input repeated (another batch, an edited embedding, a 1-row padding context)
            self.stats["computed"] += 1
            return self.inner.forward_layers(x, state, *args, **kwargs)
        self.stats["shared"] += 1
        lower = [_tile(o, blocks, n, 0) for o in call.outs]
        upper_state = None if state is None else (state[0][self.cut:], state[1][self.cut:])
        outs, (h, c) = self.upper.forward_layers(lower[-1], upper_state, *args, **kwargs)
        h = torch.cat([_tile(call.h, blocks, n, 1), h])
        c = torch.cat([_tile(call.c, blocks, n, 1), c])
        return lower + outs, (h, c)


def _tile(t: torch.Tensor, blocks: int, n: int, dim: int) -> torch.Tensor:
    """Rows laid out as (block, row) repeated for ``n`` stacked copies: (block, copy, row). A plain
    batch has one block; textgenrnn's windows are window-major blocks of the batch's rows."""
    shape = list(t.shape)
    rows = shape[dim] // blocks
    v = t.reshape(shape[:dim] + [blocks, 1, rows] + shape[dim + 1:])
    v = v.expand(shape[:dim] + [blocks, n, rows] + shape[dim + 1:])
    return v.reshape(shape[:dim] + [blocks * n * rows] + shape[dim + 1:])


def _same(x: torch.Tensor, x0: torch.Tensor, blocks: int, n: int, dim: int) -> bool:
    return x.shape[dim] == x0.shape[dim] * n and x.shape[:dim] == x0.shape[:dim] and torch.equal(
        x, _tile(x0, blocks, n, dim))


def _same_state(state, state0, blocks: int, n: int) -> bool:
    if state is None or state0 is None:
        return state is None and state0 is None
    return all(_same(s, s0, blocks, n, 1) for s, s0 in zip(state, state0))


@contextlib.contextmanager
def _lstm_prefix(adapter: LSTMAdapter, layer: str, cut: int, batch: Batch) -> Iterator[Prefix]:
    model = adapter.model
    rnn = model.rnn
    with torch.no_grad():
        out = adapter.forward(batch)
    recorder = _Recorder(rnn, cut)
    # a hook that changes nothing makes the recorded pass take the path the edited passes take
    with adapter.hooks({layer: lambda act, step: None}):
        model.rnn = recorder
        try:
            with torch.no_grad():
                adapter.forward(batch)
        finally:
            model.rnn = rnn
    prefix = Prefix(out, cut)
    model.rnn = _Replayer(rnn, cut, recorder.calls, len(batch), prefix.stats)
    try:
        yield prefix
    finally:
        model.rnn = rnn
