"""LSTMs unrolled in time, with hook points on every hidden and cell state, and their adapter.

Neuron-level analyses of recurrent language models (Karpathy et al., 2015, "Visualizing and
understanding recurrent networks"; Lakretz et al., 2019, "The emergence of number and syntax units in
LSTM language models") read and edit single units of ``h_t`` and ``c_t``. ``nn.LSTM`` runs the whole
sequence in one fused kernel, so an edit of ``h_t`` could not reach step ``t + 1``.
:class:`UnrolledLSTM` has the same parameters and maths as ``nn.LSTM`` but steps through time in Python
whenever a hook is attached to a layer; layers without hooks keep the fused (cuDNN / MKL) kernel.

Hook points, named as in :mod:`finegrain.neurons`: ``embedding`` (the input vectors), ``lstm.i``
(hidden state ``h`` of layer *i*, 1-based) and ``lstm.i.cell`` (cell state ``c``). Every hook is called
once per time step with ``act`` of shape ``[batch, units]``, so ``run_with_cache`` stacks them to
``[batch, steps, units]``. Layers below the first hooked one (and every layer without a hook) run the
fused kernel; only hooked layers step in Python, and their outputs are identical to the fused ones. A
layer whose hooks only read its hidden state (:func:`reads_only`: ``run_with_cache``'s, which edit nothing)
also runs the fused kernel, and its hooks are then called with the fused states, step by step in the same
order (the states agree with the stepped ones to float32 rounding).
Within a step the cell hook runs first and ``h_t = o_t * tanh(c_t)`` is
computed from the (possibly edited) cell: an edit of ``c_t`` therefore changes ``h_t`` and, through
both states, every later step; an edit of ``h_t`` changes the next layer at ``t`` and all steps ``> t``.
"""

from __future__ import annotations

import contextlib
import inspect
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from finegrain.errors import LayerError

from .base import Batch, HookFn, ModelAdapter, ModelError

__all__ = ["DecodeState", "HookedLSTMModel", "LSTMAdapter", "LSTMLanguageModel", "LSTMOutput", "UnrolledLSTM",
           "reads_only"]

#: the attribute that marks a hook function as one that only reads the states it is given
READS_ONLY = "finegrain_reads_only"


def reads_only(fn: HookFn) -> HookFn:
    """Mark ``fn`` as a hook that reads its states and never returns a replacement (returns ``fn``): on
    an LSTM hidden state such hooks are served from the fused kernel's output, without stepping."""
    setattr(fn, READS_ONLY, True)
    return fn


def _is_punct(ch: str) -> bool:
    """Whether a character is punctuation (Unicode category P*)."""
    return unicodedata.category(ch).startswith("P")


class _HookHandle:
    """Removes one hook function from the list it was added to (by identity, at most once)."""

    def __init__(self, fns: list[HookFn], fn: HookFn):
        self._fns, self._fn = fns, fn

    def remove(self) -> None:
        for i, f in enumerate(self._fns):
            if f is self._fn:
                del self._fns[i]
                return


def _run_hooks(fns: list[HookFn], act: torch.Tensor, step: int) -> torch.Tensor:
    for fn in list(fns):
        out = fn(act, step)
        if out is not None:
            if out.shape != act.shape:
                raise ModelError(f"hook returned shape {tuple(out.shape)}, expected {tuple(act.shape)}")
            act = out
    return act


def _run_hooks_blocks(fns: list[HookFn], act: torch.Tensor, t: int, offsets: Sequence[int]) -> torch.Tensor:
    """Hooks for local step ``t`` of rows laid out as ``len(offsets)`` equal blocks, block ``p`` being
    at step ``t + offsets[p]`` (blocks at negative steps, i.e. padding context, skip the hooks).

    With several blocks the result is always a new tensor built from the per-block slices that the
    hooks saw, so a hook that records its ``act`` records a tensor the rest of the forward uses
    (gradients with respect to it are the real ones)."""
    if len(offsets) == 1:
        s = t + offsets[0]
        return _run_hooks(fns, act, s) if s >= 0 else act
    parts = list(act.chunk(len(offsets)))
    for p, off in enumerate(offsets):
        if t + off >= 0:
            parts[p] = _run_hooks(fns, parts[p], t + off)
    return torch.cat(parts)


class UnrolledLSTM(nn.Module):
    """A stack of unidirectional LSTM layers whose states pass through per-step hook points.

    Each layer is an ``nn.LSTMCell`` (``weight_ih [4H, I]``, ``weight_hh [4H, H]``, ``bias_ih``,
    ``bias_hh``; gates in PyTorch order i, f, g, o), i.e. exactly the parameters of one ``nn.LSTM``
    layer. ``forward`` has the signature and result of ``nn.LSTM.forward``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if k == 0 else hidden_size, hidden_size, bias=bias) for k in range(num_layers)
        )
        # plain lists (not state): hooks are attached by adapters for the duration of a run
        self.hidden_hooks: list[list[HookFn]] = [[] for _ in range(num_layers)]
        self.cell_hooks: list[list[HookFn]] = [[] for _ in range(num_layers)]
        # fn(seq [R, W, H], steps [R, W], rows [R]) on a layer's whole output sequence, the tensor the
        # next layer (or the head) reads; see add_output_hook
        self.output_hooks: list[list] = [[] for _ in range(num_layers)]

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, batch_first: bool | None = None) -> UnrolledLSTM:
        """Copy the weights of a unidirectional ``nn.LSTM`` (dropout between layers is dropped)."""
        if not isinstance(lstm, nn.LSTM):
            raise ModelError(f"expected nn.LSTM, got {type(lstm).__name__}")
        if lstm.bidirectional or lstm.proj_size:
            raise ModelError("only unidirectional nn.LSTM without projections can be unrolled")
        new = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first if batch_first is None else batch_first,
        )
        with torch.no_grad():
            for k, cell in enumerate(new.cells):
                for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if lstm.bias else ()):
                    getattr(cell, name).copy_(getattr(lstm, f"{name}_l{k}"))
        p = next(lstm.parameters())
        return new.to(device=p.device, dtype=p.dtype)

    # -- hooks -----------------------------------------------------------------------------------
    def add_hook(self, layer: int, fn: HookFn, state: str = "h") -> _HookHandle:
        """Attach ``fn(act [B, H], step)`` to the hidden (``"h"``) or cell (``"c"``) state of layer
        ``layer`` (0-based); returns a handle with ``.remove()``."""
        if not 0 <= layer < self.num_layers:
            raise ModelError(f"LSTM layer {layer} out of range 0..{self.num_layers - 1}")
        if state not in ("h", "c"):
            raise ModelError(f"state must be 'h' or 'c', got {state!r}")
        fns = (self.hidden_hooks if state == "h" else self.cell_hooks)[layer]
        fns.append(fn)
        return _HookHandle(fns, fn)

    def add_output_hook(self, layer: int, fn) -> _HookHandle:
        """Attach ``fn(seq, steps, rows)`` to the output sequence of layer ``layer`` (0-based): ``seq``
        ``[R, W, H]`` is what the next layer and the head read (not the copy the layer's own recurrence
        uses), ``steps[r, k]`` the text step of each row and offset (negative: padding context) and
        ``rows[r]`` the batch row of the sequence (several sequences per row when windows run in
        lockstep). Returning a tensor replaces ``seq``. The layer itself still runs fused: this is the
        hook point where every path from the input to the output crosses the layer exactly once
        (layer conductance's completeness needs such a cut; per-step states are crossed once per later
        step)."""
        if not 0 <= layer < self.num_layers:
            raise ModelError(f"LSTM layer {layer} out of range 0..{self.num_layers - 1}")
        self.output_hooks[layer].append(fn)
        return _HookHandle(self.output_hooks[layer], fn)

    def has_hooks(self) -> bool:
        return any(self.hidden_hooks) or any(self.cell_hooks) or any(self.output_hooks)

    # -- running ---------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Like ``nn.LSTM``: ``x [B, T, I]`` (or ``[T, B, I]``) -> ``(output, (h_n, c_n))``."""
        outs, final = self.forward_layers(x, state)
        return outs[-1], final

    def first_hooked_layer(self) -> int | None:
        """0-based index of the lowest layer with a hook (``None``: no hooks, fully fused)."""
        for k in range(self.num_layers):
            if self.hidden_hooks[k] or self.cell_hooks[k]:
                return k
        return None

    def forward_layers(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        hooked: bool = True,
        step_offset: int = 0,
        step_offsets: Sequence[int] | None = None,
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Outputs of every layer (each laid out like ``x``) and the final ``(h_n, c_n) [L, B, H]``.

        Hooks see step ``t + step_offset``; steps that come out negative (padding context before a
        text) and every step when ``hooked=False`` skip the hooks. ``step_offsets`` runs several
        independent sequences in lockstep: the rows are ``len(step_offsets)`` equal blocks and block
        ``p`` is at step ``t + step_offsets[p]`` (textgenrnn's windows: one block per window). Layers
        without hooks always run the fused kernel.
        """
        if x.dim() != 3:
            raise ModelError(f"UnrolledLSTM expects a 3-D input, got shape {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        n = x.shape[0]
        offsets = [step_offset] if step_offsets is None else [int(o) for o in step_offsets]
        if not offsets or n % len(offsets):
            raise ModelError(f"{n} rows cannot be split into {len(offsets)} blocks of equal size")
        if state is None:
            zeros = x.new_zeros(self.num_layers, n, self.hidden_size)
            state = (zeros, zeros)
        h0, c0 = state
        outs, hn, cn = [], [], []
        inp = x
        for k in range(self.num_layers):
            if hooked and (self.hidden_hooks[k] or self.cell_hooks[k]) and not self._readers_only(k):
                out, (h, c) = self._stepwise(k, inp, h0[k], c0[k], offsets)
            else:
                out, (h, c) = self._fused(k, inp, h0[k], c0[k])
                if hooked and self.hidden_hooks[k]:
                    self._read_hooks(k, out, offsets)
            if hooked and self.output_hooks[k]:
                out = self._output_hooks(k, out, offsets)
            outs.append(out if self.batch_first else out.transpose(0, 1))
            hn.append(h)
            cn.append(c)
            inp = out
        return outs, (torch.stack(hn), torch.stack(cn))

    def _readers_only(self, k: int) -> bool:
        """Whether layer ``k``'s hooks only read ``h`` (:func:`reads_only`; the fused kernel has no ``c_t``)."""
        return not self.cell_hooks[k] and all(getattr(fn, READS_ONLY, False) for fn in self.hidden_hooks[k])

    def _read_hooks(self, k: int, out: torch.Tensor, offsets: Sequence[int]) -> None:
        """Call layer ``k``'s reading hooks with the fused output ``out [R, W, H]``, in the order (step, then
        block) and with the steps that :meth:`_stepwise` calls them."""
        fns = list(self.hidden_hooks[k])
        blocks = out.chunk(len(offsets)) if len(offsets) > 1 else (out,)
        for t in range(out.shape[1]):
            for block, off in zip(blocks, offsets):
                if t + off >= 0:
                    for fn in fns:
                        if fn(block[:, t], t + off) is not None:
                            raise ModelError("a hook marked reads_only returned a tensor; only editing hooks may")

    def _output_hooks(self, k: int, out: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
        R, W = out.shape[0], out.shape[1]
        per = R // len(offsets)
        off = torch.tensor(offsets, device=out.device).repeat_interleave(per)
        steps = torch.arange(W, device=out.device)[None, :] + off[:, None]
        rows = torch.arange(R, device=out.device) % per
        for fn in list(self.output_hooks[k]):
            new = fn(out, steps, rows)
            if new is not None:
                if new.shape != out.shape:
                    raise ModelError(f"output hook returned shape {tuple(new.shape)}, expected {tuple(out.shape)}")
                out = new
        return out

    def _params(self, k: int) -> list[torch.Tensor]:
        cell = self.cells[k]
        params = [cell.weight_ih, cell.weight_hh]
        if self.bias:
            params += [cell.bias_ih, cell.bias_hh]
        return params

    def _fused(self, k, x, h0, c0):
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), (h0, c0)
        # the functional form of nn.LSTM (cuDNN on GPU, fused kernel on CPU) for one layer
        out, h, c = torch.lstm(
            x, (h0[None].contiguous(), c0[None].contiguous()), self._params(k), self.bias, 1, 0.0,
            self.training, False, True,
        )  # fmt: skip
        return out, (h[0], c[0])

    def _stepwise(self, k, x, h, c, offsets: Sequence[int] = (0,)):
        cell = self.cells[k]
        # the input projection of all steps in one matmul; only the recurrence is sequential
        xp = x @ cell.weight_ih.T
        if self.bias:
            xp = xp + (cell.bias_ih + cell.bias_hh)
        w_hh_t = cell.weight_hh.T
        cell_fns, hidden_fns = self.cell_hooks[k], self.hidden_hooks[k]
        outs = []
        for t in range(x.shape[1]):
            i, f, g, o = (xp[:, t] + h @ w_hh_t).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if cell_fns:
                c = _run_hooks_blocks(cell_fns, c, t, offsets)
            h = torch.sigmoid(o) * torch.tanh(c)
            if hidden_fns:
                h = _run_hooks_blocks(hidden_fns, h, t, offsets)
            outs.append(h)
        if not outs:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), (h, c)
        return torch.stack(outs, 1), (h, c)


@dataclass
class LSTMOutput:
    """``logits``: ``[B, T, V]`` next-token logits (LMs) or ``[B, C]`` (classifiers);
    ``last_hidden_state``: top LSTM layer ``[B, T, H]``."""

    logits: torch.Tensor
    last_hidden_state: torch.Tensor | None = None


class HookedLSTMModel(nn.Module):
    """Base of the models an :class:`LSTMAdapter` drives: an ``embedding`` (hook point ``embedding``)
    feeding an :class:`UnrolledLSTM` ``rnn``; ``forward(input_ids, attention_mask) -> LSTMOutput``."""

    embedding: nn.Embedding
    rnn: UnrolledLSTM

    def __init__(self):
        super().__init__()
        self.embedding_hooks: list[HookFn] = []

    def has_hooks(self) -> bool:
        return bool(self.embedding_hooks) or self.rnn.has_hooks()

    def embed(
        self,
        input_ids: torch.Tensor | None,
        hooked: bool = True,
        step_offset: int = 0,
        inputs_embeds: torch.Tensor | None = None,
        step_offsets: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``[B, T] -> [B, T, E]`` (or ``inputs_embeds`` as given, e.g. by attribution methods, which
        differentiate with respect to them); hooks are called per step (``t + step_offset``, skipped
        when negative) so that every hook point of an LSTM model is per step. ``step_offsets``: as in
        :meth:`UnrolledLSTM.forward_layers`."""
        e = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        if hooked and self.embedding_hooks and e.shape[1]:
            offsets = [step_offset] if step_offsets is None else list(step_offsets)
            e = torch.stack([_run_hooks_blocks(self.embedding_hooks, e[:, t], t, offsets)
                             for t in range(e.shape[1])], 1)
        return e

    def logits_at(self, input_ids: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
        """Next-token logits ``[B, len(positions), V]`` at some positions (subclasses may compute
        only those)."""
        return self(input_ids, torch.ones_like(input_ids)).logits[:, list(positions)]

    # -- decoding one token at a time --------------------------------------------------------------
    #: whether :meth:`_start_cached` / :meth:`_step_cached` carry a state (subclasses that have one)
    incremental: bool = False

    def start_decoding(self, input_ids: torch.Tensor, cache: bool = True) -> DecodeState:
        """Read a prompt ``[B, T]``: the next-token logits after its last token and the state from
        which :meth:`decode_step` continues. With ``cache`` (and a model that has an incremental
        state, :attr:`incremental`) the recurrent state is carried, so each later token costs one
        step; otherwise every step recomputes the prediction from all ids (:meth:`logits_at` of the
        last position), as a model without such a state must. Hooks apply in both, at the same
        steps."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ModelError(f"decoding needs a non-empty [B, T] prompt, got shape {tuple(input_ids.shape)}")
        if cache and self.incremental:
            return self._start_cached(input_ids)
        return DecodeState(input_ids, self.logits_at(input_ids, [input_ids.shape[1] - 1])[:, 0])

    def decode_step(self, state: DecodeState, next_ids: torch.Tensor) -> DecodeState:
        """Append one token per row (``next_ids [B]``, at step ``state.length``) and return the new
        state with the logits after it."""
        ids = torch.cat([state.ids, next_ids.reshape(-1, 1).to(state.ids)], 1)
        if state.state is not None:
            return self._step_cached(state, ids)
        return DecodeState(ids, self.logits_at(ids, [ids.shape[1] - 1])[:, 0])

    def _start_cached(self, input_ids: torch.Tensor) -> DecodeState:
        raise NotImplementedError

    def _step_cached(self, state: DecodeState, ids: torch.Tensor) -> DecodeState:
        raise NotImplementedError


@dataclass
class DecodeState:
    """Where one-token-at-a-time decoding stands: ``ids [B, length]`` read so far, ``logits [B, V]``
    for the next token, and the model's carried state (``None``: the next step recomputes from
    ``ids``)."""

    ids: torch.Tensor
    logits: torch.Tensor
    state: object = None

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])


class LSTMLanguageModel(HookedLSTMModel):
    """``embedding -> UnrolledLSTM -> head``.

    ``task="lm"``: ``head([B, T, H]) -> [B, T, V]`` next-token logits at every position.
    ``task="classification"``: ``head([B, H]) -> [B, C]`` applied to the top hidden state at the last
    real token (``pooling="last"``) or to its mean over real tokens (``pooling="mean"``).
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        rnn: UnrolledLSTM,
        head: nn.Module,
        task: str = "lm",
        pooling: str = "last",
    ):
        super().__init__()
        if task not in ("lm", "classification"):
            raise ModelError(f"task must be 'lm' or 'classification', got {task!r}")
        if pooling not in ("last", "mean"):
            raise ModelError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        if not rnn.batch_first:
            raise ModelError("LSTMLanguageModel needs a batch_first UnrolledLSTM")
        if embedding.embedding_dim != rnn.input_size:
            raise ModelError(f"embedding dim {embedding.embedding_dim} != LSTM input size {rnn.input_size}")
        self.embedding, self.rnn, self.head = embedding, rnn, head
        self.task, self.pooling = task, pooling

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> LSTMOutput:
        """``input_ids [B, T]`` (or ``inputs_embeds [B, T, E]`` in their place) -> :class:`LSTMOutput`."""
        outs, _ = self.rnn.forward_layers(self.embed(input_ids, inputs_embeds=inputs_embeds))
        top = outs[-1]
        if self.task == "lm":
            return LSTMOutput(self.head(top), top)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.to(top.dtype)
        if self.pooling == "mean":
            pooled = (top * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        else:
            # right padding: the causal LSTM state at the last real token ignores the padding after it
            last = (mask.sum(1).long() - 1).clamp_min(0)
            pooled = top[torch.arange(top.shape[0], device=top.device), last]
        return LSTMOutput(self.head(pooled), top)

    @property
    def incremental(self) -> bool:  # a language model carries (h, c) from token to token
        return self.task == "lm"

    def _start_cached(self, input_ids: torch.Tensor) -> DecodeState:
        outs, state = self.rnn.forward_layers(self.embed(input_ids))
        return DecodeState(input_ids, self.head(outs[-1][:, -1:])[:, 0], state)

    def _step_cached(self, state: DecodeState, ids: torch.Tensor) -> DecodeState:
        t = state.length  # the new token's step: hooks see it there, as in a full forward
        outs, new = self.rnn.forward_layers(self.embed(ids[:, t:], step_offset=t), state.state, step_offset=t)
        return DecodeState(ids, self.head(outs[-1])[:, 0], new)


def _check_head(head: nn.Module, hidden: int, task: str, vocab_rows: int, like: torch.Tensor) -> None:
    """Run ``head`` on a dummy top state so that a head of the wrong shape fails here, with its sizes."""
    probe = like.new_zeros(1, 2, hidden) if task == "lm" else like.new_zeros(1, hidden)
    try:
        with torch.no_grad():
            out = head(probe)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ModelError(
            f"the head does not accept the LSTM's top hidden states {list(probe.shape)} "
            f"(hidden size {hidden}): {e}"
        ) from e
    if not torch.is_tensor(out):
        raise ModelError(f"the head must return a tensor of logits, got {type(out).__name__}")
    if task == "lm" and (out.dim() != 3 or out.shape[-1] != vocab_rows):
        raise ModelError(
            f"a language-model head must map [B, T, {hidden}] to next-token logits [B, T, {vocab_rows}] "
            f"(one per embedding row), got {list(out.shape)}"
        )
    if task == "classification" and out.dim() != 2:
        raise ModelError(f"a classification head must map [B, {hidden}] to class logits [B, C], got {list(out.shape)}")


class LSTMAdapter(ModelAdapter):
    """:class:`~finegrain.models.base.ModelAdapter` for word- or character-level LSTM models.

    Tokens are vocabulary items: words (``level="word"``) or characters including the spaces between
    words (``level="char"``; spaces get word id ``None``). An optional ``bos`` token starts every
    sentence (word id ``None``). Batches are padded on the right with ``pad_index``: the LSTM is causal,
    so states at real tokens never depend on the padding after them and activations do not depend on
    what else is in the batch. ``labels`` names the classes of a classification model (shown by
    attribution results and reports).

    Wrap your own ``nn.LSTM`` model with :meth:`from_modules`; a model of another shape subclasses
    :class:`HookedLSTMModel` (``embedding``, ``rnn`` an :class:`UnrolledLSTM`, and
    ``forward(input_ids, attention_mask=None, inputs_embeds=None) -> LSTMOutput``).
    """

    kind = "lstm"

    def __init__(
        self,
        model: HookedLSTMModel,
        vocab: Mapping[str, int] | Sequence[str],
        *,
        level: str = "word",
        bos: str | None = None,
        unk: str | int | None = None,
        pad_index: int = 0,
        name: str = "lstm",
        device: str | torch.device | None = "auto",
        max_length: int = 4096,
        labels: Sequence[str] | None = None,
    ):
        if not isinstance(model, HookedLSTMModel):
            raise ModelError(
                f"LSTMAdapter needs a HookedLSTMModel, got {type(model).__name__}; wrap an nn.LSTM model with "
                "LSTMAdapter.from_modules(embedding, lstm, head, vocab)"
            )
        if level not in ("word", "char"):
            raise ModelError(f"level must be 'word' or 'char', got {level!r}")
        self.model = model.eval()
        self.stoi = dict(vocab) if isinstance(vocab, Mapping) else {tok: i for i, tok in enumerate(vocab)}
        if not self.stoi:
            raise ModelError("the vocabulary is empty")
        bad = [(t, i) for t, i in self.stoi.items() if not isinstance(i, int) or i < 0]
        if bad:
            raise ModelError(f"vocabulary ids must be non-negative ints, got {bad[0][0]!r}: {bad[0][1]!r}")
        self.itos = [""] * (max(self.stoi.values(), default=-1) + 1)
        for tok, i in self.stoi.items():
            self.itos[i] = tok
        if len(self.itos) > model.embedding.num_embeddings:
            raise ModelError(
                f"vocabulary ids reach {len(self.itos) - 1}, embedding has {model.embedding.num_embeddings}"
            )
        if bos is not None and bos not in self.stoi:
            raise ModelError(f"bos token {bos!r} is not in the vocabulary")
        if isinstance(unk, str) and unk not in self.stoi:
            raise ModelError(f"unk token {unk!r} is not in the vocabulary")
        if not 0 <= pad_index < model.embedding.num_embeddings:
            raise ModelError(f"pad_index {pad_index} is outside the embedding's {model.embedding.num_embeddings} rows")
        self.unk_index = self.stoi[unk] if isinstance(unk, str) else unk
        self.level, self.bos, self.pad_index, self.name = level, bos, pad_index, name
        self.max_length = max_length
        self.task = getattr(model, "task", "lm")
        self.labels = list(labels) if labels is not None else None
        self.to(device)

    @classmethod
    def from_modules(
        cls,
        embedding: nn.Embedding,
        lstm: nn.LSTM | UnrolledLSTM,
        head: nn.Module,
        vocab: Mapping[str, int] | Sequence[str],
        task: str = "lm",
        *,
        level: str = "word",
        pooling: str = "last",
        **kwargs,
    ) -> LSTMAdapter:
        """Wrap the parts of your own PyTorch LSTM model: ``embedding -> lstm -> head``.

        * ``embedding``: the ``nn.Embedding`` of the tokens (its ``padding_idx``, if set, is the pad
          index, else 0);
        * ``lstm``: a unidirectional ``nn.LSTM`` without projections (any ``batch_first``; copied into
          an :class:`UnrolledLSTM` with the same weights, so every hidden and cell state becomes a hook
          point ``lstm.i`` / ``lstm.i.cell``) or an :class:`UnrolledLSTM`;
        * ``head``: an ``nn.Module`` mapping the top hidden states ``[B, T, H]`` to next-token logits
          ``[B, T, V]`` (``task="lm"``) or the pooled state ``[B, H]`` (``pooling="last"`` real token or
          ``"mean"``) to class logits ``[B, C]`` (``task="classification"``);
        * ``vocab``: the token list (index = id) or a ``{token: id}`` mapping; ``level="char"`` reads
          texts character by character, ``"word"`` word by word;
        * keyword arguments of :class:`LSTMAdapter`: ``bos`` (a start token), ``unk`` (token or id for
          unknown tokens), ``pad_index``, ``labels`` (class names), ``name``, ``device``.

        Dropout between LSTM layers is not copied (analyses run the model in eval mode). The shapes are
        checked here, so a module that does not fit fails with a message that names it. Example::

            emb, lstm, head = nn.Embedding(V, 32), nn.LSTM(32, 64, 2, batch_first=True), nn.Linear(64, V)
            adapter = LSTMAdapter.from_modules(emb, lstm, head, vocab, level="char", device="cpu")
            finegrain.attribute.attribute(adapter, "the cat sat", "next:pred")
        """
        if not isinstance(embedding, nn.Embedding):
            raise ModelError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        if not isinstance(lstm, nn.LSTM | UnrolledLSTM):
            raise ModelError(
                f"lstm must be an nn.LSTM or UnrolledLSTM, got {type(lstm).__name__}; for another recurrent "
                "model subclass HookedLSTMModel or write a ModelAdapter"
            )
        if not isinstance(head, nn.Module):
            raise ModelError(f"head must be an nn.Module (e.g. nn.Linear), got {type(head).__name__}")
        if task not in ("lm", "classification"):
            raise ModelError(f"task must be 'lm' or 'classification', got {task!r}")
        rnn = lstm if isinstance(lstm, UnrolledLSTM) else UnrolledLSTM.from_lstm(lstm, batch_first=True)
        if not rnn.batch_first:
            raise ModelError("pass a batch_first UnrolledLSTM (or an nn.LSTM, converted automatically)")
        if embedding.embedding_dim != rnn.input_size:
            raise ModelError(
                f"the embedding has {embedding.embedding_dim} dimensions but the LSTM expects input_size "
                f"{rnn.input_size}"
            )
        n_vocab = len(vocab)
        if n_vocab > embedding.num_embeddings:
            raise ModelError(
                f"the vocabulary has {n_vocab} tokens but the embedding only {embedding.num_embeddings} rows")
        _check_head(head, rnn.hidden_size, task, embedding.num_embeddings, next(rnn.parameters()))
        kwargs.setdefault("pad_index", embedding.padding_idx if embedding.padding_idx is not None else 0)
        return cls(LSTMLanguageModel(embedding, rnn, head, task, pooling), vocab, level=level, **kwargs)

    # -- what exists -----------------------------------------------------------------------------
    def layers(self) -> dict[str, int]:
        rnn = self.model.rnn
        sizes = {"embedding": self.model.embedding.embedding_dim}
        for k in range(1, rnn.num_layers + 1):
            sizes[f"lstm.{k}"] = rnn.hidden_size
            sizes[f"lstm.{k}.cell"] = rnn.hidden_size
        return sizes

    def output_hook_layers(self) -> list[str]:
        """Hook points that also have whole-sequence output hooks (:meth:`output_hooks`)."""
        return [f"lstm.{k}" for k in range(1, self.model.rnn.num_layers + 1)]

    @contextlib.contextmanager
    def output_hooks(self, hooks: Mapping[str, object]):
        """Attach ``fn(seq [R, W, H], steps [R, W], rows [R])`` to the output sequence of LSTM layers
        ``lstm.i`` (see :meth:`UnrolledLSTM.add_output_hook`): the cut through a layer that attribution's
        layer methods differentiate. Removed on exit, even on error."""
        handles = []
        try:
            for layer, fn in hooks.items():
                if layer not in self.output_hook_layers():
                    raise LayerError(f"{layer!r} has no output hook; use one of {', '.join(self.output_hook_layers())}")
                handles.append(self.model.rnn.add_output_hook(int(layer.split(".")[1]) - 1, fn))
            yield
        finally:
            for h in handles:
                h.remove()

    def _register(self, layer: str, fn: HookFn):
        self.check_layer(layer)
        if layer == "embedding":
            self.model.embedding_hooks.append(fn)
            return _HookHandle(self.model.embedding_hooks, fn)
        parts = layer.split(".")
        return self.model.rnn.add_hook(int(parts[1]) - 1, fn, "c" if len(parts) == 3 else "h")

    # -- tokens ----------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """A string as vocabulary items: its characters, or its whitespace-separated words."""
        return list(text) if self.level == "char" else text.split()

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        ids = []
        for tok in tokens:
            i = self.stoi.get(tok, self.unk_index)
            if i is None:
                raise ModelError(f"token {tok!r} is not in the vocabulary of {self.name} and it has no unk")
            ids.append(i)
        return ids

    def token_count(self, words: Sequence[str]) -> int:
        """Tokens ``words`` encode to before truncation at ``max_length`` (the BOS included): extraction
        windows a longer sentence at word boundaries instead of losing its end."""
        words = list(words)
        bos = int(self.bos is not None)
        if self.level == "char":
            return bos + sum(len(w) for w in words) + max(len(words) - 1, 0)  # a space between words
        return bos + len(words)

    def token_counts(self, sentences: Sequence[Sequence[str]]) -> list[int]:
        return [self.token_count(w) for w in sentences]

    def encode(self, sentences: Sequence[Sequence[str]] | Sequence[str]) -> Batch:
        all_tokens, all_wids, n_words = [], [], []
        for sent in sentences:
            words = sent.split() if isinstance(sent, str) else list(sent)
            toks: list[str] = [self.bos] if self.bos is not None else []
            wids: list[int | None] = [None] * len(toks)
            for w, word in enumerate(words):
                if self.level == "char":
                    if w:
                        toks.append(" ")
                        wids.append(None)
                    toks.extend(word)
                    wids.extend([w] * len(word))
                else:
                    toks.append(word)
                    wids.append(w)
            all_tokens.append(toks[: self.max_length])
            all_wids.append(wids[: self.max_length])
            n_words.append(len(words))
        width = max([len(t) for t in all_tokens] + [1])
        ids = torch.full((len(all_tokens), width), self.pad_index, dtype=torch.long)
        mask = torch.zeros((len(all_tokens), width), dtype=torch.long)
        for b, toks in enumerate(all_tokens):
            ids[b, : len(toks)] = torch.tensor(self.token_ids(toks), dtype=torch.long)
            mask[b, : len(toks)] = 1
            all_wids[b] = all_wids[b] + [None] * (width - len(toks))
            all_tokens[b] = toks + ["<pad>"] * (width - len(toks))
        return Batch({"input_ids": ids}, all_wids, n_words, mask, all_tokens)

    # -- running ---------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> LSTMOutput:
        batch = batch.to(self.device)
        return self.model(batch.inputs["input_ids"], batch.attention_mask)

    def embedding_module(self) -> nn.Embedding:
        """The token embedding (the ``embedding`` hook point reads its output)."""
        return self.model.embedding

    def forward_embeds(self, batch: Batch, embeds: torch.Tensor, positions: Sequence[int] | None = None) -> LSTMOutput:
        """Run the model on input vectors ``embeds [B, T, E]`` in place of the embeddings of
        ``batch``'s ids: the function attribution methods differentiate. Each position's vector is
        read exactly where the model reads that token (textgenrnn: in every 40-character window that
        contains it); ids are still passed for the padding context and masks.

        ``positions``: only the logits at these positions are needed. A model whose predictions are
        separate computations (``logits_at`` of textgenrnn's windows) computes only those; the other
        positions of the returned ``[B, T, V]`` logits are NaN, so that reading them cannot go unnoticed."""
        if "inputs_embeds" not in inspect.signature(self.model.forward).parameters:
            raise ModelError(
                f"{type(self.model).__name__}.forward has no inputs_embeds argument; attribution needs "
                "forward(input_ids, attention_mask=None, inputs_embeds=None)"
            )
        batch = batch.to(self.device)
        ids = batch.inputs["input_ids"]
        if embeds.shape[:2] != ids.shape:
            raise ModelError(f"embeddings of shape {tuple(embeds.shape)} for ids of shape {tuple(ids.shape)}")
        own = type(self.model).logits_at is not HookedLSTMModel.logits_at
        if positions is None or not own or self.task != "lm" or getattr(self.model, "context", None) == "stream":
            return self.model(ids, batch.attention_mask, inputs_embeds=embeds)
        positions = sorted(set(int(p) for p in positions))
        lg = self.model.logits_at(ids, positions, inputs_embeds=embeds)
        full = lg.new_full((ids.shape[0], ids.shape[1], lg.shape[-1]), float("nan"))
        full[:, positions] = lg
        return LSTMOutput(full)

    @property
    def pad_id(self) -> int:
        return self.pad_index

    @property
    def unk_id(self) -> int | None:
        return self.unk_index

    def token_id(self, token: str | int) -> int:
        """The id of one vocabulary item (a character for character models)."""
        if isinstance(token, int):
            if not 0 <= token < len(self.itos):
                raise ModelError(f"token id {token} out of range: the vocabulary has {len(self.itos)} entries")
            return token
        if token in self.stoi:
            return self.stoi[token]
        toks = self.tokenize(token)
        if len(toks) != 1 or toks[0] not in self.stoi:
            raise ModelError(
                f"{token!r} is not one token of {self.name} ({'a character' if self.level == 'char' else 'a word'} "
                "of its vocabulary); use a continuation target for longer strings"
            )
        return self.stoi[toks[0]]

    def token_text(self, token_id: int) -> str:
        """The vocabulary item of an id."""
        return self.itos[token_id] if 0 <= token_id < len(self.itos) else f"<{token_id}>"

    def word_boundary_ids(self) -> list[int]:
        """Ids of the tokens that end a word in a character model: whitespace, punctuation and ``bos``
        (which also ends a text). Empty for word-level models."""
        if self.level != "char":
            return []
        ids = [i for t, i in self.stoi.items() if len(t) == 1 and (t.isspace() or _is_punct(t))]
        if self.bos is not None:
            ids.append(self.stoi[self.bos])
        return sorted(set(ids))

    def run_with_cache(
        self, batch: Batch, layers: Sequence[str], detach: bool = True
    ) -> tuple[LSTMOutput, dict[str, torch.Tensor]]:
        """As the base method, ``{layer: [B, T, D]}``. When a model calls a hook more than once for a
        step (textgenrnn's windows), the model's ``canonical_call`` (``"last"`` for textgenrnn, whose
        windows run in lockstep so that the window ending at a step reaches it last) picks the state
        that predicts the next token."""
        return super().run_with_cache(batch, self.resolve_layers(layers), detach)

    def _new_cache(self) -> dict[int, torch.Tensor]:
        return {}  # time step -> [B, D]

    def _cache_hook(self, parts: dict[int, torch.Tensor], detach: bool) -> HookFn:
        keep_last = getattr(self.model, "canonical_call", "first") == "last"

        def fn(act, step):
            value = act.detach() if detach else act
            if keep_last:
                parts[step] = value
            else:
                parts.setdefault(step, value)

        # detached values are only read: a hidden state is then served from the fused kernel; with
        # detach=False the cached tensor must be the one the forward goes on with (gradients), so it steps
        return reads_only(fn) if detach else fn

    def _stack_cache(self, parts: dict[int, torch.Tensor]) -> torch.Tensor:
        return torch.stack([parts[t] for t in sorted(parts)], 1)

    def _text_ids(self, text: str) -> list[int]:
        return self.token_ids(([self.bos] if self.bos is not None else []) + self.tokenize(text))

    def _require_lm(self, what: str) -> None:
        if self.task != "lm":
            raise ModelError(f"{what} needs a language model, {self.name} is a {self.task} model")

    def sequence_logprob(self, prefix: str, continuation: str, word_boundary: bool = False) -> torch.Tensor:
        """``sum_j log p(continuation_j | bos, prefix, continuation_<j)`` as a 0-d tensor.

        Tokens come from :meth:`tokenize` (characters for character models, so this is the log of the
        product of the per-character probabilities). ``word_boundary=True`` (character models) adds
        ``log p(the next character ends the word)`` (any of :meth:`word_boundary_ids`), so that " he"
        no longer also counts " her" or " help". No ``torch.no_grad`` here: attribution methods
        differentiate through it; attached hooks apply.
        """
        self._require_lm("sequence_logprob")
        ctx = self._text_ids(prefix)
        cont = self.token_ids(self.tokenize(continuation))
        if not ctx:
            raise ModelError("sequence_logprob needs a non-empty prefix when the model has no bos token")
        if not cont:
            raise ModelError("sequence_logprob needs a non-empty continuation")
        boundary = self.word_boundary_ids() if word_boundary else []
        if word_boundary and not boundary:
            raise ModelError(f"{self.name} has no word-boundary tokens (word_boundary needs a character model)")
        ids = torch.tensor([ctx + cont], device=self.device)
        last = ids.shape[1] - (0 if boundary else 1)
        logits = self.model.logits_at(ids, range(len(ctx) - 1, last))[0]
        logp = torch.log_softmax(logits.float(), -1)
        target = torch.tensor(cont, device=self.device)
        total = logp[: len(cont)].gather(1, target[:, None]).sum()
        if boundary:
            total = total + torch.logsumexp(logp[-1, boundary], 0)
        return total

    def prompt_ids(self, text: str) -> list[int]:
        """The ids the model reads for a prompt: ``bos`` (if any) and the tokens of ``text``."""
        return self._text_ids(text)

    @torch.no_grad()
    def generate_tokens(self, prefix: str | Sequence[int], n_tokens: int = 100, temperature: float = 0.0,
                        seed: int | None = None, cache: bool = True) -> tuple[list[int], list[int], torch.Tensor]:
        """``(prompt ids, generated ids, logits [generated, V])``: ``n_tokens`` tokens after ``prefix``
        (a text, read as ``bos`` + its tokens, or ids), greedy when ``temperature <= 0``, else sampled
        from ``softmax(logits / temperature)`` with a generator seeded by ``seed``. Padding is never
        produced; generation stops after ``bos`` (which also marks the end of a text, as in
        textgenrnn), which is then the last generated id. ``logits`` are the model's raw next-token
        logits at each step.

        ``cache`` (default): carry the recurrent state from token to token where the model has one
        (:meth:`HookedLSTMModel.start_decoding`: an ``nn.LSTM`` LM, textgenrnn's stream mode), so a
        token costs one LSTM step instead of a forward over the whole text. textgenrnn's window mode
        has no such state: every prediction starts a fresh LSTM at the start of its 40-character window,
        so each token runs exactly one window (40 steps, independent of the text length).
        ``cache=False`` recomputes every prediction from all ids; both give the same tokens, and
        attached hooks apply at the same steps.
        """
        self._require_lm("generate")
        ids = self._text_ids(prefix) if isinstance(prefix, str) else [self.token_id(int(i)) for i in prefix]
        if not ids:
            raise ModelError("generate needs a non-empty prefix when the model has no bos token")
        if n_tokens < 0:
            raise ModelError(f"n_tokens must be >= 0, got {n_tokens}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bos_id = self.stoi[self.bos] if self.bos is not None else None
        out: list[int] = []
        logits_out: list[torch.Tensor] = []
        state = None
        for _ in range(n_tokens):
            if state is None:
                state = self.model.start_decoding(torch.tensor([ids], device=self.device), cache=cache)
            else:
                state = self.model.decode_step(state, torch.tensor([out[-1]], device=self.device))
            logits = state.logits[0].double().cpu()
            logits_out.append(logits.float())
            logits = logits.clone()
            logits[self.pad_index] = -torch.inf
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            out.append(nxt)
            if nxt == bos_id:
                break
        V = self.model.embedding.num_embeddings
        return ids, out, torch.stack(logits_out) if logits_out else torch.zeros(0, V)

    @torch.no_grad()
    def generate(self, prefix: str, n_chars: int = 100, temperature: float = 0.5, seed: int | None = None,
                 cache: bool = True) -> str:
        """Sample ``n_chars`` tokens after ``prefix`` (``temperature <= 0``: greedy); returns the
        continuation only. Padding is never sampled; sampling stops early when ``bos`` (which also marks
        the end of a text, as in textgenrnn) is produced. ``cache``: see :meth:`generate_tokens`."""
        _, out, _ = self.generate_tokens(prefix, n_chars, temperature, seed, cache)
        bos_id = self.stoi[self.bos] if self.bos is not None else None
        if out and out[-1] == bos_id:
            out = out[:-1]
        return ("" if self.level == "char" else " ").join(self.itos[i] for i in out)
