"""Controlling behaviour by setting concept neurons (Suau et al. 2020; Bau et al. 2019).

Suau et al. rank units by how well their response alone detects a concept (average precision of
the activation as a score for positive vs negative examples), then force the top-*k* "expert"
units to their median response on positive examples and watch the output: the probability of
concept words and generated text for LMs, the predicted label for classifiers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from finegrain.intervene.edits import Edit, Set, intervene
from finegrain.intervene.scoring import continuation_logprobs, is_hf_causal, logits_of
from finegrain.models.base import ModelAdapter, ModelError
from finegrain.neurons import Neuron, NeuronIndex


def generate(adapter: ModelAdapter, prompt: str, n_tokens: int = 20, edits: Edit | Sequence[Edit] | None = None,
             temperature: float = 0.0, seed: int = 0) -> str:
    """Generate a continuation of ``prompt`` with ``edits`` active (greedy when
    ``temperature == 0``). HF causal LMs re-run the whole sequence at each step (no KV cache), so
    position-based edits stay at their positions; adapters with their own ``generate`` (the char
    LSTM) are called inside :func:`intervene`."""
    if n_tokens < 0:
        raise ModelError("n_tokens must be >= 0")
    if not is_hf_causal(adapter):
        gen = getattr(adapter, "generate", None)
        if gen is None:
            raise ModelError(f"{adapter.name}: generation needs a causal LM or an adapter with generate()")
        with intervene(adapter, edits), torch.no_grad():
            try:
                return gen(prompt, n_tokens, temperature=temperature, seed=seed)
            except TypeError:  # an adapter whose generate() takes no sampling options
                return gen(prompt, n_tokens)
    tok = adapter.tokenizer
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(adapter.device)
    if ids.shape[1] == 0:
        ids = torch.tensor([[tok.bos_token_id]], device=adapter.device)
    n0 = ids.shape[1]
    gen_rng = torch.Generator().manual_seed(seed)
    with intervene(adapter, edits), torch.no_grad():
        for _ in range(n_tokens):
            if ids.shape[1] >= adapter.max_length:
                break
            logits = logits_of(adapter, adapter.model(input_ids=ids))[0, -1].float()
            if temperature > 0:
                p = torch.softmax(logits / temperature, -1).cpu()
                nxt = torch.multinomial(p, 1, generator=gen_rng).to(ids.device)
            else:
                nxt = logits.argmax()[None]
            ids = torch.cat([ids, nxt[None]], 1)
    return tok.decode(ids[0, n0:])


def average_precision(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Average precision of each column of ``X`` as a score for the binary labels ``y``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        raise ModelError("expert units need both positive and negative examples")
    order = np.argsort(-X, axis=0, kind="stable")
    hits = y[order]
    tp = np.cumsum(hits, 0)
    prec = tp / np.arange(1, len(y) + 1)[:, None]
    return (prec * hits).sum(0) / y.sum()


@dataclass
class ExpertUnits:
    """Top-k expert units of a concept with their AP and median response on positives."""

    neurons: list[Neuron]
    ap: list[float]
    values: list[float]

    def edit(self, positions=None) -> Set:
        """The Suau et al. intervention: force each unit to its median positive response."""
        return Set(list(self.neurons), np.asarray(self.values, dtype=np.float32), positions=positions)


def expert_units(X: np.ndarray, positive, index: NeuronIndex | Sequence, k: int = 10) -> ExpertUnits:
    """Suau et al. 2020: rank units by average precision for the concept (``positive``: bool per
    row) and return the top ``k`` with their median activation on positive rows."""
    X = np.asarray(X, dtype=np.float32)
    positive = np.asarray(positive).astype(bool)
    if X.shape[0] != len(positive):
        raise ModelError(f"{X.shape[0]} activation rows but {len(positive)} labels")
    neurons = index.neurons() if isinstance(index, NeuronIndex) else [Neuron.parse(n) for n in index]
    if len(neurons) != X.shape[1]:
        raise ModelError(f"{X.shape[1]} columns but {len(neurons)} neuron addresses")
    ap = average_precision(X, positive)
    top = np.argsort(-ap, kind="stable")[: int(k)]
    med = np.median(X[positive][:, top], axis=0)
    return ExpertUnits([neurons[i] for i in top], [float(ap[i]) for i in top], [float(m) for m in med])


def expert_units_from_store(store, column: str, positive: str, layers=None, k: int = 10,
                            rows=None) -> ExpertUnits:
    """Expert units for ``column == positive`` in an :class:`ActivationStore`."""
    X, index = store.matrix(layers, rows=rows, return_index=True)
    labels = store.labels(column)
    if rows is not None:
        labels = labels[rows]
    return expert_units(X, labels == positive, index, k)


@dataclass
class ControlResult:
    """Output before/after forcing the expert units on."""

    neurons: list[str]
    values: list[float]
    concept_logprob_before: list[float] = field(default_factory=list)
    concept_logprob_after: list[float] = field(default_factory=list)
    generations_before: list[str] = field(default_factory=list)
    generations_after: list[str] = field(default_factory=list)
    label_dist_before: list[float] = field(default_factory=list)
    label_dist_after: list[float] = field(default_factory=list)
    predictions_before: list[int] = field(default_factory=list)
    predictions_after: list[int] = field(default_factory=list)

    @property
    def concept_logprob_gain(self) -> float:
        if not self.concept_logprob_before:
            return float("nan")
        return float(np.mean(self.concept_logprob_after) - np.mean(self.concept_logprob_before))

    @property
    def flip_rate(self) -> float:
        if not self.predictions_before:
            return float("nan")
        return float(np.mean(np.array(self.predictions_before) != np.array(self.predictions_after)))

    def to_json(self, path=None) -> str:
        d = asdict(self)
        d["concept_logprob_gain"] = self.concept_logprob_gain
        d["flip_rate"] = self.flip_rate
        text = json.dumps(d, indent=2)
        if path is not None:
            with open(os.fspath(path), "w") as f:
                f.write(text)
        return text


def _predict(adapter: ModelAdapter, texts: Sequence[str]) -> np.ndarray:
    batch = adapter.encode([t.split() if isinstance(t, str) else list(t) for t in texts])
    with torch.no_grad():
        logits = logits_of(adapter, adapter.forward(batch))
    if logits.dim() != 2:
        raise ModelError("label control needs sequence-level logits [batch, classes]")
    return torch.softmax(logits.float(), -1).cpu().numpy()


def expert_units_control(
    adapter: ModelAdapter,
    experts: ExpertUnits | Edit | Sequence[Edit],
    prompts: Sequence[str] = (),
    concept_words: Sequence[str] = (),
    texts: Sequence[str] = (),
    n_tokens: int = 20,
    positions=None,
) -> ControlResult:
    """Force expert units on and measure the change (Suau et al. 2020).

    For LMs: log-probability of each concept word (its mean over ``prompts``) and greedy
    generations from ``prompts``; for classifiers: the predicted-label distribution over ``texts``.
    ``experts`` is an :class:`ExpertUnits` (set to their median positive response) or any edits.
    """
    if isinstance(experts, ExpertUnits):
        edits: list[Edit] = [experts.edit(positions)]
        res = ControlResult([str(n) for n in experts.neurons], list(experts.values))
    else:
        edits = [experts] if isinstance(experts, Edit) else list(experts)
        res = ControlResult([], [])
    if concept_words and prompts:
        pre = [p for p in prompts for _ in concept_words]
        cont = [w for _ in prompts for w in concept_words]
        before = continuation_logprobs(adapter, pre, cont).reshape(len(prompts), -1).mean(0)
        with intervene(adapter, edits):
            after = continuation_logprobs(adapter, pre, cont).reshape(len(prompts), -1).mean(0)
        res.concept_logprob_before, res.concept_logprob_after = before.tolist(), after.tolist()
    if prompts and n_tokens:
        res.generations_before = [generate(adapter, p, n_tokens) for p in prompts]
        res.generations_after = [generate(adapter, p, n_tokens, edits=edits) for p in prompts]
    if texts:
        pb = _predict(adapter, texts)
        with intervene(adapter, edits):
            pa = _predict(adapter, texts)
        res.predictions_before = pb.argmax(1).tolist()
        res.predictions_after = pa.argmax(1).tolist()
        nc = pb.shape[1]
        res.label_dist_before = np.bincount(pb.argmax(1), minlength=nc).astype(float).tolist()
        res.label_dist_after = np.bincount(pa.argmax(1), minlength=nc).astype(float).tolist()
    return res
