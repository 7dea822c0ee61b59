"""Neuron analysis of encoder-decoder (translation) models: the setting of Belinkov et al. 2017
("What do Neural Machine Translation Models Learn about Morphology?", ACL) and Bau et al. 2019
("Identifying and Controlling Important Neurons in Neural Machine Translation", ICLR).

* :func:`extract_seq2seq` — activations of the encoder (one row per source word) or of the
  teacher-forced decoder (one row per target word) into an ordinary activation store: the generic
  :func:`finegrain.extract` with ``side=`` (which takes an encoder-decoder directly); probes, rankings
  and descriptions then run on it unchanged;
* :class:`TranslationTarget` — log p(target tokens | source, target prefix) as an attribution
  target, so that :func:`finegrain.attribute.attribute` attributes a target word (or the whole
  translation) to the source words.

Addresses and hooks are those of :class:`finegrain.models.seq2seq.Seq2SeqAdapter`
(``enc.layer.3:117``, ``dec.layer.2.cross``), so interventions use
:func:`finegrain.intervene.intervene` on the adapter directly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from finegrain.attribute.targets import Scorer, Target, TargetDescription, TargetError
from finegrain.errors import ParameterError
from finegrain.extraction import SOURCE_COLUMN, extract
from finegrain.models.base import Batch, ModelAdapter
from finegrain.models.seq2seq import Seq2SeqAdapter, Seq2SeqBatch, Seq2SeqSide, word_lists
from finegrain.store import ActivationStore


def _adapter(model) -> Seq2SeqAdapter:
    if isinstance(model, Seq2SeqSide):
        return model.parent
    if not isinstance(model, Seq2SeqAdapter):
        raise ParameterError(f"an encoder-decoder adapter (load_seq2seq) is needed, got {type(model).__name__}")
    return model


def extract_seq2seq(
    model: Seq2SeqAdapter,
    corpus,
    path: str | os.PathLike,
    side: str = "encoder",
    sources: Sequence[Sequence[str]] | Sequence[str] | None = None,
    align: str = "input",
    layers: Sequence[str] | str | None = "hidden",
    **kwargs,
) -> ActivationStore:
    """Extract one side of an encoder-decoder into a store: :func:`finegrain.extract` with ``side``
    (default ``"encoder"``), ``sources`` and ``align`` (see there); kept as a name of its own for the
    translation setting. ``side="encoder"``: rows = source words of ``corpus``; ``side="decoder"``: rows =
    words of the target sentences in ``corpus``, each read teacher-forced behind its own source."""
    return extract(_adapter(model), corpus, path, layers=layers, side=side, sources=sources, align=align, **kwargs)


class TranslationTarget(Target):
    """log p(target | source) of a teacher-forced encoder-decoder, or of one target word:
    ``sum_t log p(y_t | x, y_<t)`` over the tokens of the target (every label token, end-of-sequence
    included) or, with ``word=k``, over the tokens of target word ``k`` given the source and the target
    prefix. The source words are attributed; the target is fixed (it is the decoder's input in the
    baseline as well), so an attribution says which source words the translation (of a word) rests on.

    ``target``: one target sentence (a string or a word list) for every source; or ``sources`` and
    ``targets``: parallel lists, each source's target found by the source's words (the examples given
    to :func:`finegrain.attribute.attribute` may then come in any order, but a source that occurs twice
    must have one target).
    """

    kind = "translation"

    def __init__(self, target: str | Sequence[str] | None = None, word: int | None = None, *,
                 sources: Sequence[Sequence[str]] | Sequence[str] | None = None,
                 targets: Sequence[Sequence[str]] | Sequence[str] | None = None):
        if (target is None) == (targets is None) or (targets is None) != (sources is None):
            raise ParameterError("give either target= (one target sentence) or sources= and targets= (parallel lists)")
        self.word = word
        self._one: list[str] | None = None
        self._by_source: dict[tuple[str, ...], list[str]] = {}
        if target is not None:
            self._one = word_lists([target], "target")[0]
            shown = " ".join(self._one)
        else:
            src, tgt = word_lists(sources, "sources"), word_lists(targets, "targets")
            if len(src) != len(tgt):
                raise ParameterError(f"{len(src)} sources but {len(tgt)} targets")
            for s, t in zip(src, tgt):
                if self._by_source.setdefault(tuple(s), t) != t:
                    raise ParameterError(f"the source {' '.join(s)!r} occurs twice with different targets: attribute "
                                      "them in separate calls")
            shown = "..."
        self.name = f"translation:{shown}" + (f"@word{word}" if word is not None else "")

    def _targets(self, sentences: list[list[str]]) -> list[list[str]]:
        if self._one is not None:
            return [self._one] * len(sentences)
        out = []
        for s in sentences:
            tgt = self._by_source.get(tuple(s))
            if tgt is None:
                raise TargetError(f"no target was given for the source {' '.join(s)!r}")
            out.append(tgt)
        return out

    def encode(self, adapter: ModelAdapter, sentences) -> tuple[Batch, list[int]]:
        ad = _adapter(adapter)
        src = [list(s) for s in sentences]
        batch = ad.encode(src, targets=self._targets(src), side="encoder")
        return batch, [len(s) for s in src]

    def bind(self, adapter: ModelAdapter, batch: Batch, n_prompt: list[int] | None = None) -> Scorer:
        if not isinstance(batch, Seq2SeqBatch) or batch.labels is None:
            raise TargetError("TranslationTarget needs a batch encoded with targets (its own encode())")
        labels = batch.labels
        real = batch.sides["decoder"].attention_mask.bool()
        sel = real.clone()
        if self.word is not None:
            for b, wids in enumerate(batch.label_word_ids):
                n = batch.sides["decoder"].n_words[b]
                k = self.word + n if self.word < 0 else self.word
                if not 0 <= k < n:
                    raise TargetError(f"example {b}: the target has {n} words; word {self.word} does not exist")
                sel[b] = torch.tensor([w == k for w in wids], dtype=torch.bool, device=labels.device) & real[b]
                if not bool(sel[b].any()):
                    raise TargetError(f"example {b}: target word {k} produced no tokens")
        weight = sel.float()

        def fn(output, ex_idx, inputs):
            logp = torch.log_softmax(adapter.score_fn(output).float(), -1)
            tok = logp.gather(-1, labels[ex_idx].unsqueeze(-1)).squeeze(-1)
            return (tok * weight[ex_idx]).sum(1)

        return Scorer(fn, descriptions=self._describe(adapter, batch, sel))

    def _describe(self, adapter: ModelAdapter, batch: Seq2SeqBatch, sel: torch.Tensor) -> list[TargetDescription]:
        """Per example: the scored target (sentence or word), its probability, and what the model itself
        predicts at the same positions (teacher-forced argmax)."""
        with torch.no_grad():
            logp = torch.log_softmax(adapter.score_fn(adapter.forward(batch)).float(), -1)
        labels = batch.labels
        f = (logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * sel).sum(1)
        best, arg = logp.max(-1)
        g = (best * sel).sum(1)
        tok = adapter.tokenizer
        out = []
        for b in range(len(batch)):
            pos = sel[b].nonzero().flatten().tolist()
            words = batch.sides["decoder"].n_words[b]
            label = tok.decode([int(labels[b, t]) for t in pos], skip_special_tokens=True).strip()
            pred = tok.decode([int(arg[b, t]) for t in pos], skip_special_tokens=False).strip()
            where = (f"word {self.word} of the {words}-word target" if self.word is not None
                     else "the whole target, end of sequence included")
            out.append(TargetDescription(self.kind, label, "log-probability", None, math.exp(float(f[b])), pred,
                                         math.exp(float(g[b])), f"{where}, teacher-forced"))
        return out


__all__ = ["SOURCE_COLUMN", "TranslationTarget", "extract_seq2seq"]
