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

Every bound target also says in words what it explains, per example: a :class:`TargetDescription`
(the class label from ``id2label`` / the head's classes / the adapter's ``labels``, the token or
continuation, the model's probability of it and its own prediction).
:func:`finegrain.attribute.describe_target` gives the
same description to any caller (explanations, reports) without running an attribution.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from finegrain.errors import ParameterError
from finegrain.models.base import Batch, ModelAdapter, ModelError
from finegrain.neurons import Neuron
from finegrain.results import Result


class TargetError(ModelError):
    """A target that does not fit the model or the input (class out of range, no [MASK], ...)."""


@dataclass
class TargetDescription(Result):
    """What an attribution explains, in words, for one example.

    ``category``: ``class`` | ``token-class`` | ``next-token`` | ``masked-token`` | ``continuation`` |
    ``similarity`` | ``neuron``; ``label``: the target in words (class name, token, continuation, pair
    sentence, neuron address); ``index``: class or token id; ``score``: what the explained number f is
    (``logit``, ``probability``, ``log-probability``, ...); ``probability``: the model's probability of
    ``label`` on the input (``None`` where it has none); ``predicted`` / ``predicted_probability``: the
    model's own top prediction at the same place; ``detail``: where (word, reduction, boundary).
    """

    category: str
    label: str
    score: str
    index: int | None = None
    probability: float | None = None
    predicted: str | None = None
    predicted_probability: float | None = None
    detail: str = ""

    @property
    def is_predicted(self) -> bool | None:
        """Whether the target is the model's own prediction (``None`` for targets without one)."""
        return None if self.predicted is None else self.predicted == self.label

    @property
    def text(self) -> str:
        """One line, e.g. ``class 'positive' (p=0.93, the prediction) - score: logit``."""
        what = {"class": "class", "token-class": "class", "next-token": "next token", "masked-token": "masked token",
                "continuation": "continuation", "similarity": "cosine similarity to", "neuron": "activation of"}
        head = f"{what.get(self.category, self.category)} {_quote(self.label)}"
        notes = []
        if self.probability is not None:
            notes.append(f"p={_num(self.probability)}")
        if self.predicted is not None:
            if self.is_predicted:
                notes.append("the prediction")
            else:
                pp = f", p={_num(self.predicted_probability)}" if self.predicted_probability is not None else ""
                notes.append(f"the model predicts {_quote(self.predicted)}{pp}")
        if self.detail:
            notes.append(self.detail)
        return head + (f" ({'; '.join(notes)})" if notes else "") + f" - score: {self.score}"

    def table(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def _quote(s: str) -> str:
    return repr(s) if isinstance(s, str) else str(s)


def _num(x: float) -> str:
    return f"{x:.3g}" if x is not None and math.isfinite(x) else "n/a"


def class_labels(adapter: ModelAdapter) -> list[str] | None:
    """Class names of a classifier: the trained head's (``adapter.head_info["labels"]``), the adapter's
    ``labels``, or the model config's ``id2label``; ``None`` when the model names none."""
    info = getattr(adapter, "head_info", None) or {}
    if info.get("labels"):
        return [str(x) for x in info["labels"]]
    if getattr(adapter, "labels", None):
        return [str(x) for x in adapter.labels]
    cfg = getattr(getattr(adapter, "model", None), "config", None)
    id2label = getattr(cfg, "id2label", None)
    if id2label:
        try:
            return [str(id2label[i]) for i in range(len(id2label))]
        except KeyError:
            return None
    return None


def class_name(adapter: ModelAdapter, index: int) -> str:
    labels = class_labels(adapter)
    return labels[index] if labels is not None and 0 <= index < len(labels) else str(index)


def token_text(adapter: ModelAdapter, token_id: int) -> str:
    """The text of one vocabulary id (a word piece with its leading space, a character)."""
    fn = getattr(adapter, "token_text", None)
    if callable(fn):
        return fn(int(token_id))
    tok = adapter.tokenizer
    if tok is not None:
        return tok.decode([int(token_id)])
    return str(int(token_id))


class Scorer:
    """A target bound to one batch: ``scorer(output, ex_idx, inputs) -> [rows]``; ``descriptions``
    says, per example of the batch, what the target is in words; ``positions`` (per example, or
    ``None`` for all) lists the output positions the score reads, so that a model whose predictions
    are separate computations (textgenrnn's windows) computes only those."""

    hooks: dict = {}

    def __init__(self, fn, hooks: dict | None = None, descriptions: list[TargetDescription] | None = None,
                 positions: list[list[int]] | None = None):
        self._fn = fn
        self.hooks = hooks or {}
        self.descriptions = descriptions or []
        self.positions = positions

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
    """Base class: override :meth:`bind` (and :meth:`encode` to append fixed tokens). ``bind`` returns
    a :class:`Scorer` whose ``descriptions`` name the target in words (one per example)."""

    name = "target"
    kind = "target"
    # attributes that may hold one value per example of a call (attribute -> its name in errors)
    per_example: dict[str, str] = {}

    def for_examples(self, rows: Sequence[int], n: int) -> Target:
        """This target for the examples ``rows`` of a call on ``n`` examples: a value given per example
        (a list) is checked against ``n`` and cut to ``rows``, since calls bind their examples in batches
        (sorted by length, one by one, ...) and a batch must see its own examples' values."""
        changes = {}
        for attr, what in self.per_example.items():
            value = getattr(self, attr)
            if isinstance(value, list | tuple):
                if len(value) != n:
                    raise TargetError(f"{what}: got {len(value)} values for {n} examples")
                changes[attr] = [value[i] for i in rows]
        if not changes:
            return self
        new = copy.copy(self)
        new.__dict__.update(changes)
        return new

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

    per_example = {"index": "class index"}

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
        p = torch.softmax(ref.float(), -1)
        top = p.argmax(-1)
        desc = []
        for b in range(n):
            where = ""
            if pos is not None:
                words = batch.tokens[b] if batch.tokens else None
                where = f"at word {self.word}" + (f" (token {words[int(pos[b])]!r})" if words else "")
            desc.append(TargetDescription(
                "token-class" if pos is not None else "class", class_name(adapter, int(idx[b])),
                "probability" if prob else "logit", int(idx[b]), float(p[b, idx[b]]),
                class_name(adapter, int(top[b])), float(p[b, top[b]]), where))

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output)
            if pos is not None:
                lg = lg[torch.arange(len(ex_idx), device=lg.device), pos[ex_idx]]
            if prob:
                lg = torch.softmax(lg, -1)
            return lg.gather(-1, idx[ex_idx].unsqueeze(-1)).squeeze(-1)

        return Scorer(fn, descriptions=desc, positions=None if pos is None else [[int(t)] for t in pos])


def _token_id(adapter: ModelAdapter, token: str | int) -> int:
    """Id of a single token: an id, a vocabulary item of an LSTM adapter (a character of a character
    model), or a string the tokenizer encodes to one token (with or without a leading space)."""
    lookup = getattr(adapter, "token_id", None)
    if callable(lookup):
        try:
            return int(lookup(token))
        except ModelError as e:
            raise TargetError(str(e)) from None
    if isinstance(token, int):
        return token
    tokenizer = adapter.tokenizer
    if tokenizer is None:
        raise TargetError(f"{adapter.name} has no tokenizer and no token_id(); pass the token as an id")
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
    per_example = {"token": "token"}

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
        at = logits[torch.arange(n), pos]
        if self.token is None:
            ids = _predictable(adapter, at).argmax(-1)
        else:
            vals = [_token_id(adapter, t) for t in _per_example(self.token, n, "token")]
            for v in vals:
                if not 0 <= v < vocab:
                    raise TargetError(f"token id {v} out of range: the vocabulary has {vocab} entries")
            ids = torch.tensor(vals, device=logits.device)
        prob, log = self.prob, self.log
        p = torch.softmax(at.float(), -1)
        top = _predictable(adapter, at).argmax(-1)
        score = "log-probability" if log else "probability" if prob else "logit"
        desc = [TargetDescription(self.kind, token_text(adapter, int(ids[b])), score, int(ids[b]), float(p[b, ids[b]]),
                                  token_text(adapter, int(top[b])), float(p[b, top[b]])) for b in range(n)]

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output)
            lg = lg[torch.arange(len(ex_idx), device=lg.device), pos[ex_idx]]
            if log:
                lg = torch.log_softmax(lg, -1)
            elif prob:
                lg = torch.softmax(lg, -1)
            return lg.gather(-1, ids[ex_idx].unsqueeze(-1)).squeeze(-1)

        return Scorer(fn, descriptions=desc, positions=[[int(t)] for t in pos])


def _predictable(adapter: ModelAdapter, logits: torch.Tensor) -> torch.Tensor:
    """Logits with the padding id excluded from "the prediction" of an LSTM LM (padding is never a
    target: textgenrnn's index 0)."""
    pad = getattr(adapter, "pad_index", None)
    if pad is None or getattr(adapter, "kind", "") != "lstm":
        return logits
    out = logits.clone()
    out[..., pad] = -torch.inf
    return out


class NextTokenTarget(_VocabTarget):
    """Probability (or logit / log-probability) of the next token after the last input token of a
    causal LM (a character for character LSTMs); ``token=None`` scores the token the model predicts."""

    kind = "next-token"

    @property
    def name(self):
        return f"next:{self.token if self.token is not None else 'pred'}"

    def _positions(self, adapter, batch):
        return _last_positions(batch)


class MaskedTokenTarget(_VocabTarget):
    """Probability of a token at the (first) [MASK] position of a masked LM."""

    kind = "masked-token"

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
    prompt is attributed. Every token after the prompt's last word is scored, the spaces of a character
    model included. Any adapter whose output carries next-token logits per position fits (a character
    LSTM scores a whole word character by character the same way); for character models the
    continuation must also end at a word boundary (``word_boundary``, default on for ``level="char"``
    adapters: ``+ log p(next character is a space, punctuation or the end of text)``), so that " he"
    does not also count " her" or " help".
    """

    kind = "continuation"
    per_example = {"continuation": "continuation"}

    def __init__(self, continuation: str | Sequence[str], mean: bool = False, word_boundary: bool | None = None):
        self.continuation = continuation
        self.mean = mean
        self.word_boundary = word_boundary
        self.name = f"continuation:{continuation if isinstance(continuation, str) else '...'}"

    def encode(self, adapter, sentences):
        conts = _per_example(self.continuation, len(sentences), "continuation")
        conts = [c.split() if isinstance(c, str) else list(c) for c in conts]
        if any(not c for c in conts):
            raise ParameterError("empty continuation")
        batch = adapter.encode([list(s) + c for s, c in zip(sentences, conts)])
        return batch, [len(s) for s in sentences]

    def bind(self, adapter, batch, n_prompt=None):
        if n_prompt is None:
            raise ParameterError("ContinuationTarget needs the prompt sizes returned by its encode()")
        ids = batch.inputs["input_ids"]
        special = set(getattr(adapter.tokenizer, "all_special_ids", None) or [])
        cont = torch.zeros_like(ids, dtype=torch.bool)
        texts = []
        for b, wids in enumerate(batch.word_ids):
            prompt = [t for t, w in enumerate(wids) if w is not None and w < n_prompt[b]]
            if not prompt:
                raise TargetError("the continuation cannot start at the first token (the prompt is empty)")
            for t in range(prompt[-1] + 1, len(wids)):
                if batch.attention_mask[b, t] and int(ids[b, t]) not in special:
                    cont[b, t] = True
            chosen = [t for t in range(len(wids)) if cont[b, t]]
            if adapter.tokenizer is not None:
                texts.append(adapter.tokenizer.decode([int(ids[b, t]) for t in chosen]))
            elif batch.tokens:
                texts.append("".join(batch.tokens[b][t] for t in chosen))
            else:
                texts.append(str(self.continuation))
        if cont[:, 0].any():
            raise TargetError("the continuation cannot start at the first token (the prompt is empty)")
        boundary: list[int] = []
        wb = self.word_boundary if self.word_boundary is not None else getattr(adapter, "level", None) == "char"
        if wb:
            fn_b = getattr(adapter, "word_boundary_ids", None)
            boundary = list(fn_b()) if callable(fn_b) else []
            if not boundary:
                raise TargetError(f"{adapter.name} has no word-boundary tokens; pass word_boundary=False")
        last = batch.attention_mask.long().sum(1) - 1
        mean = self.mean
        bnd = torch.tensor(boundary, dtype=torch.long, device=ids.device)
        # logits at position t - 1 predict token t: the (position, token) pairs each example scores,
        # padded with the example's last position (always read) and masked out
        pairs = [[(t - 1, int(ids[b, t])) for t in range(1, ids.shape[1]) if cont[b, t]] for b in range(len(batch))]
        K = max(len(p) for p in pairs)
        pos_idx = torch.stack([torch.tensor([q for q, _ in p] + [int(last[b])] * (K - len(p))) for b, p in
                               enumerate(pairs)]).to(ids.device)
        tok_idx = torch.stack([torch.tensor([t for _, t in p] + [0] * (K - len(p))) for p in pairs]).to(ids.device)
        valid = torch.stack([torch.arange(K) < len(p) for p in pairs]).to(ids.device)
        reads = [sorted({q for q, _ in p} | {int(last[b])}) for b, p in enumerate(pairs)]

        def fn(output, ex_idx, inputs):
            lg = _logits(adapter, output).float()
            r = torch.arange(len(ex_idx), device=lg.device)[:, None]
            logp = torch.log_softmax(lg[r, pos_idx[ex_idx]], -1)  # [rows, K, V]
            tok = logp.gather(-1, tok_idx[ex_idx].unsqueeze(-1)).squeeze(-1)
            v = valid[ex_idx]
            s = torch.where(v, tok, torch.zeros_like(tok)).sum(1)
            n_tok = v.sum(1).to(s.dtype)
            if len(bnd):
                end = torch.log_softmax(lg[r[:, 0], last[ex_idx]], -1)
                s = s + torch.logsumexp(end[:, bnd], -1)
                n_tok = n_tok + 1
            return s / n_tok if mean else s

        with torch.no_grad():
            ref = fn(adapter.forward(batch), torch.arange(len(batch), device=ids.device), batch.inputs).float()
        score = "mean log-probability per token" if mean else "log-probability"
        detail = "followed by a word boundary" if len(bnd) else ""
        desc = [TargetDescription(self.kind, texts[b], score, None, None if mean else math.exp(float(ref[b])),
                                  None, None, detail) for b in range(len(batch))]
        return Scorer(fn, descriptions=desc, positions=reads)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def _hidden(output) -> torch.Tensor:
    if hasattr(output, "last_hidden_state") and output.last_hidden_state is not None:
        return output.last_hidden_state
    if getattr(output, "hidden_states", None):
        return output.hidden_states[-1]
    raise TargetError("the similarity target needs the model's last hidden states (HF: load the model with "
                      "task='base'; textgenrnn: context='stream')")


class SimilarityTarget(Target):
    """Cosine similarity between the mean-pooled embedding of the input and of a fixed ``pair``
    sentence (MiniLM / sentence-transformers' training objective). The pair is not attributed."""

    per_example = {"pair": "pair"}

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

        desc = [TargetDescription("similarity", " ".join(p) if not isinstance(p, str) else p, "cosine similarity",
                                  detail="mean-pooled last hidden states") for p in pairs]
        return Scorer(fn, descriptions=desc)


class NeuronTarget(Target):
    """Activation of one neuron (``Neuron("layer.3", 117)`` / ``"layer.3:117"``), read through the
    adapter's hook point and reduced over tokens: ``reduce="mean"`` over real tokens, ``"sum"``,
    ``"last"`` (last real token) or an int token position. At per-step hook points (LSTMs) each step's
    value is the model's state there (for textgenrnn's windows: the state of the window ending at the
    step, the one that predicts the next character)."""

    kind = "neuron"

    def __init__(self, neuron: Neuron | str, reduce: str | int = "mean"):
        self.neuron = Neuron.parse(neuron)
        if not (reduce in ("mean", "sum", "last") or isinstance(reduce, int)):
            raise ParameterError(f"unknown reduce {reduce!r}; use mean, sum, last or a token index")
        self.reduce = reduce
        self.name = f"neuron:{self.neuron}"

    def bind(self, adapter, batch, n_prompt=None):
        size = adapter.check_layer(self.neuron.layer)
        if self.neuron.unit >= size:
            raise TargetError(f"{self.neuron} out of range: {self.neuron.layer} has {size} units")
        unit, reduce = self.neuron.unit, self.reduce
        keep_last = getattr(getattr(adapter, "model", None), "canonical_call", "first") == "last"
        store: dict = {}

        def hook(act, step):
            if step is None or keep_last or step not in store:
                store[step] = act[..., unit]

        last = _last_positions(batch)

        def fn(output, ex_idx, inputs):
            parts = dict(store)
            store.clear()
            if not parts:
                raise TargetError(f"hook point {self.neuron.layer} was not reached")
            if None in parts:
                a = parts[None]
            else:
                a = torch.stack([parts[t] for t in sorted(parts)], 1)  # [rows, T]
            if a.dim() == 1:  # a hook point with one vector per example
                return a
            mask = batch.attention_mask[ex_idx][:, : a.shape[1]].to(a.dtype)
            if reduce == "mean":
                return (a * mask).sum(1) / mask.sum(1)
            if reduce == "sum":
                return (a * mask).sum(1)
            if reduce == "last":
                return a[torch.arange(len(ex_idx), device=a.device), last[ex_idx]]
            return a[:, reduce]

        how = {"mean": "mean over tokens", "sum": "sum over tokens", "last": "at the last token"}.get(
            reduce, f"at token {reduce}")
        desc = [TargetDescription("neuron", str(self.neuron), "activation", self.neuron.unit, detail=how)] * len(batch)
        return Scorer(fn, hooks={self.neuron.layer: hook}, descriptions=desc)


def parse_target(spec: str | Target | None, adapter: ModelAdapter | None = None, pair: str | None = None) -> Target:
    """Parse a CLI target: ``pred``, ``class:1``, ``prob:1``, ``next:TOKEN``, ``masked:TOKEN``,
    ``continuation:TEXT``, ``similarity`` (with ``pair``), ``neuron:layer.3:117``."""
    if isinstance(spec, Target):
        return spec
    if spec is None:
        if pair is not None:
            return SimilarityTarget(pair)
        task = getattr(adapter, "task", "base") if adapter is not None else "base"
        if task in ("causal-lm", "lm"):
            return NextTokenTarget()
        if task == "masked-lm":
            return MaskedTokenTarget()
        return ClassTarget("pred")
    kind, _, rest = spec.partition(":")
    if kind == "pred":
        return ClassTarget("pred")
    if kind in ("class", "prob"):
        try:
            idx: int | str = int(rest) if rest and rest != "pred" else "pred"
        except ValueError:
            raise ParameterError(f"bad class index in target {spec!r}: use class:K with an integer K") from None
        return ClassTarget(idx, prob=kind == "prob")
    if kind in ("next", "masked"):
        # "next:pred" is the predicted token; a token that is itself "pred" can be passed as an id
        token = None if rest in ("", "pred") else rest
        return NextTokenTarget(token) if kind == "next" else MaskedTokenTarget(token)
    if kind == "continuation":
        if not rest.strip():
            raise ParameterError("the continuation target needs a text: continuation:TEXT")
        return ContinuationTarget(rest)
    if kind == "similarity":
        if not (rest or pair):
            raise ParameterError("the similarity target needs a pair sentence (--pair)")
        return SimilarityTarget(rest or pair)
    if kind == "neuron":
        try:
            return NeuronTarget(rest)
        except ValueError as e:
            raise ParameterError(f"bad neuron in target {spec!r}: {e}") from None
    raise ParameterError(
        f"unknown target {spec!r}; use pred, class:K, prob:K, next:TOK, masked:TOK, continuation:TEXT, "
        "similarity, neuron:LAYER:UNIT"
    )

