"""Per-head attention patterns as one cache object, their summary scores and heatmaps.

Patterns are the post-softmax attention weights ``A[query, key]`` of every head of every block, read in an
eager forward (:meth:`HFAdapter.attention_patterns`: sdpa / flash kernels never form them). Heads are addressed
as everywhere in finegrain: head ``h`` of ``layer.i.attn`` (``finegrain.intervene.Head("layer.i.attn", h)``),
which owns units ``h*head_dim .. (h+1)*head_dim - 1`` of that hook point, so a head found here can be patched
(:func:`finegrain.patching.activation_patching` with ``components="heads"``), ablated or set with
:func:`finegrain.intervene.intervene`. The summary scores follow the usual head taxonomy (Clark et al. 2019,
"What does BERT look at?"; Olsson et al. 2022 for previous-token heads).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finegrain.errors import ModelError, ParameterError
from finegrain.models.base import ModelAdapter, preserved_state
from finegrain.results import Result


@dataclass
class AttentionPatterns(Result):
    """``patterns[l]`` is ``[batch, heads, query, key]`` for block ``layers[l]`` (``layer.i.attn``);
    ``tokens[b]`` and ``lengths[b]`` (real tokens, padding excluded) describe sentence ``b``. Index with a layer
    name (``cache["layer.2.attn"]`` or ``cache["layer.2"]``) or a position in :attr:`layers`."""

    kind = "attention"
    model: str = ""
    layers: list[str] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    patterns: list = field(default_factory=list)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["patterns"] = [np.asarray(p, dtype=np.float32) for p in d.get("patterns", [])]
        return d

    def _index(self, layer: int | str) -> int:
        if isinstance(layer, int | np.integer):
            if not -len(self.layers) <= layer < len(self.layers):
                raise ParameterError(f"layer index {layer} out of range: {len(self.layers)} layers")
            return int(layer) % len(self.layers)
        name = layer if str(layer).endswith(".attn") else f"{layer}.attn"
        if name not in self.layers:
            raise ParameterError(f"no attention patterns for {layer!r}; layers: {', '.join(self.layers)}")
        return self.layers.index(name)

    def __getitem__(self, layer: int | str) -> np.ndarray:
        return np.asarray(self.patterns[self._index(layer)])

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return int(np.asarray(self.patterns[0]).shape[1]) if self.patterns else 0

    def head(self, layer: int | str, head: int, sentence: int = 0) -> np.ndarray:
        """``[n, n]`` pattern of one head on sentence ``sentence``, cropped to its real tokens."""
        P = self[layer]
        if not 0 <= head < P.shape[1]:
            raise ParameterError(f"head {head} out of range: {P.shape[1]} heads")
        if not 0 <= sentence < P.shape[0]:
            raise ParameterError(f"sentence {sentence} out of range: {P.shape[0]} sentences")
        n = self.lengths[sentence]
        return P[sentence, head, :n, :n]

    def scores(self) -> dict[str, np.ndarray]:
        """Per ``[layer, head]``, averaged over the real query tokens of all sentences: ``previous`` (weight on
        the token before the query), ``first`` (on the first token), ``self`` (on the query itself) and
        ``entropy`` (of the query's distribution, in nats)."""
        L, H = len(self.layers), self.n_heads
        out = {k: np.zeros((L, H)) for k in ("previous", "first", "self", "entropy")}
        for li in range(L):
            prev, first, diag, ent = [], [], [], []
            for b, n in enumerate(self.lengths):
                A = np.asarray(self.patterns[li][b, :, :n, :n], dtype=np.float64)  # [H, n, n]
                q = np.arange(n)
                if n > 1:
                    prev.append(A[:, q[1:], q[1:] - 1])
                first.append(A[:, :, 0])
                diag.append(A[:, q, q])
                ent.append(-(A * np.log(np.clip(A, 1e-30, None))).sum(-1))
            out["previous"][li] = np.concatenate(prev, 1).mean(1) if prev else np.nan
            out["first"][li] = np.concatenate(first, 1).mean(1)
            out["self"][li] = np.concatenate(diag, 1).mean(1)
            out["entropy"][li] = np.concatenate(ent, 1).mean(1)
        return out

    def table(self) -> str:
        s = self.scores()
        lines = [f"attention patterns of {self.model}: {len(self.layers)} layers x {self.n_heads} heads, "
                 f"{len(self.lengths)} sentence(s); mean weight on the previous / first / own token, entropy (nats)",
                 f"  {'head':<22}{'previous':>9}{'first':>9}{'self':>9}{'entropy':>9}"]
        for li, layer in enumerate(self.layers):
            for h in range(self.n_heads):
                lines.append(f"  {layer + ' head ' + str(h):<22}" + "".join(
                    f"{s[k][li, h]:>9.3f}" for k in ("previous", "first", "self", "entropy")))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike, layer: int | str | None = None, sentence: int = 0) -> Path:
        """Heatmaps of every head (columns) of every layer or of one ``layer`` (rows) on one sentence."""
        from finegrain.viz.lens import plot_attention  # heavy: matplotlib, imported when a picture is drawn

        idx = range(len(self.layers)) if layer is None else [self._index(layer)]
        mats = [[self.head(li, h, sentence) for h in range(self.n_heads)] for li in idx]
        n = self.lengths[sentence]
        return plot_attention(mats, self.tokens[sentence][:n], [self.layers[li] for li in idx], path,
                              title=f"attention patterns ({self.model}), sentence {sentence}")

    def save_plots(self, directory: str | os.PathLike, sentence: int = 0) -> list[Path]:
        """One PNG per layer (``attention_layer.i.png``, all heads) in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [self.plot(directory / f"attention_{lay.removesuffix('.attn')}.png", layer=lay, sentence=sentence)
                for lay in self.layers]


def attention_patterns(adapter: ModelAdapter, texts: str | Sequence[str] | Sequence[Sequence[str]]
                       ) -> AttentionPatterns:
    """Every head's attention pattern on ``texts`` (one text or a batch, padded) from one forward pass."""
    if not hasattr(adapter, "attention_patterns"):
        raise ModelError(f"attention patterns need a transformer (an HFAdapter); {adapter.name} is a "
                         f"{adapter.kind} model")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ParameterError("no text given")
    batch = adapter.encode([t.split() if isinstance(t, str) else list(t) for t in texts])
    with preserved_state(adapter.model), torch.no_grad():
        adapter.model.eval()
        _, pats = adapter.attention_patterns(batch)
    lengths = [int(m) for m in batch.attention_mask.sum(1).tolist()]
    if any(int(batch.attention_mask[b, :n].sum()) != n for b, n in enumerate(lengths)):
        raise ModelError(f"{adapter.name} pads on the left; attention patterns assume right padding")
    return AttentionPatterns(model=adapter.name, layers=[f"layer.{i}.attn" for i in range(1, len(pats) + 1)],
                             tokens=[list(t) for t in batch.tokens], lengths=lengths,
                             patterns=[p.detach().float().cpu().numpy() for p in pats])
