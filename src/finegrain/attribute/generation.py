"""Attribution of a generated continuation, as inseq does it (Sarti et al. 2023, "Inseq: An
Interpretability Toolkit for Sequence Generation Models", ACL demo track).

:func:`generate_greedy` decodes greedily with the model's cache: ``past_key_values`` for transformers
decoders and encoder-decoders, the carried ``(h, c)`` for LSTM language models and textgenrnn's stream
mode (:meth:`finegrain.models.lstm.LSTMAdapter.generate_tokens`). textgenrnn's window mode has no
incremental state (each prediction starts a fresh LSTM at the start of its own 40-character window),
so each token runs exactly one 40-step window: linear in the number of tokens, never in the length of
the text. ``cache=False`` recomputes every step from all tokens; the tokens are the same.

:func:`attribute_generation` then attributes each generated token to the prompt and to the tokens
generated before it, with any method of :data:`~finegrain.attribute.methods.METHODS`. Step ``t``'s
target is inseq's: the score of the token actually generated at step ``t``, given the prompt and the
``t`` tokens before it — by default its **probability** (inseq's default ``attributed_fn``), or its
``"log-probability"`` / ``"logit"`` (``score=``). The baseline x' replaces *every* input position —
prompt and previously generated tokens alike — by the baseline token (special tokens such as a BOS,
the source's end-of-sequence or the decoder start token are kept, as in every finegrain baseline), so
each row is complete on its own: ``sum(row) = f(x) - f(x') + delta`` with ``f`` the step's target.
Every step is one example of :func:`~finegrain.attribute.attribute` (the same forward on input
embeddings, ``n_steps="auto"``, completeness checks, batching of steps), so rows are computed
together, and the attributed forward is checked against the generation's own log-probabilities.

The result, :class:`GenerationAttribution`, is the token x token matrix (rows: generated tokens;
columns: prompt + generated tokens; the upper triangle, which a step cannot read, is NaN) with each
row's f(x), f(x'), delta and verdict, the generated text, a heatmap PNG and an HTML view.

Encoder-decoders (:class:`~finegrain.models.seq2seq.Seq2SeqAdapter`): the columns are the source tokens,
the decoder start token and the generated target tokens; each generated token is attributed to the
source and to the target prefix (inseq's ``attribute_target=True``), through the encoder's and the
decoder's input embeddings at once. Input-level methods only there (a layer's hook point belongs to one
side of the model, not to this joint sequence).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from finegrain.attribute._core import DELTA_TOLERANCE, AttributionError, CheckedResult, is_complete
from finegrain.attribute.methods import LAYER, AttributionMethod, canonical_method
from finegrain.attribute.targets import NextTokenTarget, TargetError
from finegrain.errors import ParameterError
from finegrain.models.base import Batch, ModelAdapter, ModelError, eval_mode
from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter
from finegrain.models.seq2seq import Seq2SeqAdapter, SourceEmbedding
from finegrain.results import Result, ResultList
from finegrain.viz.html import page, token_label

SCORES = ("probability", "log-probability", "logit")
#: largest disagreement (in log-probability) tolerated between the generation and the attributed forward
CONSISTENCY_ATOL = 1e-3


# ----------------------------------------------------------------------------------------------
@dataclass
class Generation(Result):
    """A greedy continuation: the ids of every position (``prompt_ids`` then ``generated_ids``; for an
    encoder-decoder the source, then the decoder start token), their display texts, which prompt
    positions are special tokens (kept in baselines), ``log p(token | prefix)`` of each generated token
    at generation time, why decoding stopped (``length``, ``eos``, ``max_length``) and whether a cache
    was used. ``n_source``: encoder-decoders, the number of leading positions that are the source."""

    model: str
    prompt: str
    prompt_ids: list[int]
    generated_ids: list[int]
    tokens: list[str]
    special: list[bool]
    logprobs: list[float]
    text: str
    stop: str
    cached: bool
    n_source: int = 0

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def ids(self) -> list[int]:
        return list(self.prompt_ids) + list(self.generated_ids)

    @property
    def generated_tokens(self) -> list[str]:
        return self.tokens[self.n_prompt :]

    def table(self) -> str:
        how = "greedy, cached" if self.cached else "greedy, recomputed every step"
        lines = [f"{self.model}: {len(self.generated_ids)} token(s) generated ({how}; stopped: {self.stop})",
                 f"prompt: {self.prompt!r}", f"continuation: {self.text!r}"]
        for tok, lp in zip(self.generated_tokens, self.logprobs):
            lines.append(f"  {token_label(tok):<14} p={math.exp(lp):.4g}  log p={lp:.4g}")
        return "\n".join(lines)


def _is_causal_hf(adapter: ModelAdapter) -> bool:
    return isinstance(adapter, HFAdapter) and adapter.kind == "decoder"


def _eos_ids(adapter: ModelAdapter) -> set[int]:
    """The end-of-sequence ids that stop decoding: the generation config's (as ``generate`` reads them),
    else the model config's, else the tokenizer's; LSTMs stop at ``bos`` themselves."""
    if isinstance(adapter, LSTMAdapter):
        return set()
    for src in (getattr(adapter.model, "generation_config", None), getattr(adapter.model, "config", None),
                adapter.tokenizer):
        e = getattr(src, "eos_token_id", None)
        if e is not None:
            return {int(x) for x in e} if isinstance(e, list | tuple) else {int(e)}
    return set()


def _special_ids(adapter: ModelAdapter) -> set[int]:
    if isinstance(adapter, LSTMAdapter):
        return {adapter.stoi[adapter.bos]} if adapter.bos is not None else set()
    return set(getattr(adapter.tokenizer, "all_special_ids", None) or [])


def _token_texts(adapter: ModelAdapter, ids: Sequence[int]) -> list[str]:
    """Display text of each id: a character, a word, a word piece with its leading space."""
    if isinstance(adapter, LSTMAdapter):
        return [adapter.token_text(int(i)) for i in ids]
    fn = getattr(adapter, "token_str", None)
    if callable(fn):
        return [fn(int(i)) for i in ids]
    tok = adapter.tokenizer
    out = []
    for i in ids:
        text = tok.decode([int(i)])
        out.append(text if text and "\ufffd" not in text else tok.convert_ids_to_tokens(int(i)))
    return out


def _decode_text(adapter: ModelAdapter, ids: Sequence[int]) -> str:
    if isinstance(adapter, LSTMAdapter):  # the end-of-text bos is no text, as an end-of-sequence token
        keep = [int(i) for i in ids if int(i) not in _special_ids(adapter)]
        return ("" if adapter.level == "char" else " ").join(adapter.token_text(i) for i in keep)
    return adapter.tokenizer.decode(list(ids), skip_special_tokens=True)


def _prompt_ids(adapter: ModelAdapter, prompt: str) -> list[int]:
    tok = adapter.tokenizer
    ids = list(tok(prompt)["input_ids"])
    if not ids:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ParameterError(f"{adapter.name}: an empty prompt needs a BOS or EOS token to start from")
        ids = [int(start)]
    return ids


def _cache_call(model: nn.Module, past, **inputs):
    """One forward with the key/value cache, whatever transformers calls it (``cache`` since 5.x,
    ``past_key_values`` before); returns ``(output, cache)``."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(**inputs, **{name: past}, use_cache=True)
    new = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
    return out, new


@torch.no_grad()
def _greedy(model: nn.Module, seq: list[int], n: int, cache: bool, eos: set[int], max_length: int, device,
            ids_key: str = "input_ids", **fixed):
    """Greedy decoding of a transformers model whose ``ids_key`` input (``input_ids`` of a decoder,
    ``decoder_input_ids`` of an encoder-decoder, with ``fixed`` inputs such as the encoder outputs) grows
    by one token a step: with ``cache``, the prefix once and then one token per forward through the
    key/value cache; without, the whole prefix every step. Returns ``(generated ids, their log p, why it
    stopped)``; ``seq`` is extended in place."""
    out, logps, past, stop = [], [], None, "length"
    for _ in range(n):
        if len(seq) >= max_length:
            stop = "max_length"
            break
        if cache:
            inp = torch.tensor([seq if past is None else seq[-1:]], device=device)
            o, past = _cache_call(model, past, **fixed, **{ids_key: inp})
        else:
            o = model(**fixed, **{ids_key: torch.tensor([seq], device=device)}, use_cache=False)
        logits = o.logits[0, -1].float()
        nxt = int(logits.argmax())
        logps.append(float(torch.log_softmax(logits, -1)[nxt]))
        seq.append(nxt)
        out.append(nxt)
        if nxt in eos:
            stop = "eos"
            break
    return out, logps, stop


def _decoder_start(adapter: Seq2SeqAdapter) -> int:
    for src in (getattr(adapter.model, "generation_config", None), adapter.model.config):
        s = getattr(src, "decoder_start_token_id", None)
        if s is not None:
            return int(s)
    raise ModelError(f"{adapter.name}: the config names no decoder_start_token_id")


def generate_greedy(adapter: ModelAdapter, prompt: str, max_new_tokens: int = 20, cache: bool = True,
                    stop_at_eos: bool = True) -> Generation:
    """Greedy continuation of ``prompt`` by a transformers decoder (load it with ``task="causal-lm"``), an
    encoder-decoder (``prompt`` is the source) or an LSTM language model (textgenrnn included), with the
    model's cache (``past_key_values``; an LSTM's carried state) unless ``cache=False``. Decoding stops
    after ``max_new_tokens``, at the model's end-of-sequence token (``stop_at_eos``; LSTMs: ``bos``, which
    also ends a text), or at the model's maximum length; the end-of-sequence token, when produced, is the
    last generated token (as in ``transformers``' ``generate``)."""
    if not isinstance(prompt, str):
        raise ParameterError(f"the prompt must be a string, got {type(prompt).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ParameterError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    eos = _eos_ids(adapter) if stop_at_eos else set()
    n_source = 0
    with eval_mode(adapter.model, freeze=True):
        if isinstance(adapter, LSTMAdapter):
            if adapter.task != "lm":
                raise ParameterError(f"{adapter.name} is a {adapter.task} model: generation needs a language model")
            ids, out, logits = adapter.generate_tokens(prompt, max_new_tokens, temperature=0.0, cache=cache)
            logps = [float(torch.log_softmax(lg.double(), -1)[i]) for lg, i in zip(logits, out)]
            bos = adapter.stoi[adapter.bos] if adapter.bos is not None else None
            stop = "eos" if out and out[-1] == bos else "length"
        elif isinstance(adapter, Seq2SeqAdapter):
            # the encoder once; the decoder grows from its start token
            src = _prompt_ids(adapter, prompt)
            source = torch.tensor([src], device=adapter.device)
            mask = torch.ones_like(source)
            with torch.no_grad():
                enc = adapter.model.get_encoder()(input_ids=source, attention_mask=mask)
            start = [_decoder_start(adapter)]
            out, logps, stop = _greedy(adapter.model, list(start), max_new_tokens, cache, eos, adapter.max_length,
                                       adapter.device, "decoder_input_ids", encoder_outputs=enc, attention_mask=mask)
            ids, n_source = src + start, len(src)
        elif _is_causal_hf(adapter):
            if adapter.task != "causal-lm" and getattr(adapter.model, "get_output_embeddings", lambda: None)() is None:
                raise ParameterError(f"{adapter.name} has no language-model head: load it with task='causal-lm'")
            ids = _prompt_ids(adapter, prompt)
            out, logps, stop = _greedy(adapter.model, list(ids), max_new_tokens, cache, eos, adapter.max_length,
                                       adapter.device)
        else:
            raise ParameterError(f"{adapter.name} ({type(adapter).__name__}, kind {adapter.kind}) cannot generate: "
                                 "use a transformers decoder loaded with task='causal-lm', an encoder-decoder or an "
                                 "LSTM language model")
    special = _special_ids(adapter)
    return Generation(adapter.name, prompt, list(ids), list(out), _token_texts(adapter, list(ids) + list(out)),
                      [int(i) in special for i in ids], logps, _decode_text(adapter, out), stop, cache, n_source)


# ----------------------------------------------------------------------------------------------
class GenerationTarget(NextTokenTarget):
    """The target of every step of a :class:`Generation`: the score of the token generated at step ``t``
    given the prompt and the ``t`` tokens generated before it. Its examples are the steps' prefixes
    (word lists whose "words" are the tokens, one per position; :meth:`steps`): every position but the
    special ones is attributable, so the baseline replaces prompt and generated tokens alike."""

    per_example: dict[str, str] = {}  # its tokens come from its examples (the steps), set at bind time

    def __init__(self, generation: Generation, score: str = "probability"):
        if score not in SCORES:
            raise ParameterError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        super().__init__(None, prob=score == "probability", log=score == "log-probability")
        self.generation, self.score = generation, score
        self._rows: list[int] = []

    @property
    def name(self):
        return f"generated:{self.score}"

    def steps(self) -> list[list[str]]:
        """One prefix per generated token (its tokens' display texts)."""
        g = self.generation
        return [g.tokens[: g.n_prompt + t] for t in range(len(g.generated_ids))]

    def encode(self, adapter, sentences):
        g = self.generation
        rows = [len(s) - g.n_prompt for s in sentences]
        if any(not 0 <= t < len(g.generated_ids) for t in rows):
            raise TargetError("GenerationTarget attributes the steps of its own generation: pass steps()")
        self._rows = rows
        ids = g.ids
        lengths = [g.n_prompt + t for t in rows]
        T = max(lengths)
        pad = getattr(adapter, "pad_index", None)
        if pad is None:
            pad = getattr(adapter, "pad_id", None)
        if pad is None:
            pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else ids[0]
        input_ids = torch.full((len(rows), T), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        word_ids, tokens = [], []
        special = g.special + [False] * len(g.generated_ids)
        for b, L in enumerate(lengths):
            input_ids[b, :L] = torch.tensor(ids[:L])
            mask[b, :L] = 1
            word_ids.append([None if special[j] else j for j in range(L)] + [None] * (T - L))
            tokens.append(list(g.tokens[:L]) + ["<pad>"] * (T - L))
        inputs = {"input_ids": input_ids} if isinstance(adapter, LSTMAdapter) else {"input_ids": input_ids,
                                                                                   "attention_mask": mask}
        return Batch(inputs, word_ids, lengths, mask, tokens).to(adapter.device), lengths

    def bind(self, adapter, batch, n_prompt=None):
        g = self.generation
        self.token = [g.generated_ids[t] for t in self._rows]
        scorer = super().bind(adapter, batch, n_prompt)
        n = len(g.generated_ids)
        for d, t in zip(scorer.descriptions, self._rows):
            d.detail = f"generated token {t + 1} of {n} (greedy), given the prompt and the {t} before it"
        return scorer


# ----------------------------------------------------------------------------------------------
class _JointEmbedding(nn.Module):
    """``[source ids | decoder ids]`` -> the encoder's and the decoder's input vectors, side by side."""

    def __init__(self, source: nn.Module, target: nn.Module, n_source: int):
        super().__init__()
        self.source, self.target, self.n_source = source, target, n_source

    @property
    def weight(self) -> torch.Tensor:
        return self.source.weight

    @property
    def num_embeddings(self) -> int:
        return int(self.source.weight.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        S = self.n_source
        return torch.cat([self.source(ids[:, :S]), self.target(ids[:, S:])], 1)


@dataclass
class _JointOutput:
    logits: torch.Tensor  # [B, S + T, V]: decoder logits at the decoder positions, NaN at the source


class _Seq2SeqJoint(ModelAdapter):
    """An encoder-decoder seen as one sequence ``[source tokens | decoder inputs]`` (source of fixed
    length ``n_source``): what :func:`attribute_generation` differentiates, so that a generated token is
    attributed to the source and the target prefix in one forward."""

    kind = "seq2seq"

    def __init__(self, parent: Seq2SeqAdapter, n_source: int):
        self.parent, self.n_source = parent, n_source
        self.model, self.tokenizer, self.name = parent.model, parent.tokenizer, parent.name
        self.device, self.max_length, self.task = parent.device, parent.max_length, parent.task
        self.pad_id = parent.pad_id
        self._embedding = _JointEmbedding(parent.source_embedding, _decoder_embedding(parent), n_source)

    def layers(self) -> dict[str, int]:
        return self.parent.layers()

    def hooks(self, hooks):
        return self.parent.hooks(hooks)

    def embedding_module(self) -> nn.Module:
        return self._embedding

    def _split(self, batch: Batch):
        S = self.n_source
        ids, mask = batch.inputs["input_ids"], batch.attention_mask.to(self.device)
        return ids[:, :S], mask[:, :S], ids[:, S:], mask[:, S:]

    def _joint(self, logits: torch.Tensor) -> _JointOutput:
        full = logits.new_full((logits.shape[0], self.n_source + logits.shape[1], logits.shape[2]), float("nan"))
        full[:, self.n_source :] = logits
        return _JointOutput(full)

    def forward(self, batch: Batch) -> _JointOutput:
        src, sm, dec, dm = self._split(batch.to(self.device))
        out = self.model(inputs_embeds=self.parent.source_embedding(src), attention_mask=sm, decoder_input_ids=dec,
                         decoder_attention_mask=dm, use_cache=False)
        return self._joint(out.logits)

    def forward_embeds(self, batch: Batch, embeds: torch.Tensor) -> _JointOutput:
        _, sm, _, dm = self._split(batch.to(self.device))
        S = self.n_source
        out = self.model(inputs_embeds=embeds[:, :S], attention_mask=sm, decoder_inputs_embeds=embeds[:, S:],
                         decoder_attention_mask=dm, use_cache=False)
        return self._joint(out.logits)


def _decoder_embedding(adapter: Seq2SeqAdapter) -> SourceEmbedding:
    """The decoder's input embedding exactly as the decoder applies it to ids: the embedding module times
    the decoder's ``embed_scale`` where the decoder scales only embeddings it computes itself (BART-style
    decoders scale inside the module, Marian's scale every input). Chosen by reproducing the model's
    logits, so an unknown convention fails here instead of skewing every result."""
    dec = adapter.model.get_decoder()
    emb = dec.get_input_embeddings() if hasattr(dec, "get_input_embeddings") else adapter.model.get_input_embeddings()
    src = torch.tensor([[min(5, emb.weight.shape[0] - 1)] * 3], device=adapter.device)
    tgt = torch.tensor([[_decoder_start(adapter), min(6, emb.weight.shape[0] - 1), 5]], device=adapter.device)
    scales = [1.0]
    if getattr(dec, "embed_scale", None) not in (None, 1.0):
        scales.append(float(dec.embed_scale))
    with torch.inference_mode():
        ref = adapter.model(input_ids=src, decoder_input_ids=tgt, use_cache=False).logits.float()
        for s in scales:
            cand = SourceEmbedding(emb, s)
            got = adapter.model(input_ids=src, decoder_inputs_embeds=cand(tgt), use_cache=False).logits.float()
            if torch.allclose(ref, got, atol=1e-4, rtol=1e-4):
                return cand
    raise ModelError(f"{adapter.name}: cannot reproduce the decoder's input embedding (scaling convention of "
                     f"{type(dec).__name__} not recognised)")


# ----------------------------------------------------------------------------------------------
@dataclass
class GenerationAttribution(CheckedResult):
    """Attribution of a generated continuation: ``matrix[t, j]`` is the attribution of generated token
    ``t`` (its ``score``: probability, log-probability or logit, given the tokens before it) to input
    position ``j`` — the prompt's tokens (``j < n_prompt``) and the generated ones. Cells a step cannot
    read (``j >= n_prompt + t``: the upper triangle) are NaN. Per row: ``f_x`` (the target on the real
    prefix), ``f_baseline`` (on the prefix with every non-special position replaced by the baseline
    token), ``delta = sum(row) - (f_x - f_baseline)`` (``None`` for methods without a completeness
    property), ``n_steps`` and ``n_evaluations`` of the method; ``logprobs``: the generation's own
    ``log p`` of each token, which the attributed forward reproduces (checked).
    """

    method: str
    model: str
    prompt: str
    text: str
    tokens: list[str]
    token_ids: list[int]
    n_prompt: int
    matrix: np.ndarray
    f_x: np.ndarray
    f_baseline: np.ndarray
    delta: np.ndarray | None
    logprobs: np.ndarray
    score: str = "probability"
    baseline: str = "pad"
    special: list = field(default_factory=list)
    n_steps: list = field(default_factory=list)
    n_evaluations: list = field(default_factory=list)
    descriptions: list = field(default_factory=list)
    delta_tolerance: float = DELTA_TOLERANCE
    cached: bool = True
    stop: str = "length"
    n_source: int = 0

    _arrays = {"matrix": np.float64, "f_x": np.float64, "f_baseline": np.float64, "delta": np.float64,
               "logprobs": np.float64}

    @property
    def n_generated(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def prompt_tokens(self) -> list[str]:
        return self.tokens[: self.n_prompt]

    @property
    def generated_tokens(self) -> list[str]:
        return self.tokens[self.n_prompt :]

    @property
    def totals(self) -> np.ndarray:
        """Each row's sum of scores (over the positions it reads)."""
        return np.nansum(self.matrix, axis=1)

    @property
    def gap(self) -> np.ndarray:
        return self.f_x - self.f_baseline

    @property
    def complete(self) -> list[bool | None]:
        if self.delta is None:
            return [None] * self.n_generated
        return [is_complete(float(d), float(g), self.delta_tolerance) for d, g in zip(self.delta, self.gap)]

    def row(self, t: int) -> dict:
        """Generated token ``t``'s scores by input token, with its numbers."""
        if not -self.n_generated <= t < self.n_generated:
            raise ParameterError(f"row {t} out of range: {self.n_generated} tokens were generated")
        t %= self.n_generated
        L = self.n_prompt + t
        return {"token": self.generated_tokens[t], "inputs": self.tokens[:L], "scores": self.matrix[t, :L].tolist(),
                "f_x": float(self.f_x[t]), "f_baseline": float(self.f_baseline[t]),
                "delta": None if self.delta is None else float(self.delta[t]), "complete": self.complete[t]}

    # -- showing -----------------------------------------------------------------------------------
    def _header(self) -> list[str]:
        how = "greedy with the model's cache" if self.cached else "greedy, recomputed every step"
        return [f"{self.method} attribution of a generated continuation ({self.model}): each row is a generated "
                f"token's {self.score} given the tokens before it; baseline={self.baseline} at every position",
                f"prompt: {self.prompt!r}  continuation: {self.text!r}  ({self.n_generated} token(s), {how}, "
                f"stopped: {self.stop})"]

    def _row_notes(self) -> list[dict[str, str]]:
        out = []
        for t, c in enumerate(self.complete):
            d = "n/a" if self.delta is None else f"{float(self.delta[t]):.3g}"
            out.append({"f(x)": f"{float(self.f_x[t]):.4g}", "f(x')": f"{float(self.f_baseline[t]):.4g}",
                        "total": f"{float(self.totals[t]):.4g}", "delta": d,
                        "check": "n/a" if c is None else ("complete" if c else "INCOMPLETE"),
                        "steps": "" if t >= len(self.n_steps) or self.n_steps[t] is None else str(self.n_steps[t])})
        return out

    def table(self) -> str:
        labels = [token_label(t) for t in self.tokens]
        w = max([9] + [len(x) for x in labels])
        rw = max([5] + [len(token_label(t)) for t in self.generated_tokens])
        cols = [lab.rjust(w) + (" |" if j == self.n_prompt - 1 else "") for j, lab in enumerate(labels)]
        notes = self._row_notes()
        keys = ["f(x)", "f(x')", "delta", "check"]
        lines = self._header()
        lines.append("rows: generated tokens; columns: prompt | generated tokens; '.' = not read by that step")
        lines.append(" " * rw + " " + " ".join(cols) + "  " + "  ".join(k.rjust(9) for k in keys))
        for t, tok in enumerate(self.generated_tokens):
            cells = []
            for j in range(len(labels)):
                v = self.matrix[t, j]
                s = f"{v:.3g}" if np.isfinite(v) else "."
                cells.append(s.rjust(w) + (" |" if j == self.n_prompt - 1 else ""))
            lines.append(token_label(tok).ljust(rw) + " " + " ".join(cells) + "  "
                         + "  ".join(notes[t][k].rjust(9) for k in keys))
        return "\n".join(lines)

    def plot(self, path) -> object:
        """The matrix as a heatmap PNG (rows: generated tokens), with each row's f(x) and delta."""
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.generation import plot_generation_matrix

        notes = [f"{self.score[:4]}={n['f(x)']} Δ={n['delta']}" + ("" if n["check"] != "INCOMPLETE" else " !")
                 for n in self._row_notes()]
        return plot_generation_matrix(self.matrix, self.generated_tokens, self.tokens, self.n_prompt, path,
                                      title=f"{self.method}: {self.prompt!r} -> {self.text!r}"[:90], row_notes=notes)

    def html(self, standalone: bool = True) -> str:
        """The matrix as an HTML table (tokens escaped), the generated text and each row's numbers."""
        # heavy: matplotlib (through finegrain.viz), imported when the view is drawn
        from finegrain.viz.generation import generation_html

        title = f"{self.method} attribution of a generated continuation ({self.model}, score: {self.score})"
        return generation_html(self.matrix, self.generated_tokens, self.tokens, self.n_prompt, title=title,
                               text=f"{self.prompt} ⟶ {self.text}", row_info=self._row_notes(), standalone=standalone)

    def _repr_html_(self) -> str:
        return self.html(standalone=False)


def _assemble(gen: Generation, rows: ResultList, method: str, score: str, baseline: str,
              tolerance: float) -> GenerationAttribution:
    n, P = len(gen.generated_ids), gen.n_prompt
    M = np.full((n, P + n), np.nan)
    for t, a in enumerate(rows):
        M[t, : P + t] = a.token_scores
    deltas = [a.delta for a in rows]
    return GenerationAttribution(
        method, gen.model, gen.prompt, gen.text, list(gen.tokens), gen.ids, P, M,
        np.array([a.f_x for a in rows]), np.array([a.f_baseline for a in rows]),
        None if all(d is None for d in deltas) else np.array([np.nan if d is None else d for d in deltas]),
        np.array(gen.logprobs, dtype=np.float64), score, str(baseline), list(gen.special),
        [a.n_steps for a in rows], [int(a.n_evaluations) for a in rows], [a.description for a in rows], tolerance,
        gen.cached, gen.stop, gen.n_source,
    )


def _check_consistent(gen: Generation, rows: ResultList, score: str) -> None:
    """The attributed forward (input embeddings, all steps batched) must reproduce the generation's own
    log-probabilities (the cached decoding): otherwise the matrix would explain another function."""
    if score == "logit":
        return
    fx = np.array([a.f_x for a in rows], dtype=np.float64)
    got = fx if score == "log-probability" else np.log(np.maximum(fx, 1e-300))
    want = np.asarray(gen.logprobs, dtype=np.float64)
    bad = np.abs(got - want) > CONSISTENCY_ATOL * np.maximum(1.0, np.abs(want))
    if bad.any():
        t = int(np.argmax(np.abs(got - want)))
        raise AttributionError(
            f"{gen.model}: the attributed forward gives log p = {got[t]:.6g} for generated token {t + 1}, the "
            f"generation {want[t]:.6g}; the model's forward on input embeddings differs from its decoding")


def attribute_generation(
    adapter: ModelAdapter,
    prompts: str | Sequence[str],
    max_new_tokens: int = 10,
    method: str = "ig",
    score: str = "probability",
    baseline: str | int = "pad",
    cache: bool = True,
    stop_at_eos: bool = True,
    layer: str | None = None,
    neuron=None,
    **kw,
) -> GenerationAttribution | ResultList:
    """Generate greedily after each prompt (:func:`generate_greedy`) and attribute every generated token to
    the prompt and to the tokens generated before it (see the module docstring for the semantics).

    ``prompts``: a string (returns one :class:`GenerationAttribution`) or a list (a ``ResultList``);
    ``method``: any of :data:`~finegrain.attribute.methods.METHODS` (``ig``, ``saliency``,
    ``input_x_gradient``, ``deeplift``, ``feature_ablation``, ... ; layer methods with ``layer=`` /
    ``neuron=`` on decoders and LSTMs); ``score``: ``"probability"`` (default, as inseq),
    ``"log-probability"`` or ``"logit"`` of each generated token; ``baseline``: as in
    :func:`~finegrain.attribute.attribute` (``"pad"``, ``"unk"`` — inseq's choice —, ``"zero"``, an id),
    applied to every non-special position. Other keyword arguments go to
    :func:`~finegrain.attribute.attribute` (``n_steps="auto"``, ``delta_tolerance``, ``batch_size`` (steps
    attributed together), ``internal_batch_size``, ``n_samples``, ``seed``, ``progress``, ...).
    """
    m = canonical_method(method)
    if score not in SCORES:
        raise ParameterError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if isinstance(adapter, Seq2SeqAdapter) and m in LAYER:
        raise ParameterError(f"{m} on an encoder-decoder: a layer belongs to one side, not to the joint "
                             "source + target sequence; use an input-level method (ig, saliency, ...)")
    single = isinstance(prompts, str)
    items = [prompts] if single else list(prompts)
    if not items:
        raise ParameterError("attribute_generation needs at least one prompt")
    tolerance = kw.get("delta_tolerance", DELTA_TOLERANCE)
    out = []
    for prompt in items:
        gen = generate_greedy(adapter, prompt, max_new_tokens, cache=cache, stop_at_eos=stop_at_eos)
        if not gen.generated_ids:
            raise AttributionError(f"nothing was generated after {prompt!r} ({gen.stop}: the prompt already has "
                                   f"{gen.n_prompt} of at most {adapter.max_length} tokens)")
        run_on = _Seq2SeqJoint(adapter, gen.n_source) if isinstance(adapter, Seq2SeqAdapter) else adapter
        target = GenerationTarget(gen, score)
        rows = AttributionMethod(run_on, m, layer=layer, neuron=neuron).attribute(target.steps(), target,
                                                                                 baseline=baseline, **kw)
        _check_consistent(gen, rows, score)
        out.append(_assemble(gen, rows, m, score, baseline, tolerance))
    return out[0] if single else ResultList(out)


def generations_html(results, title: str = "finegrain: attribution of generated continuations") -> str:
    """A self-contained HTML page of one or more :class:`GenerationAttribution` results."""
    items = [results] if isinstance(results, GenerationAttribution) else list(results)
    body = "\n".join(r.html(standalone=False) for r in items)
    return page(body, title, body_style="font-family:sans-serif")


__all__ = ["CONSISTENCY_ATOL", "SCORES", "Generation", "GenerationAttribution", "GenerationTarget",
           "attribute_generation", "generate_greedy", "generations_html"]
