"""The forward function every attribution method runs: target(model(input embeddings)) per row.

``prepare`` encodes a group of texts, binds the target, builds the token baseline (content tokens
replaced by the baseline token, special tokens, padding and non-attributable tokens kept) and returns
a :class:`Prepared` whose ``forward`` is what Captum calls:
``forward(embeds [rows, T, D], ex_idx [rows], *inputs) -> [rows]``. Every per-example tensor is
passed as an additional forward argument, so Captum expands it consistently with its own row
layout (steps x examples, perturbations x examples); ``ex_idx`` tells the target which example each
row is. The forward counts rows per example (``n_evaluations``).

The embeddings are the input vectors of exactly the positions the model reads, once: transformers
take them as ``inputs_embeds``; LSTM adapters through ``forward_embeds`` (textgenrnn builds its
40-character windows from them, so a character's vector is the same variable in every window that
reads it); any other adapter either implements ``forward_embeds(batch, embeds)`` or has its embedding
module's single output swapped, which is checked (one call, the expected shape).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from finegrain.attribute.targets import Scorer, Target, TargetDescription, parse_target
from finegrain.errors import ParameterError
from finegrain.models.base import Batch, ModelAdapter, ModelError, eval_mode
from finegrain.models.hf import HFAdapter
from finegrain.results import Result, ResultList

#: the stated completeness criterion: |delta| <= DELTA_TOLERANCE * |f(x) - f(x')| (+ DELTA_ATOL)
DELTA_TOLERANCE = 0.01
#: absolute floor of the criterion (float32 rounding), for gaps near zero
DELTA_ATOL = 1e-6

BASELINES = ("pad", "zero", "unk", "mask", "space")


class AttributionError(ModelError):
    """A method, layer or neuron that does not fit the model (e.g. a unit out of range)."""


class CompletenessWarning(UserWarning):
    """Attribution scores that do not add up to the change of the target they explain."""


def as_word_lists(texts: str | Sequence[str] | Sequence[Sequence[str]]) -> tuple[list[list[str]], bool]:
    """``(word lists, single)``: a single string is one text."""
    if isinstance(texts, str):
        out, single = [texts.split()], True
    else:
        out, single = [t.split() if isinstance(t, str) else list(t) for t in texts], False
    if not out or any(not w for w in out):
        raise ParameterError("attribution needs at least one non-empty text")
    return out, single


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


def baseline_token_id(adapter: ModelAdapter, baseline: str | int) -> int | None:
    """Token id for removed content tokens, or ``None`` for ``"zero"`` (a zero embedding vector).

    ``"pad"`` (default): the tokenizer's pad token, or an LSTM adapter's padding index (for textgenrnn
    index 0, the symbol of the 39-step empty context that precedes every text in training: the model's
    own "no character here"; for an ``nn.Embedding(padding_idx=...)`` a zero vector); ``"unk"``,
    ``"mask"``; ``"space"`` (character models); ``"zero"``; or an id.
    """
    if isinstance(baseline, bool) or not isinstance(baseline, int | str):
        raise ParameterError(f"baseline must be one of {', '.join(BASELINES)} or a token id, got {baseline!r}")
    if isinstance(baseline, int):
        return baseline
    if baseline.lstrip("-").isdigit():
        return int(baseline)
    if baseline not in BASELINES:
        raise ParameterError(f"unknown baseline {baseline!r}; use {', '.join(BASELINES)} or a token id")
    if baseline == "zero":
        return None
    if baseline == "space":
        lookup = getattr(adapter, "token_id", None)
        try:
            if callable(lookup):
                return int(lookup(" "))
            ids = adapter.tokenizer.encode(" ", add_special_tokens=False) if adapter.tokenizer is not None else []
        except ModelError:
            ids = []
        if len(ids) != 1:
            raise ParameterError(f"{adapter.name} has no single space token; use pad, zero or an id")
        return int(ids[0])
    tok = adapter.tokenizer
    tid = getattr(tok, f"{baseline}_token_id", None) if tok is not None else None
    if tid is None:
        fallback = getattr(adapter, f"{baseline}_id", None)
        if fallback is not None:
            return int(fallback)
        raise ParameterError(f"{adapter.name} has no {baseline!r} token; use baseline='zero' or pass a token id")
    return int(tid)


def _is_hf(adapter: ModelAdapter) -> bool:
    return isinstance(adapter, HFAdapter)


def _swap_forward(adapter: ModelAdapter, batch: Batch, embeds: torch.Tensor):
    """Any other adapter: run it on the ids and swap the embedding module's output. Valid only when
    the model embeds the ids once, as ``[rows, T, D]``; anything else (windows, several calls) would
    differentiate another function, so it is refused."""
    calls = []

    def swap(module, args, output):
        calls.append(tuple(output.shape))
        return embeds if len(calls) == 1 and tuple(output.shape) == tuple(embeds.shape) else output

    h = embedding_module(adapter).register_forward_hook(swap)
    try:
        out = adapter.forward(batch)
    finally:
        h.remove()
    if calls != [tuple(embeds.shape)]:
        raise AttributionError(
            f"{adapter.name}: the embedding module was called {len(calls)} time(s) with outputs {calls[:3]}, not "
            f"once with {tuple(embeds.shape)}; implement forward_embeds(batch, embeds) on the adapter so that "
            "attribution differentiates the model's real forward"
        )
    return out


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
    baseline: str = "pad"
    target_name: str = ""

    @property
    def n(self) -> int:
        return len(self.batch)

    def args(self, idx: Sequence[int] | None = None) -> tuple:
        """Additional forward args ``(ex_idx, *inputs)`` for examples ``idx`` (default all)."""
        dev = self.embeds.device
        ex = torch.arange(self.n, device=dev) if idx is None else torch.as_tensor(list(idx), device=dev)
        return (ex, *[self.batch.inputs[k][ex] for k in self.keys])

    def model_output(self, embeds: torch.Tensor, ex_idx: torch.Tensor, inputs: dict):
        adapter = self.adapter
        if _is_hf(adapter):
            return adapter.model(inputs_embeds=embeds, **inputs)
        rows = ex_idx.tolist()
        ids = inputs.get("input_ids", self.batch.inputs["input_ids"][ex_idx])
        sub = Batch({**inputs, "input_ids": ids}, [self.batch.word_ids[r] for r in rows],
                    [self.batch.n_words[r] for r in rows],
                    inputs.get("attention_mask", self.batch.attention_mask[ex_idx]))
        fwd = getattr(adapter, "forward_embeds", None)
        if callable(fwd):
            need = self.scorer.positions
            if need is not None and "positions" in inspect.signature(fwd).parameters:
                # only the predictions the target reads (textgenrnn: one 40-step window each)
                return fwd(sub, embeds, positions=sorted({p for r in rows for p in need[r]}))
            return fwd(sub, embeds)
        return _swap_forward(adapter, sub, embeds)

    def forward(self, embeds: torch.Tensor, ex_idx: torch.Tensor, *vals: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.keys, vals))
        if self.counting:
            np.add.at(self.counts, ex_idx.detach().cpu().numpy(), 1)
        with self.adapter.hooks(self.scorer.hooks):
            out = self.model_output(embeds, ex_idx, inputs)
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

    def length(self, b: int) -> int:
        return int(self.batch.attention_mask[b].sum())

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

    def token_word_ids(self, b: int) -> list[int | None]:
        """Word of each real token of example ``b`` (``None``: special tokens, spaces, padding)."""
        return [w if self.attributable[b, t] else None for t, w in enumerate(self.batch.word_ids[b][: self.length(b)])]

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
        T = self.length(b)
        toks = self.batch.tokens[b] if self.batch.tokens else [str(i) for i in
                                                               self.batch.inputs["input_ids"][b].tolist()]
        return list(toks[:T])

    def description(self, b: int):
        d = self.scorer.descriptions
        return d[b] if b < len(d) else None


def prepare(
    adapter: ModelAdapter,
    words: list[list[str]],
    target: Target,
    baseline: str | int = "pad",
    rows: Sequence[int] | None = None,
) -> Prepared:
    """Encode ``words`` (those at ``rows`` of them, when given: the batch of a call on all of ``words``,
    whose per-example target values are cut to the batch), bind ``target`` and build the token baseline
    (see :func:`baseline_token_id`)."""
    if not isinstance(target, Target):
        raise ParameterError(f"target must be a finegrain Target, got {type(target).__name__}")
    if rows is not None:
        target = target.for_examples(rows, len(words))
        words = [words[i] for i in rows]
    base_id = baseline_token_id(adapter, baseline)
    batch, n_prompt = target.encode(adapter, words)
    scorer = target.bind(adapter, batch, n_prompt=n_prompt)
    ids = batch.inputs["input_ids"]
    special = set(getattr(adapter.tokenizer, "all_special_ids", None) or [])
    att = torch.zeros_like(ids, dtype=torch.bool)
    for b, wids in enumerate(batch.word_ids):
        for t, w in enumerate(wids):
            if w is not None and w < n_prompt[b] and int(ids[b, t]) not in special and batch.attention_mask[b, t]:
                att[b, t] = True
    emb = embedding_module(adapter)
    rows = getattr(emb, "num_embeddings", None)
    if base_id is not None and rows is not None and not 0 <= base_id < rows:
        raise ParameterError(f"baseline token id {base_id} is outside the vocabulary of {adapter.name} ({rows} ids)")
    base_ids = torch.where(att, torch.full_like(ids, 0 if base_id is None else base_id), ids)
    with torch.no_grad():
        embeds = emb(ids).detach()
        base_embeds = emb(base_ids).detach()
        if base_id is None:
            base_embeds = torch.where(att.unsqueeze(-1), torch.zeros_like(base_embeds), base_embeds)
    keys = [k for k in batch.inputs if torch.is_tensor(batch.inputs[k]) and (k != "input_ids" or not _is_hf(adapter))]
    p = Prepared(adapter, batch, [list(w[: n_prompt[i]]) for i, w in enumerate(words)], scorer, att, embeds,
                 base_embeds, base_ids, keys, baseline=str(baseline), target_name=str(target))
    p.counts = np.zeros(len(batch), dtype=np.int64)
    return p


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Captum's sampling methods (SHAP, Shapley sampling, noise) draw from torch's and numpy's global
    generators; fork both for the block, seeded, so results are reproducible and the caller's global
    random streams are left exactly as they were."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        np.random.set_state(np.random.RandomState(int(seed) % 2**32).get_state())
        try:
            yield
        finally:
            np.random.set_state(state)


def each_example(adapter: ModelAdapter, texts, target, baseline: str | int = "pad",
                 progress: bool | None = None, desc: str = "") -> Iterator[Prepared]:
    """The per-example loop of the game-theoretic and metric functions: parse the target, freeze the
    model (handed back as it was), and yield one :class:`Prepared` per text, in order."""
    words, _ = as_word_lists(texts)
    target = parse_target(target, adapter)
    with eval_mode(adapter.model, freeze=True):
        for i in tqdm(range(len(words)), desc=desc, leave=False,
                      disable=True if progress is False or len(words) < 2 else None):
            yield prepare(adapter, words, target, baseline, rows=[i])


def is_complete(delta: float | None, gap: float, tolerance: float = DELTA_TOLERANCE,
                atol: float = DELTA_ATOL) -> bool | None:
    """The stated completeness criterion ``|delta| <= tolerance * |gap| + atol`` (``None`` without a
    delta)."""
    if delta is None or not np.isfinite(delta):
        return None if delta is None else False
    return bool(abs(delta) <= tolerance * abs(gap) + atol)


def warn_incomplete(rows: Sequence[tuple[str, float | None, float, float]], what: str = "attribution") -> None:
    """One :class:`CompletenessWarning` for the ``(method, delta, gap, tolerance)`` rows that fail the
    criterion of :func:`is_complete`."""
    bad = [r for r in rows if is_complete(r[1], r[2], r[3]) is False]
    if not bad:
        return
    method, delta, gap, tol = max(bad, key=lambda r: abs(r[1]) / max(abs(r[2]), 1e-12))
    warnings.warn(
        f"{len(bad)} of {len(rows)} {what} result(s) are not complete: |delta| exceeds {tol:.0%} of "
        f"|f(x) - f(x')| (worst: {method} delta {delta:.4g} on a gap of {gap:.4g}); their scores do not add up "
        "to the change they explain",
        CompletenessWarning, stacklevel=3,
    )


class CheckedResult(Result):
    """Base of the attribution results that carry a completeness check: their dict adds
    ``complete`` (the verdict of :func:`is_complete`), and ``_arrays`` / target descriptions are
    decoded back from JSON."""

    _arrays: ClassVar[dict[str, object]] = {}

    @property
    def gap(self):
        """``f(x) - f(x')``: the change of the target that the scores explain."""
        return float(self.f_x - self.f_baseline)

    @property
    def complete(self):
        """Whether the scores add up to :attr:`gap` within ``delta_tolerance`` (:func:`is_complete`)."""
        return is_complete(self.delta, self.gap, self.delta_tolerance)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["complete"] = self.complete
        return d

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = dict(d)
        for k, dtype in cls._arrays.items():
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=dtype)
        if isinstance(d.get("description"), dict):
            d["description"] = TargetDescription.from_dict(d["description"])
        if isinstance(d.get("descriptions"), list):
            d["descriptions"] = [TargetDescription.from_dict(x) if isinstance(x, dict) else x
                                 for x in d["descriptions"]]
        return d


class AggregateList(ResultList):
    """A ``ResultList`` (one result per input, list in -> list out) that also offers the dataset-level
    numbers over its items (averages, stacked arrays) and draws them; it saves under its own type name,
    so that ``result_from_json`` rebuilds it with them."""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "type": type(self).__name__}

    def has_plot(self) -> bool:
        return type(self).plot is not Result.plot

    def _repr_html_(self) -> str:
        return Result._repr_html_(self)


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights (summing to 1) of the ``n``-point Gauss-Legendre rule, as Captum's
    ``gausslegendre`` integrates IG."""
    if n < 1:
        raise ParameterError(f"n_steps must be >= 1, got {n}")
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1), 0.5 * w



def describe_target(adapter: ModelAdapter, texts, target: Target | str | None = None):
    """What ``target`` (default: the model's prediction) is on ``texts``, in words, with the model's
    probabilities: one :class:`~finegrain.attribute.targets.TargetDescription` for a string, a
    ``ResultList`` for a list. The same descriptions as those carried by attribution results, for
    explanations and reports."""
    words, single = as_word_lists(texts)
    target = parse_target(target, adapter)
    with torch.no_grad():
        batch, n_prompt = target.encode(adapter, words)
        scorer = target.bind(adapter, batch, n_prompt=n_prompt)
    desc = scorer.descriptions or [TargetDescription(getattr(target, "kind", "target"), str(target), "score")
                                   for _ in words]
    return desc[0] if single else ResultList(desc)
