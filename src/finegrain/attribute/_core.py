"""The forward function every attribution method runs: target(model(inputs_embeds)) per row.

``prepare`` encodes a group of texts, binds the target, builds the token baseline (content tokens
replaced by pad/mask/unk, special tokens, padding and non-attributable tokens kept) and returns a
:class:`Prepared` whose ``forward`` is what Captum calls:
``forward(embeds [rows, T, D], ex_idx [rows], *inputs) -> [rows]``. Every per-example tensor is
passed as an additional forward argument, so Captum expands it consistently with its own row
layout (steps x examples, perturbations x examples); ``ex_idx`` tells the target which example each
row is. The forward counts rows per example (``n_evaluations``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from finegrain.attribute.targets import Scorer, Target, TargetError
from finegrain.models.base import Batch, ModelAdapter, ModelError


class AttributionError(ModelError):
    """Bad method, layer, neuron or argument for an attribution."""


def as_word_lists(texts: str | Sequence[str] | Sequence[Sequence[str]]) -> tuple[list[list[str]], bool]:
    """``(word lists, single)``: a single string is one text."""
    if isinstance(texts, str):
        return [texts.split()], True
    out = [t.split() if isinstance(t, str) else list(t) for t in texts]
    if not out or any(not w for w in out):
        raise AttributionError("attribution needs at least one non-empty text")
    return out, False


def embedding_module(adapter: ModelAdapter) -> nn.Module:
    """The token (word-piece / character) embedding module of the model."""
    fn = getattr(adapter, "embedding_module", None)
    if callable(fn):
        return fn()
    if hasattr(adapter.model, "get_input_embeddings"):
        emb = adapter.model.get_input_embeddings()
        if emb is not None:
            return emb
    for _, mod in adapter.model.named_modules():
        if isinstance(mod, nn.Embedding):
            return mod
    raise AttributionError(f"cannot find the input embedding module of {adapter.name}")


def baseline_token_id(adapter: ModelAdapter, baseline: str | int) -> int:
    """Token id used for removed content tokens: ``pad`` (default), ``mask``, ``unk`` or an id."""
    if isinstance(baseline, int):
        return baseline
    tok = adapter.tokenizer
    tid = getattr(tok, f"{baseline}_token_id", None) if tok is not None else None
    if tid is None:
        fallback = getattr(adapter, f"{baseline}_id", None)
        if fallback is not None:
            return int(fallback)
        raise AttributionError(f"the tokenizer of {adapter.name} has no {baseline!r} token; pass an id")
    return int(tid)


def _is_hf(adapter: ModelAdapter) -> bool:
    from finegrain.models.hf import HFAdapter

    return isinstance(adapter, HFAdapter)


@dataclass
class Prepared:
    """One encoded group of examples with its bound target and token baseline."""

    adapter: ModelAdapter
    batch: Batch
    words: list[list[str]]
    scorer: Scorer
    attributable: torch.Tensor  # [B, T] bool: content tokens of prompt words
    embeds: torch.Tensor  # [B, T, D] detached
    base_embeds: torch.Tensor  # [B, T, D]
    base_ids: torch.Tensor
    keys: list[str]
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counting: bool = True

    @property
    def n(self) -> int:
        return len(self.batch)

    def args(self, idx: Sequence[int] | None = None) -> tuple:
        """Additional forward args ``(ex_idx, *inputs)`` for examples ``idx`` (default all)."""
        dev = self.embeds.device
        ex = torch.arange(self.n, device=dev) if idx is None else torch.as_tensor(list(idx), device=dev)
        return (ex, *[self.batch.inputs[k][ex] for k in self.keys])

    def forward(self, embeds: torch.Tensor, ex_idx: torch.Tensor, *vals: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.keys, vals))
        if self.counting:
            np.add.at(self.counts, ex_idx.detach().cpu().numpy(), 1)
        adapter = self.adapter
        with adapter.hooks(self.scorer.hooks):
            if _is_hf(adapter):
                out = adapter.model(inputs_embeds=embeds, **inputs)
            else:
                # any other adapter: run it on (expanded) ids and swap the embedding output
                def swap(module, args, output):
                    return embeds

                rows = ex_idx.tolist()
                sub = Batch(inputs, [self.batch.word_ids[r] for r in rows], [self.batch.n_words[r] for r in rows],
                            inputs.get("attention_mask", self.batch.attention_mask[ex_idx]))
                h = embedding_module(adapter).register_forward_hook(swap)
                try:
                    out = adapter.forward(sub)
                finally:
                    h.remove()
            return self.scorer(out, ex_idx, inputs)

    @contextlib.contextmanager
    def uncounted(self):
        old = self.counting
        self.counting = False
        try:
            yield
        finally:
            self.counting = old

    def value(self, embeds: torch.Tensor | None = None, batch_rows: int = 64) -> np.ndarray:
        """f at ``embeds`` (default: the inputs), without gradients and without counting."""
        embeds = self.embeds if embeds is None else embeds
        out = []
        with torch.no_grad(), self.uncounted():
            for s in range(0, self.n, batch_rows):
                idx = range(s, min(self.n, s + batch_rows))
                out.append(self.forward(embeds[s : s + batch_rows], *self.args(idx)).float().cpu())
        return torch.cat(out).numpy()

    def word_mask(self, b: int) -> np.ndarray:
        """``[n_words, T]`` bool: the attributable tokens of each word of example ``b``."""
        wids = self.batch.word_ids[b]
        T = self.batch.inputs["input_ids"].shape[1]
        m = np.zeros((len(self.words[b]), T), dtype=bool)
        att = self.attributable[b].cpu().numpy()
        for t, w in enumerate(wids[:T]):
            if w is not None and att[t] and w < len(self.words[b]):
                m[w, t] = True
        return m

    def feature_mask(self) -> torch.Tensor:
        """``[B, T, 1]`` word index per token for Captum's feature masks. Non-attributable tokens join
        word 0: their baseline equals the input, so ablating them with it changes nothing."""
        B, T = self.attributable.shape
        fm = torch.zeros(B, T, dtype=torch.long, device=self.embeds.device)
        for b, wids in enumerate(self.batch.word_ids):
            for t, w in enumerate(wids[:T]):
                if w is not None and self.attributable[b, t]:
                    fm[b, t] = w
        return fm.unsqueeze(-1)

    def mix(self, b: int, keep: torch.Tensor) -> torch.Tensor:
        """Embeddings of example ``b`` with only the words in ``keep`` ([M, n_words] bool) kept."""
        wm = torch.as_tensor(self.word_mask(b), device=self.embeds.device)  # [n, T]
        tok_keep = (keep.to(wm.device).float() @ wm.float()) > 0  # [M, T]
        tok_keep = tok_keep | ~self.attributable[b].unsqueeze(0)
        x, xb = self.embeds[b], self.base_embeds[b]
        return torch.where(tok_keep.unsqueeze(-1), x.unsqueeze(0), xb.unsqueeze(0))

    def game(self, b: int, batch_rows: int = 64):
        """The set function v(S) = f(words in S kept, others at the baseline) of example ``b``;
        ``v(keep [M, n] bool) -> [M]`` (counted)."""

        def v(keep: torch.Tensor) -> torch.Tensor:
            out = []
            keep = torch.as_tensor(keep, dtype=torch.bool)
            with torch.no_grad():
                for s in range(0, len(keep), batch_rows):
                    emb = self.mix(b, keep[s : s + batch_rows])
                    out.append(self.forward(emb, *self.args([b] * len(emb))).float().cpu())
            return torch.cat(out) if out else torch.zeros(0)

        return v

    def tokens(self, b: int) -> list[str]:
        T = int(self.batch.attention_mask[b].sum())
        toks = self.batch.tokens[b] if self.batch.tokens else [str(i) for i in
                                                               self.batch.inputs["input_ids"][b].tolist()]
        return list(toks[:T])


def prepare(
    adapter: ModelAdapter,
    words: list[list[str]],
    target: Target,
    baseline: str | int = "pad",
) -> Prepared:
    """Encode ``words``, bind ``target`` and build the token baseline."""
    if not isinstance(target, Target):
        raise TargetError(f"target must be a finegrain Target, got {type(target).__name__}")
    batch, n_prompt = target.encode(adapter, words)
    scorer = target.bind(adapter, batch, n_prompt=n_prompt)
    ids = batch.inputs["input_ids"]
    special = set(getattr(adapter.tokenizer, "all_special_ids", None) or [])
    att = torch.zeros_like(ids, dtype=torch.bool)
    for b, wids in enumerate(batch.word_ids):
        for t, w in enumerate(wids):
            if w is not None and w < n_prompt[b] and int(ids[b, t]) not in special and batch.attention_mask[b, t]:
                att[b, t] = True
    base_ids = torch.where(att, torch.full_like(ids, baseline_token_id(adapter, baseline)), ids)
    emb = embedding_module(adapter)
    with torch.no_grad():
        embeds = emb(ids).detach()
        base_embeds = emb(base_ids).detach()
    keys = [k for k in batch.inputs if torch.is_tensor(batch.inputs[k]) and (k != "input_ids" or not _is_hf(adapter))]
    p = Prepared(adapter, batch, [list(w[: n_prompt[i]]) for i, w in enumerate(words)], scorer, att, embeds,
                 base_embeds, base_ids, keys)
    p.counts = np.zeros(len(batch), dtype=np.int64)
    return p


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode (no dropout) and parameters frozen during attribution; restored afterwards."""
    was = model.training
    req = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in req:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in req:
            p.requires_grad_(r)
        model.train(was)
