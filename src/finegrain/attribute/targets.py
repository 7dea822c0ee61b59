"""Targets: the scalar function of the model that an attribution explains.

A :class:`Target` turns a model output into one number per example. It is *bound* to an encoded
batch (``bind``), which returns a :class:`Scorer`: a callable ``scorer(output, ex_idx, inputs)`` that
maps the output of a forward pass over *rows* (Captum expands every example into many rows: IG
steps, perturbations) to a ``[rows]`` tensor. ``ex_idx[r]`` says which example of the bound batch row
``r`` belongs to, so per-example information (class index, token position, continuation ids, the
reference embedding of a similarity pair) is looked up by index and never has to be re-expanded.

A scorer may also carry ``hooks`` ({layer: fn}) that are active during the forward pass (the
neuron-activation target reads its neuron through the adapter's hook points).

Targets that need extra tokens (a continuation whose log-probability is scored) override
``encode``: the prompt words are attributable, the appended words are kept fixed in the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from finegrain.models.base import Batch, ModelAdapter, ModelError
from finegrain.neurons import Neuron


class TargetError(ModelError):
    """A target that does not fit the model or the input (class out of range, no [MASK], ...)."""


class Scorer:
    """A target bound to one batch: ``scorer(output, ex_idx, inputs) -> [rows]``."""

    hooks: dict = {}

    def __init__(self, fn, hooks: dict | None = None):
        self._fn = fn
        self.hooks = hooks or {}

    def __call__(self, output, ex_idx: torch.Tensor, inputs: dict) -> torch.Tensor:
        return self._fn(output, ex_idx, inputs)


def _per_example(value, n: int, what: str) -> list:
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise TargetError(f"{what}: got {len(value)} values for {n} examples")
        return list(value)
    return [value] * n


def _last_positions(batch: Batch) -> torch.Tensor:
    return batch.attention_mask.long().sum(1) - 1


class Target:
    """Base class: override :meth:`bind` (and :meth:`encode` to append fixed tokens)."""

    name = "target"

    def encode(self, adapter: ModelAdapter, sentences: Sequence[Sequence[str]]) -> tuple[Batch, list[int]]:
        """``(batch, n_prompt_words)``; words at index >= n_prompt_words are not attributed."""
        return adapter.encode([list(s) for s in sentences]), [len(s) for s in sentences]

    def bind(self, adapter: ModelAdapter, batch: Batch, n_prompt: list[int] | None = None) -> Scorer:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


def _logits(adapter: ModelAdapter, output) -> torch.Tensor:
    return adapter.score_fn(output)


@torch.no_grad()
def _reference_logits(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    return _logits(adapter, adapter.forward(batch)).float()


class ClassTarget(Target):
    """Logit (or probability) of a class: sequence classification ``[B, C]`` or token
    classification ``[B, T, C]`` (then ``word`` picks the word whose first token is scored).

    ``index`` is an int, a list (one per example) or ``"pred"`` (the class predicted on the input).
    """

    def __init__(self, index: int | Sequence[int] | str = "pred", prob: bool = False, word: int | None = None):
        self.index = index
        self.prob = prob
        self.word = word
        self.name = f"class:{index}" + (":prob" if prob else "") + (f"@word{word}" if word is not None else "")

    def bind(self, adapter, batch, n_prompt=None):
        logits = _reference_logits(adapter, batch)
        n = len(batch)
        pos = None
        if logits.dim() == 3:
            if self.word is None:
                raise TargetError(
                    "the model outputs one prediction per token (token classification or LM); "
                    "pass word=<index> to ClassTarget, or use NextTokenTarget / MaskedTokenTarget"
                )
            pos = []
            for b in range(n):
                toks = [t for t, w in enumerate(batch.word_ids[b]) if w == self.word]
                if not toks:
                    raise TargetError(f"example {b} has no word {self.word} (it has {batch.n_words[b]} words)")
                pos.append(toks[0])
            pos = torch.tensor(pos, device=logits.device)
            ref = logits[torch.arange(n), pos]
        elif logits.dim() == 2:
            ref = logits
        else:
            raise TargetError(f"cannot read class scores from an output of shape {tuple(logits.shape)}")
        n_classes = ref.shape[-1]
        if self.index == "pred":
            idx = ref.argmax(-1)
        else:
            vals = _per_example(self.index, n, "class index")
            for v in vals:
                if not isinstance(v, int) or not 0 <= v < n_classes:
                    raise TargetError(f"class index {v!r} out of range: the model has {n_classes} classes")
            idx = torch.tensor(vals, device=logits.device)
        prob = self.prob

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output)
            if pos is not None:
                lg = lg[torch.arange(len(ex_idx), device=lg.device), pos[ex_idx]]
            if prob:
                lg = torch.softmax(lg, -1)
            return lg.gather(-1, idx[ex_idx].unsqueeze(-1)).squeeze(-1)

        return Scorer(fn)


def _token_id(tokenizer, token: str | int) -> int:
    if isinstance(token, int):
        return token
    for cand in (token, " " + token):
        ids = tokenizer.encode(cand, add_special_tokens=False)
        if len(ids) == 1:
            return ids[0]
    raise TargetError(
        f"{token!r} is not a single token of this tokenizer (it encodes to "
        f"{tokenizer.convert_ids_to_tokens(tokenizer.encode(token, add_special_tokens=False))}); "
        "use ContinuationTarget for multi-token strings"
    )


class _VocabTarget(Target):
    def __init__(self, token: str | int | None = None, prob: bool = True, log: bool = False):
        self.token = token
        self.prob = prob
        self.log = log

    def _positions(self, adapter, batch) -> torch.Tensor:
        raise NotImplementedError

    def bind(self, adapter, batch, n_prompt=None):
        pos = self._positions(adapter, batch)
        logits = _reference_logits(adapter, batch)
        if logits.dim() != 3:
            raise TargetError(f"{self.name} needs per-token vocabulary logits, got shape {tuple(logits.shape)}")
        n = len(batch)
        vocab = logits.shape[-1]
        if self.token is None:
            ids = logits[torch.arange(n), pos].argmax(-1)
        else:
            vals = [_token_id(adapter.tokenizer, t) for t in _per_example(self.token, n, "token")]
            for v in vals:
                if not 0 <= v < vocab:
                    raise TargetError(f"token id {v} out of range: the vocabulary has {vocab} entries")
            ids = torch.tensor(vals, device=logits.device)
        prob, log = self.prob, self.log

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output)
            lg = lg[torch.arange(len(ex_idx), device=lg.device), pos[ex_idx]]
            if log:
                lg = torch.log_softmax(lg, -1)
            elif prob:
                lg = torch.softmax(lg, -1)
            return lg.gather(-1, ids[ex_idx].unsqueeze(-1)).squeeze(-1)

        return Scorer(fn)


class NextTokenTarget(_VocabTarget):
    """Probability (or logit / log-probability) of the next token after the last input token of a
    causal LM; ``token=None`` scores the token the model predicts."""

    @property
    def name(self):
        return f"next:{self.token if self.token is not None else 'pred'}"

    def _positions(self, adapter, batch):
        return _last_positions(batch)


class MaskedTokenTarget(_VocabTarget):
    """Probability of a token at the (first) [MASK] position of a masked LM."""

    @property
    def name(self):
        return f"masked:{self.token if self.token is not None else 'pred'}"

    def _positions(self, adapter, batch):
        mask_id = getattr(adapter.tokenizer, "mask_token_id", None)
        if mask_id is None:
            raise TargetError(f"{adapter.name}'s tokenizer has no mask token")
        ids = batch.inputs["input_ids"]
        pos = []
        for b in range(len(batch)):
            hits = (ids[b] == mask_id).nonzero()
            if len(hits) == 0:
                raise TargetError(f"example {b} contains no {adapter.tokenizer.mask_token} token")
            pos.append(int(hits[0, 0]))
        return torch.tensor(pos, device=ids.device)


class ContinuationTarget(Target):
    """Log-probability of a continuation (``sum_t log p(c_t | prompt, c_<t)``) under a causal LM.

    The continuation's words are appended to each prompt and kept fixed in baselines, so only the
    prompt is attributed. Any adapter whose output carries next-token logits per position fits (a
    character LSTM scores a whole word character by character the same way).
    """

    def __init__(self, continuation: str | Sequence[str], mean: bool = False):
        self.continuation = continuation
        self.mean = mean
        self.name = f"continuation:{continuation if isinstance(continuation, str) else '...'}"

    def encode(self, adapter, sentences):
        conts = _per_example(self.continuation, len(sentences), "continuation")
        conts = [c.split() if isinstance(c, str) else list(c) for c in conts]
        if any(not c for c in conts):
            raise TargetError("empty continuation")
        batch = adapter.encode([list(s) + c for s, c in zip(sentences, conts)])
        return batch, [len(s) for s in sentences]

    def bind(self, adapter, batch, n_prompt=None):
        if n_prompt is None:
            raise TargetError("ContinuationTarget needs the prompt sizes returned by its encode()")
        ids = batch.inputs["input_ids"]
        cont = torch.zeros_like(ids, dtype=torch.bool)
        for b, wids in enumerate(batch.word_ids):
            for t, w in enumerate(wids):
                if w is not None and w >= n_prompt[b]:
                    cont[b, t] = True
        if cont[:, 0].any():
            raise TargetError("the continuation cannot start at the first token (the prompt is empty)")
        mean = self.mean

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output)
            logp = torch.log_softmax(lg[:, :-1].float(), -1)
            nxt = ids[ex_idx][:, 1:]
            tok = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
            m = cont[ex_idx][:, 1:].to(tok.dtype)
            s = (tok * m).sum(1)
            return s / m.sum(1) if mean else s

        return Scorer(fn)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def _hidden(output) -> torch.Tensor:
    if hasattr(output, "last_hidden_state") and output.last_hidden_state is not None:
        return output.last_hidden_state
    if getattr(output, "hidden_states", None):
        return output.hidden_states[-1]
    raise TargetError("the similarity target needs last_hidden_state (load the model with task='base')")


class SimilarityTarget(Target):
    """Cosine similarity between the mean-pooled embedding of the input and of a fixed ``pair``
    sentence (MiniLM / sentence-transformers' training objective). The pair is not attributed."""

    def __init__(self, pair: str | Sequence[str]):
        self.pair = pair
        self.name = "similarity"

    def bind(self, adapter, batch, n_prompt=None):
        pairs = _per_example(self.pair, len(batch), "pair")
        pb = adapter.encode([p.split() if isinstance(p, str) else list(p) for p in pairs])
        with torch.no_grad():
            ref = _mean_pool(_hidden(adapter.forward(pb)).float(), pb.attention_mask)

        def fn(output, ex_idx, inputs):
            mask = inputs.get("attention_mask", batch.attention_mask[ex_idx])
            emb = _mean_pool(_hidden(output).float(), mask)
            return torch.nn.functional.cosine_similarity(emb, ref[ex_idx], dim=-1)

        return Scorer(fn)


class NeuronTarget(Target):
    """Activation of one neuron (``Neuron("layer.3", 117)`` / ``"layer.3:117"``), read through the
    adapter's hook point and reduced over tokens: ``reduce="mean"`` over real tokens, ``"sum"``,
    ``"last"`` (last real token) or an int token position."""

    def __init__(self, neuron: Neuron | str, reduce: str | int = "mean"):
        self.neuron = Neuron.parse(neuron)
        self.reduce = reduce
        self.name = f"neuron:{self.neuron}"

    def bind(self, adapter, batch, n_prompt=None):
        size = adapter.check_layer(self.neuron.layer)
        if self.neuron.unit >= size:
            raise TargetError(f"{self.neuron} out of range: {self.neuron.layer} has {size} units")
        unit, reduce = self.neuron.unit, self.reduce
        store: list[torch.Tensor] = []

        def hook(act, step):
            store.append(act[..., unit])

        last = _last_positions(batch)

        def fn(output, ex_idx, inputs):
            parts = list(store)
            store.clear()
            if not parts:
                raise TargetError(f"hook point {self.neuron.layer} was not reached")
            a = torch.stack(parts, 1) if parts[0].dim() == 1 else parts[-1]  # [rows, T]
            mask = batch.attention_mask[ex_idx].to(a.dtype)
            if reduce == "mean":
                return (a * mask).sum(1) / mask.sum(1)
            if reduce == "sum":
                return (a * mask).sum(1)
            if reduce == "last":
                return a[torch.arange(len(ex_idx), device=a.device), last[ex_idx]]
            if isinstance(reduce, int):
                return a[:, reduce]
            raise TargetError(f"unknown reduce {reduce!r}; use mean, sum, last or a token index")

        return Scorer(fn, hooks={self.neuron.layer: hook})


def parse_target(spec: str | Target | None, adapter: ModelAdapter | None = None, pair: str | None = None) -> Target:
    """Parse a CLI target: ``pred``, ``class:1``, ``prob:1``, ``next:TOKEN``, ``masked:TOKEN``,
    ``continuation:TEXT``, ``similarity`` (with ``pair``), ``neuron:layer.3:117``."""
    if isinstance(spec, Target):
        return spec
    if spec is None:
        if pair is not None:
            return SimilarityTarget(pair)
        task = getattr(adapter, "task", "base") if adapter is not None else "base"
        if task == "causal-lm":
            return NextTokenTarget()
        if task == "masked-lm":
            return MaskedTokenTarget()
        return ClassTarget("pred")
    kind, _, rest = spec.partition(":")
    if kind == "pred":
        return ClassTarget("pred")
    if kind in ("class", "prob"):
        try:
            idx: int | str = int(rest) if rest else "pred"
        except ValueError:
            raise TargetError(f"bad class index in {spec!r}") from None
        return ClassTarget(idx, prob=kind == "prob")
    if kind == "next":
        return NextTokenTarget(rest or None)
    if kind == "masked":
        return MaskedTokenTarget(rest or None)
    if kind == "continuation":
        return ContinuationTarget(rest)
    if kind == "similarity":
        if not (rest or pair):
            raise TargetError("the similarity target needs a pair sentence (--pair)")
        return SimilarityTarget(rest or pair)
    if kind == "neuron":
        return NeuronTarget(rest)
    raise TargetError(
        f"unknown target {spec!r}; use pred, class:K, prob:K, next:TOK, masked:TOK, continuation:TEXT, "
        "similarity, neuron:LAYER:UNIT"
    )
