"""The pretrained textgenrnn character LSTM (Woolf, 2018, https://github.com/minimaxir/textgenrnn) in
PyTorch, loaded from the weights shipped in the ``textgenrnn`` package without importing it (the
package imports TensorFlow).

Architecture: embedding (465 characters -> 100) -> LSTM 128 -> LSTM 128; the sequences
``[emb, h1, h2]`` (356 dims) are pooled by a softmax attention over time (``AttentionWeightedAverage``:
one weight vector, ``a_t = softmax_t(x_t . w)``, context ``= sum_t a_t x_t``) -> dense softmax over the
465 characters. Index 0 is padding (never a target); ``<s>`` starts (and ends) a text.

The original predicts the next character from a window of the last 40 characters, left-padded with
index 0, with fresh LSTM states at the window start. The attention does *not* mask the padding (the
embedding has no ``mask_zero``) and the model was trained that way, so padding steps are part of the
context it expects: we keep them unmasked (masking changes every prediction of a text's first 39
characters). Batches are right-padded: each position's window only looks backwards.

``TextgenrnnModel.context`` chooses what the ``[B, T, V]`` next-character logits of the LM view are:

``"window"`` (default, exact)
    The logits at position ``t`` are the original's prediction from the left-padded 40-character window
    ending at ``t``. All windows of a batch run as one batch of 40-step sequences: without hooks through
    the fused LSTM kernel; with hooks the embedding and every layer below the first hooked one still run
    fused, and the hooked layers step the windows in lockstep (40 Python steps, whatever the text
    length). A hook is called with the sentence step ``s`` of every state it sees (padding steps
    excluded), once per window that contains ``s``: an edit applies to position ``s`` in every window,
    so interventions reach all later predictions exactly as the model computes them. Windows are visited
    in order of position at each step, so the window ending at ``s`` — the one whose state predicts
    character ``s + 1`` from at most 40 characters of context, as the model always has — is the last to
    reach ``s``; ``run_with_cache`` keeps that call (``canonical_call = "last"``).
``"stream"``
    One pass over the whole character sequence (after 39 padding steps), logits from the attention over
    its last 40 steps; states carry memory from the start of the text, which the model never had in
    training. Measured on an 84-character English sentence: 1.37 nats/char in "window" vs 3.41 in
    "stream" (close for the first ~15 characters, diverging after). Use it to study whole-text states,
    not for predictions.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import ModelError
from .lstm import DecodeState, HookedLSTMModel, LSTMAdapter, LSTMOutput, UnrolledLSTM

__all__ = ["TextgenrnnModel", "convert_cudnn_lstm", "load_textgenrnn", "textgenrnn_files"]

WINDOW = 40
BOS = "<s>"


class TextgenrnnModel(HookedLSTMModel):
    """textgenrnn's network: embedding -> stacked LSTM -> attention over ``[emb, h1, h2]`` -> dense."""

    task = "lm"
    canonical_call = "last"  # see the module docstring: the window ending at a step reaches it last

    def __init__(
        self,
        vocab_size: int = 465,
        embedding_dim: int = 100,
        hidden_size: int = 128,
        num_layers: int = 2,
        window: int = WINDOW,
        context: str = "window",
        chunk: int = 4096,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = UnrolledLSTM(embedding_dim, hidden_size, num_layers)
        self.attention = nn.Parameter(torch.zeros(embedding_dim + num_layers * hidden_size))
        self.output = nn.Linear(embedding_dim + num_layers * hidden_size, vocab_size)
        self.window, self.chunk = window, chunk
        self.context = context

    @property
    def context(self) -> str:
        return self._context

    @context.setter
    def context(self, value: str) -> None:
        if value not in ("stream", "window"):
            raise ModelError(f"context must be 'stream' or 'window', got {value!r}")
        self._context = value

    def features(
        self,
        input_ids: torch.Tensor | None,
        state=None,
        hooked: bool = True,
        step_offset: int = 0,
        inputs_embeds: torch.Tensor | None = None,
        step_offsets=None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``[emb, h1, h2, ...]`` per step, ``[B, T, 356]``, and the final LSTM state."""
        emb = self.embed(input_ids, hooked, step_offset, inputs_embeds=inputs_embeds, step_offsets=step_offsets)
        outs, final = self.rnn.forward_layers(emb, state, hooked, step_offset, step_offsets=step_offsets)
        return torch.cat([emb, *outs], -1), final

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """AttentionWeightedAverage over the time axis of ``[N, W, D]`` -> ``[N, D]`` (no masking)."""
        att = torch.softmax(feats @ self.attention, -1)
        return (att[..., None] * feats).sum(-2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> LSTMOutput:
        """``[B, T]`` character ids (rows right-padded) -> next-character logits ``[B, T, V]``.
        ``inputs_embeds [B, T, E]`` replaces the embeddings of the ids (not of the padding context)."""
        if self.context == "stream":
            return self._forward_stream(input_ids, inputs_embeds)
        return LSTMOutput(self.logits_at(input_ids, range(input_ids.shape[1]), inputs_embeds))

    def logits_at(self, input_ids: torch.Tensor, positions, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, P, V]`` predicted from the windows ending at ``positions`` only."""
        positions = list(positions)
        if self.context == "stream":
            return self._forward_stream(input_ids, inputs_embeds).logits[:, positions]
        n, w = input_ids.shape[0], self.window
        if not positions:
            return self.output.weight.new_zeros(n, 0, self.output.out_features)
        if inputs_embeds is None and not self.has_hooks():
            # ids windows are small: embed chunk by chunk (window t = padded[:, t : t + w])
            padded = nn.functional.pad(input_ids, (w - 1, 0), value=0)
            windows = padded.unfold(1, w, 1)[:, positions].reshape(-1, w)
            logits = [self.output(self.pool(self.features(c, hooked=False)[0])) for c in windows.split(self.chunk)]
            return torch.cat(logits).reshape(n, len(positions), -1)
        emb = self._padded_embeddings(input_ids, inputs_embeds)  # [B, T + w - 1, E]
        # window-major rows (row p * n + b = window ending at positions[p] of text b): one block per
        # window, so that the hooked layers can run every window in lockstep
        win = emb.unfold(1, w, 1)[:, positions].permute(1, 0, 3, 2).reshape(len(positions) * n, w, -1)
        if not self.has_hooks():
            logits = [self.output(self.pool(self.features(None, hooked=False, inputs_embeds=c)[0]))
                      for c in win.split(self.chunk)]
            return torch.cat(logits).reshape(len(positions), n, -1).transpose(0, 1)
        offsets = [t - w + 1 for t in positions]
        feats, _ = self.features(None, inputs_embeds=win, step_offsets=offsets)
        return self.output(self.pool(feats)).reshape(len(positions), n, -1).transpose(0, 1)

    def _padded_embeddings(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """Embeddings of the ``w - 1`` padding steps (index 0, the model's empty context) followed by the
        text's (``inputs_embeds`` if given); embedding hooks run later, per window."""
        pad = self.embedding(input_ids.new_zeros(input_ids.shape[0], self.window - 1))
        text = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        return torch.cat([pad.to(text.dtype), text], 1)

    def _stream_features(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None):
        """Stream mode: ``(features [B, W-1+T, D] of the padding context and the text, final state)``."""
        n = input_ids.shape[0]
        # the padding context is the same for every row: run it once, without hooks
        pre, (h, c) = self.features(input_ids.new_zeros(1, self.window - 1), hooked=False)
        state = (h.expand(-1, n, -1).contiguous(), c.expand(-1, n, -1).contiguous())
        feats, final = self.features(input_ids, state, inputs_embeds=inputs_embeds)
        return torch.cat([pre.expand(n, -1, -1).to(feats.dtype), feats], 1), final

    def _forward_stream(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> LSTMOutput:
        steps, w = input_ids.shape[1], self.window
        full, _ = self._stream_features(input_ids, inputs_embeds)  # [B, W-1+T, D]
        att = torch.softmax((full @ self.attention).unfold(1, w, 1), -1)  # [B, T, W]
        # a loop over the W window offsets avoids materialising [B, T, W, D]
        ctx = sum(att[..., k, None] * full[:, k : k + steps] for k in range(w))
        return LSTMOutput(self.output(ctx), full[:, w - 1 :, -self.rnn.hidden_size :])

    # -- decoding one character at a time (LSTMAdapter.generate_tokens) ---------------------------
    @property
    def incremental(self) -> bool:
        """Stream mode carries the LSTM state and the last ``window`` feature vectors (what the attention
        pools) from character to character. Window mode has no incremental state: each prediction runs a
        fresh LSTM from the start of its own 40-character window (the windows ending at ``t`` and ``t + 1``
        start at different characters, so no state is shared), so decoding runs exactly one window per
        character — ``window`` LSTM steps, whatever the length of the text."""
        return self.context == "stream"

    def _start_cached(self, input_ids: torch.Tensor) -> DecodeState:
        full, state = self._stream_features(input_ids)
        last = full[:, -self.window :]
        return DecodeState(input_ids, self.output(self.pool(last)), (state, last))

    def _step_cached(self, state: DecodeState, ids: torch.Tensor) -> DecodeState:
        t = state.length
        lstm_state, last = state.state
        feat, lstm_state = self.features(ids[:, t:], lstm_state, step_offset=t)
        last = torch.cat([last[:, 1:], feat.to(last.dtype)], 1)
        return DecodeState(ids, self.output(self.pool(last)), (lstm_state, last))


def textgenrnn_files() -> tuple[Path, Path]:
    """Paths of ``textgenrnn_weights.hdf5`` and ``textgenrnn_vocab.json`` in the installed package."""
    spec = importlib.util.find_spec("textgenrnn")  # locates the package without importing TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the textgenrnn package is not installed (pip install textgenrnn --no-deps)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    weights, vocab = folder / "textgenrnn_weights.hdf5", folder / "textgenrnn_vocab.json"
    for f in (weights, vocab):
        if not f.is_file():
            raise ModelError(f"textgenrnn file missing: {f}")
    return weights, vocab


def convert_cudnn_lstm(
    kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray, layout: str = "cudnn"
) -> dict[str, torch.Tensor]:
    """Keras LSTM weights -> ``nn.LSTMCell`` parameters (gate order i, f, c, o = PyTorch i, f, g, o).

    ``layout="cudnn"``: weights saved by Keras' CuDNNLSTM (as textgenrnn's), converted like Keras'
    ``_convert_rnn_weights``: every input-kernel gate block ``k [in, H]`` is ``k.T.reshape(k.shape,
    order="F")``, every recurrent block is ``k.T``, and the ``8H`` bias is input-side + recurrent-side.
    ``layout="keras"``: a plain Keras LSTM (``[in, 4H]`` kernels, ``4H`` bias). The tests check that
    only the CuDNN conversion gives a good language model.
    """
    if layout not in ("cudnn", "keras"):
        raise ModelError(f"layout must be 'cudnn' or 'keras', got {layout!r}")
    if layout == "cudnn":
        kernel = np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, 4)])
        recurrent_kernel = np.hstack([k.T for k in np.hsplit(recurrent_kernel, 4)])
        half = bias.shape[0] // 2
        bias_ih, bias_hh = bias[:half], bias[half:]
    else:
        bias_ih, bias_hh = bias, np.zeros_like(bias)

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return {
        "weight_ih": tensor(kernel.T),
        "weight_hh": tensor(recurrent_kernel.T),
        "bias_ih": tensor(bias_ih),
        "bias_hh": tensor(bias_hh),
    }


def _load_model(weights: Path, layout: str = "cudnn") -> TextgenrnnModel:
    import h5py  # heavy: loads the HDF5 C library, which only reading the Keras weight file needs

    with h5py.File(weights, "r") as f:
        emb = f["embedding/embedding/embeddings:0"][()]
        att = f["attention/attention/attention_W:0"][()]
        out_w, out_b = f["output/output/kernel:0"][()], f["output/output/bias:0"][()]
        rnn_names = sorted(k for k in f if k.startswith("rnn_") and k != "rnn_concat")
        rnns = [
            convert_cudnn_lstm(*(f[f"{r}/{r}/{n}:0"][()] for n in ("kernel", "recurrent_kernel", "bias")), layout)
            for r in rnn_names
        ]
    model = TextgenrnnModel(
        vocab_size=emb.shape[0],
        embedding_dim=emb.shape[1],
        hidden_size=rnns[0]["weight_hh"].shape[1],
        num_layers=len(rnns),
    )
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(emb))
        model.attention.copy_(torch.from_numpy(att[:, 0]))
        model.output.weight.copy_(torch.from_numpy(out_w.T))
        model.output.bias.copy_(torch.from_numpy(out_b))
        for cell, params in zip(model.rnn.cells, rnns):
            for name, value in params.items():
                getattr(cell, name).copy_(value)
    return model


def load_textgenrnn(device: str | torch.device | None = "auto", context: str = "window") -> LSTMAdapter:
    """The pretrained textgenrnn model as a character-level :class:`LSTMAdapter` (kind ``"lstm"``).

    Sentences are encoded as ``<s>`` followed by their characters (spaces between words included, word
    id ``None``); characters outside the vocabulary map to index 0, as in textgenrnn's own encoder.
    """
    weights, vocab_file = textgenrnn_files()
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    model = _load_model(weights)
    model.context = context
    return LSTMAdapter(model, vocab, level="char", bos=BOS, unk=0, pad_index=0, name="textgenrnn", device=device)
