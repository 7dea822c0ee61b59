"""Model adapters: one interface over Hugging Face transformers and PyTorch LSTMs.

Every capability of finegrain talks to a model through :class:`ModelAdapter`: it encodes words into
a :class:`Batch` that remembers which token belongs to which word, runs the model, and exposes named
hook points (one per layer name, as in TransformerLens) where activations are read or edited.

A hook function has the signature ``fn(act, step) -> Tensor | None``:

* for transformers ``act`` is the whole ``[batch, tokens, units]`` tensor and ``step`` is ``None``;
* for LSTMs, which are unrolled in time, ``act`` is ``[batch, units]`` at time step ``step``
  (so an edit at step t propagates to t+1, as a real intervention must).

Returning a tensor replaces the activation; returning ``None`` leaves it untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from finegrain.errors import ModelError

#: the models that come with the package (loaded offline by name)
EMBEDDED = ("minilm", "textgenrnn")

HookFn = Callable[[torch.Tensor, "int | None"], "torch.Tensor | None"]


@dataclass
class Batch:
    """Model inputs plus the token→word alignment of each sentence.

    ``inputs`` are the keyword arguments of the model's forward; ``word_ids[b][t]`` is the index of
    the word that token ``t`` of sentence ``b`` belongs to (``None`` for special tokens, padding and,
    in character models, spaces).
    """

    inputs: dict[str, torch.Tensor]
    word_ids: list[list[int | None]]
    n_words: list[int]
    attention_mask: torch.Tensor
    tokens: list[list[str]] = field(default_factory=list)

    def to(self, device) -> Batch:
        return Batch(
            {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()},
            self.word_ids,
            self.n_words,
            self.attention_mask.to(device),
            self.tokens,
        )

    def __len__(self) -> int:
        return len(self.word_ids)


@contextlib.contextmanager
def preserved_state(module: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad`` on exit, even
    on error: an analysis may switch the model to eval mode or freeze it, but must hand it back as it
    found it (issue 16)."""
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
        for p, req in grads:
            p.requires_grad_(req)


@contextlib.contextmanager
def eval_mode(model, freeze: bool = False):
    """Eval mode (no dropout) for the block; with ``freeze`` the parameters are frozen too (attribution:
    gradients flow to the inputs only). ``model`` is an ``nn.Module`` or an adapter (its ``.model``); it is
    yielded back and handed over in the training mode and with the ``requires_grad`` flags it had, also on
    error (:func:`preserved_state`)."""
    module = model.model if isinstance(model, ModelAdapter) else model
    with preserved_state(module):
        module.eval()
        if freeze:
            for p in module.parameters():
                p.requires_grad_(False)
        yield model


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ModelAdapter:
    """Base class. Subclasses implement ``layers``, ``encode``, ``_register`` and ``forward``."""

    kind: str = "model"  # "encoder" | "decoder" | "lstm"
    name: str = "model"
    model: nn.Module
    tokenizer = None
    max_length: int = 512
    device: torch.device

    # -- what exists -------------------------------------------------------------------
    def layers(self) -> dict[str, int]:
        """Ordered ``{layer name: number of units}`` of every hook point."""
        raise NotImplementedError

    def check_layer(self, layer: str) -> int:
        sizes = self.layers()
        if layer not in sizes:
            raise ModelError(f"unknown layer {layer!r} for {self.name}; available: {', '.join(sizes)}")
        return sizes[layer]

    def resolve_layers(self, layers: Sequence[str] | str | None, default: str = "hidden") -> list[str]:
        """``None``/"hidden" → the residual layers; "all" → every hook point; else check each name."""
        if layers is None or layers == "hidden":
            return self.hidden_layers()
        if layers == "all":
            return list(self.layers())
        if isinstance(layers, str):
            layers = [s.strip() for s in layers.split(",") if s.strip()]
        for lay in layers:
            self.check_layer(lay)
        return list(layers)

    def hidden_layers(self) -> list[str]:
        """The main representation layers (embeddings + residual outputs, or LSTM hidden states)."""
        return [n for n in self.layers() if not n.endswith((".mlp", ".attn", ".cell"))]

    def heads(self, layer: str) -> tuple[int, int]:
        """``(n_heads, head_dim)`` of an attention component."""
        raise ModelError(f"{layer} has no attention heads")

    # -- running -----------------------------------------------------------------------
    def encode(self, sentences: Sequence[Sequence[str]] | Sequence[str]) -> Batch:
        """Tokenise sentences given as word lists (or whitespace-split strings)."""
        raise NotImplementedError

    def forward(self, batch: Batch):
        """Run the model on a batch (no grad handling here: callers decide)."""
        raise NotImplementedError

    def _register(self, layer: str, fn: HookFn):
        """Attach ``fn`` at ``layer``; return a handle with ``.remove()``."""
        raise NotImplementedError

    @contextlib.contextmanager
    def hooks(self, hooks: dict[str, HookFn | list[HookFn]]) -> Iterator[None]:
        """Attach hook functions for the duration of the block; always removed, even on error."""
        handles = []
        try:
            for layer, fns in hooks.items():
                self.check_layer(layer)
                for fn in fns if isinstance(fns, list) else [fns]:
                    handles.append(self._register(layer, fn))
            yield
        finally:
            for h in handles:
                h.remove()

    def run_with_cache(
        self, batch: Batch, layers: Sequence[str], detach: bool = True
    ) -> tuple[object, dict[str, torch.Tensor]]:
        """Forward ``batch`` and return ``(output, {layer: [batch, tokens, units]})``."""
        cache = {lay: self._new_cache() for lay in layers}
        with self.hooks({lay: self._cache_hook(cache[lay], detach) for lay in layers}):
            out = self.forward(batch)
        result = {}
        for lay, parts in cache.items():
            if not parts:
                raise ModelError(f"hook point {lay} was not reached in the forward pass")
            result[lay] = self._stack_cache(parts)
        return out, result

    # how run_with_cache collects a hook point's calls; adapters whose hooks fire per time step override these
    def _new_cache(self):
        return []

    def _cache_hook(self, parts, detach: bool) -> HookFn:
        def fn(act, step):
            parts.append(act.detach() if detach else act)

        return fn

    def _stack_cache(self, parts) -> torch.Tensor:
        # a hook that reports one [B, D] per time step, or one [B, T, D] per call
        return torch.stack(parts, 1) if parts[0].dim() == 2 else parts[-1]

    def score_fn(self, output) -> torch.Tensor:
        """Logits of the model's head (or last hidden state for a bare encoder)."""
        if hasattr(output, "logits") and output.logits is not None:
            return output.logits
        if hasattr(output, "last_hidden_state"):
            return output.last_hidden_state
        return output

    def weights_hash(self) -> str:
        """A short content hash of the parameters (for store metadata / caching)."""
        h = hashlib.sha1()
        for name, p in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            t = p.detach().float().flatten()
            # a strided sample keeps hashing fast for large models yet changes with any retraining
            h.update(t[:: max(1, t.numel() // 4096)].cpu().numpy().tobytes())
            h.update(str(tuple(p.shape)).encode())
        return h.hexdigest()

    def to(self, device) -> ModelAdapter:
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    def __repr__(self) -> str:
        sizes = self.layers()
        return f"{type(self).__name__}({self.name!r}, kind={self.kind}, layers={len(sizes)}, device={self.device})"
