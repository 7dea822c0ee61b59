"""Scoring the model's own output: continuation log-probabilities, LM loss, classifier accuracy,
and number-agreement minimal pairs (Lakretz et al. 2019), all usable inside :func:`intervene`.

Every score is built as an *objective*: a fixed batch plus a per-row score, so that a batched
single-unit sweep can repeat the batch, give each copy a different edit, and read one score per
copy from one forward pass.

**Word boundaries.** A continuation scored as a product over the characters of a character LM
counts every word it begins: ``p(" he")`` also holds ``" her"``, ``" help"`` and ``" hello"``. For
character models (:class:`~finegrain.models.lstm.LSTMAdapter` with ``level="char"``) every
continuation is therefore scored *followed by a word boundary*:

    log p(continuation, then a boundary | prefix)
        = sum_j log p(c_j | prefix, c_<j) + log sum_{b in B} p(b | prefix, continuation)

where ``B`` is the adapter's :meth:`~finegrain.models.lstm.LSTMAdapter.word_boundary_ids`: every
whitespace and punctuation character of the vocabulary and the text-end token (``bos``, which ends a
text in textgenrnn). ``word_boundary=None`` (the default everywhere) means "on for character models,
off for subword models", whose continuations end at a token boundary already; ``False`` turns it off;
``True`` on a model without boundary characters is a :class:`~finegrain.errors.ParameterError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from finegrain.data.generate import agreement_pairs
from finegrain.errors import ParameterError
from finegrain.intervene.edits import Edit, intervene
from finegrain.models.base import Batch, ModelAdapter, ModelError
from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter

log = logging.getLogger(__name__)


def is_hf_causal(adapter: ModelAdapter) -> bool:
    """A transformers decoder whose forward returns next-token logits."""
    return isinstance(adapter, HFAdapter) and adapter.kind == "decoder" and getattr(adapter, "task", "") == "causal-lm"


def is_lstm_lm(adapter: ModelAdapter) -> bool:
    """An :class:`LSTMAdapter` language model (word or character level; textgenrnn)."""
    return isinstance(adapter, LSTMAdapter) and adapter.task == "lm"


def uses_sequence_logprob(adapter: ModelAdapter) -> bool:
    """Other adapters that score continuations themselves (``adapter.sequence_logprob(prefix, continuation)``)."""
    return not (is_hf_causal(adapter) or is_lstm_lm(adapter)) and callable(getattr(adapter, "sequence_logprob", None))


def scores_continuations(adapter: ModelAdapter) -> bool:
    """Whether :func:`continuation_logprobs` can score continuations on ``adapter``."""
    return is_hf_causal(adapter) or is_lstm_lm(adapter) or uses_sequence_logprob(adapter)


def boundary_ids(adapter: ModelAdapter, word_boundary: bool | None = None) -> list[int]:
    """The token ids that count as the end of a continuation's word (see the module docstring):
    ``[]`` when boundaries are off (``False``, or ``None`` on a subword model)."""
    if word_boundary is False:
        return []
    ids = list(adapter.word_boundary_ids()) if is_lstm_lm(adapter) and adapter.level == "char" else []
    if word_boundary and not ids:
        raise ParameterError(f"word_boundary=True needs a character language model with whitespace or punctuation "
                             f"in its vocabulary; {adapter.name} has none (use word_boundary=None or False)")
    return ids


# ---------------------------------------------------------------------------------------------
@dataclass
class ContinuationBatch:
    """Prefix+continuation rows tokenised jointly; ``targets[b]`` = [(position, token id)] of the
    continuation tokens of row ``b`` (predicted from the logits at ``position - 1``). With word
    boundaries, ``boundary[b]`` is the position whose logits give ``p(boundary | prefix, continuation)``
    (the last token of the row) and ``boundary_ids`` the boundary tokens."""

    batch: Batch
    targets: list[list[tuple[int, int]]]
    prefix_lens: list[int]  # number of tokens before the first continuation token
    offsets: list[list[tuple[int, int]]] | None = None  # character span of each token (HF)
    boundary: list[int] | None = None
    boundary_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    def repeated(self, n: int, batch: Batch | None = None) -> ContinuationBatch:
        """The same rows ``n`` times (copy ``c`` = rows ``c*B .. c*B+B-1``, as :func:`repeat_batch`)."""
        return ContinuationBatch(batch if batch is not None else repeat_batch(self.batch, n), self.targets * n,
                                 self.prefix_lens * n, None, None if self.boundary is None else self.boundary * n,
                                 self.boundary_ids)

    def positions(self, row: int) -> list[int]:
        """The positions whose logits row ``row`` is scored from (in order)."""
        pos = {t - 1 for t, _ in self.targets[row]}
        if self.boundary is not None:
            pos.add(self.boundary[row])
        return sorted(pos)


def _check_pairs(prefixes: Sequence[str], continuations: Sequence[str]) -> None:
    if len(prefixes) != len(continuations):
        raise ParameterError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    for c in continuations:
        if not isinstance(c, str) or not c:
            raise ParameterError(f"a continuation must be a non-empty string, got {c!r}")


def text_ids(adapter: LSTMAdapter, text: str) -> list[int]:
    """The ids an :class:`LSTMAdapter` reads for ``text`` as a prefix: ``bos`` (if any), then its tokens."""
    return adapter.token_ids(([adapter.bos] if adapter.bos is not None else []) + adapter.tokenize(text))


def encode_continuations(adapter: ModelAdapter, prefixes: Sequence[str], continuations: Sequence[str],
                         word_boundary: bool | None = None) -> ContinuationBatch:
    """Rows ``prefix + continuation`` with the continuation's tokens marked.

    HF causal LMs: tokenised jointly (so BPE merges are those of running text), the continuation's
    tokens found through character offsets. LSTM LMs: ``bos`` + the prefix's tokens + the
    continuation's tokens, right-padded (the LSTM is causal). ``word_boundary``: see the module
    docstring."""
    _check_pairs(prefixes, continuations)
    bids = boundary_ids(adapter, word_boundary)
    if is_lstm_lm(adapter):
        return _encode_lstm(adapter, prefixes, continuations, bids)
    if not is_hf_causal(adapter):
        raise ModelError(f"{adapter.name}: continuation scoring needs a causal LM (task='causal-lm') or an LSTM LM")
    tok = adapter.tokenizer
    texts = [p + c for p, c in zip(prefixes, continuations)]
    side = getattr(tok, "padding_side", "right")
    try:
        tok.padding_side = "right"  # GPT-2 derives positions from indices: keep real tokens first
        enc = tok(texts, padding=True, return_tensors="pt", return_offsets_mapping=True)
    finally:
        tok.padding_side = side
    ids = enc["input_ids"]
    mask = enc["attention_mask"]
    targets, prefix_lens = [], []
    for b, (p, offs) in enumerate(zip(prefixes, enc["offset_mapping"].tolist())):
        n_real = int(mask[b].sum())
        cut = len(p)
        tgt = [(t, int(ids[b, t])) for t in range(n_real) if offs[t][1] > cut and offs[t][1] > offs[t][0]]
        if not tgt:
            raise ParameterError(f"continuation {continuations[b]!r} produced no tokens after {p!r}")
        first = tgt[0][0]
        if offs[first][0] < cut:
            log.warning("a token straddles the prefix/continuation boundary in %r; it is scored as "
                        "part of the continuation", texts[b])
        if first == 0:
            raise ParameterError(f"empty prefix for {texts[b]!r}: the first token has no context")
        targets.append(tgt)
        prefix_lens.append(first)
    inputs = {"input_ids": ids, "attention_mask": mask}
    batch = Batch(inputs, [[None] * ids.shape[1] for _ in texts], [0] * len(texts), mask,
                  [tok.convert_ids_to_tokens(r) for r in ids.tolist()]).to(adapter.device)
    offsets = [[tuple(o) for o in row] for row in enc["offset_mapping"].tolist()]
    return ContinuationBatch(batch, targets, prefix_lens, offsets)


def _encode_lstm(adapter: LSTMAdapter, prefixes, continuations, bids: list[int]) -> ContinuationBatch:
    rows, targets, prefix_lens = [], [], []
    for p, c in zip(prefixes, continuations):
        ctx = text_ids(adapter, p)
        if not ctx:
            raise ParameterError(f"{adapter.name} has no bos token, so the prefix must not be empty (got {p!r})")
        cont = adapter.token_ids(adapter.tokenize(c))
        if not cont:
            raise ParameterError(f"continuation {c!r} has no tokens for {adapter.name}")
        rows.append(ctx + cont)
        targets.append([(len(ctx) + j, i) for j, i in enumerate(cont)])
        prefix_lens.append(len(ctx))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), adapter.pad_index, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    tokens = [[adapter.itos[i] for i in r] + ["<pad>"] * (width - len(r)) for r in rows]
    batch = Batch({"input_ids": ids}, [[None] * width for _ in rows], [0] * len(rows), mask, tokens).to(adapter.device)
    boundary = [len(r) - 1 for r in rows] if bids else None
    return ContinuationBatch(batch, targets, prefix_lens, None, boundary, list(bids))


def logits_of(adapter: ModelAdapter, output) -> torch.Tensor:
    return adapter.score_fn(output)


def _scores_from_logp(logp: torch.Tensor, cb: ContinuationBatch) -> torch.Tensor:
    """Per-row continuation scores from log-probabilities ``[B, T, V]`` (only the positions of
    :meth:`ContinuationBatch.positions` are read)."""
    rows, pos, ids = [], [], []
    for b, tgt in enumerate(cb.targets):
        for t, i in tgt:
            rows.append(b)
            pos.append(t - 1)
            ids.append(i)
    dev = logp.device
    vals = logp[torch.tensor(rows, device=dev), torch.tensor(pos, device=dev), torch.tensor(ids, device=dev)]
    out = torch.zeros(len(cb.targets), dtype=vals.dtype, device=dev)
    out = out.index_add(0, torch.tensor(rows, device=dev), vals)
    if cb.boundary is not None:
        at = logp[torch.arange(len(cb.targets), device=dev), torch.tensor(cb.boundary, device=dev)]
        out = out + torch.logsumexp(at[:, torch.tensor(cb.boundary_ids, device=dev)], -1)
    return out


def _lstm_logp(adapter: LSTMAdapter, cb: ContinuationBatch) -> torch.Tensor:
    """``[B, T, V]`` log-probabilities at the positions the rows need, through ``model.logits_at``
    (textgenrnn computes one 40-character window per position: only the needed ones run). Rows whose
    scored positions start at the same place (the same prefix length) share one call, over the
    positions from there to the end of the longest of them."""
    ids = cb.batch.inputs["input_ids"]
    groups: dict[int, list[int]] = {}
    for b in range(len(cb)):
        groups.setdefault(cb.positions(b)[0], []).append(b)
    logp = None
    for start, rows in groups.items():
        pos = list(range(start, max(cb.positions(b)[-1] for b in rows) + 1))
        idx = torch.tensor(rows, device=ids.device)
        part = torch.log_softmax(adapter.model.logits_at(ids.index_select(0, idx), pos).float(), -1)
        if logp is None:
            logp = part.new_zeros(ids.shape[0], ids.shape[1], part.shape[-1])
        logp[idx[:, None], torch.tensor(pos, device=ids.device)[None]] = part
    return logp


def continuation_scores(adapter: ModelAdapter, cb: ContinuationBatch, output=None) -> torch.Tensor:
    """``log p(continuation | prefix)`` per row (``[B]``; with ``cb``'s word boundary). ``output`` is
    a forward output of ``cb.batch`` when the caller has one."""
    if output is None and is_lstm_lm(adapter):
        return _scores_from_logp(_lstm_logp(adapter, cb), cb)
    if output is None:
        output = adapter.forward(cb.batch)
    return _scores_from_logp(torch.log_softmax(logits_of(adapter, output).float(), -1), cb)


def continuation_scores_by_position(adapter: ModelAdapter, cb: ContinuationBatch, row: int,
                                    edits_at: Callable[[int], Edit | Sequence[Edit] | None],
                                    repeat: int = 1) -> torch.Tensor:
    """Row ``row`` of ``cb`` scored one prediction position at a time, position ``t``'s logits
    computed with the edits ``edits_at(t)``; ``repeat`` copies of the row (``[repeat]`` scores), so
    that an edit can give each copy its own values (:class:`~finegrain.intervene.edits.PerRow`).

    Models that recompute their states for every prediction (textgenrnn's 40-character windows) hold
    a different value of the same unit at the same step in each computation; an intervention that
    sets a unit "to its value under another input" must use that input's value *in the same
    computation*, i.e. per predicted position (Vig et al. 2020's mediator, made exact for windowed
    models). Each position is one call of ``model.logits_at`` (LSTMs) or of the forward (others).
    """
    n_real = int(cb.batch.attention_mask[row].sum())
    ids = cb.batch.inputs["input_ids"][row:row + 1, :n_real]
    batch = Batch({k: v[row:row + 1, :n_real] for k, v in cb.batch.inputs.items()}, [cb.batch.word_ids[row][:n_real]],
                  [cb.batch.n_words[row]], cb.batch.attention_mask[row:row + 1, :n_real])
    total = None
    for t in cb.positions(row):
        with intervene(adapter, edits_at(t)):
            if is_lstm_lm(adapter):
                logits = adapter.model.logits_at(ids.expand(repeat, -1), [t])[:, 0]
            else:
                logits = logits_of(adapter, adapter.forward(repeat_batch(batch, repeat)))[:, t]
        logp = torch.log_softmax(logits.float(), -1)
        part = sum((logp[:, i] for p, i in cb.targets[row] if p - 1 == t), logp.new_zeros(repeat))
        if cb.boundary is not None and t == cb.boundary[row]:
            part = part + torch.logsumexp(logp[:, torch.tensor(cb.boundary_ids, device=logp.device)], -1)
        total = part if total is None else total + part
    return total


def continuation_logprobs(adapter: ModelAdapter, prefixes: Sequence[str], continuations: Sequence[str],
                          batch_size: int = 64, word_boundary: bool | None = None) -> np.ndarray:
    """``log p(continuation | prefix)`` for many pairs (no gradients; attached hooks apply).

    HF causal LMs and LSTM LMs: the sum of the continuation tokens' log-probabilities (for character
    models a product over characters), followed by a word boundary on character models (see the
    module docstring: ``" he"`` is scored as ``" he"`` then a space, punctuation or the end of the
    text, so ``" her"`` does not count). Other adapters with a ``sequence_logprob(prefix,
    continuation)`` method are delegated to it, pair by pair."""
    _check_pairs(prefixes, continuations)
    if uses_sequence_logprob(adapter):
        kw = {"word_boundary": True} if word_boundary else {}
        with torch.no_grad():
            try:
                return np.array([float(adapter.sequence_logprob(p, c, **kw)) for p, c in zip(prefixes, continuations)])
            except TypeError as e:
                raise ParameterError(f"{adapter.name}.sequence_logprob has no word_boundary option") from e
    out = []
    with torch.no_grad():
        for i in range(0, len(prefixes), batch_size):
            cb = encode_continuations(adapter, prefixes[i:i + batch_size], continuations[i:i + batch_size],
                                      word_boundary)
            out.append(continuation_scores(adapter, cb).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def continuation_logprob(adapter: ModelAdapter, prefix: str, continuation: str,
                         word_boundary: bool | None = None) -> float:
    """``log p(continuation | prefix)`` (see :func:`continuation_logprobs`). The continuation
    carries its own leading space, e.g. ``("The nurse said that", " she")``."""
    return float(continuation_logprobs(adapter, [prefix], [continuation], word_boundary=word_boundary)[0])


# ---------------------------------------------------------------------------------------------
def repeat_batch(batch: Batch, n: int) -> Batch:
    """``n`` stacked copies of a batch (copy ``c`` holds rows ``c*B .. c*B+B-1``)."""
    def rep(v):
        return v.repeat(n, *([1] * (v.dim() - 1))) if torch.is_tensor(v) else v

    return Batch({k: rep(v) for k, v in batch.inputs.items()}, batch.word_ids * n, batch.n_words * n,
                 rep(batch.attention_mask), batch.tokens * n)


class Objective:
    """A fixed evaluation of the model's own output.

    ``batch`` is run through the model; ``row_scores(output)`` gives one number per row (of ``n``
    stacked copies of the batch, in a batched sweep); ``reduce(rows)`` turns the rows of one copy into
    the score. ``higher_is_better`` says which way a drop goes. Calling the objective evaluates it
    (edits active if inside :func:`intervene`).
    """

    name = "score"
    higher_is_better = True
    batch: Batch

    def row_scores(self, adapter: ModelAdapter, output) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, rows: torch.Tensor) -> float:
        return float(rows.float().mean())

    def batched(self, adapter: ModelAdapter) -> bool:
        """Whether ``row_scores`` reads ``n`` stacked copies of ``batch`` from one forward pass."""
        return True

    def __call__(self, adapter: ModelAdapter) -> float:
        with torch.no_grad():
            out = adapter.forward(self.batch)
            return self.reduce(self.row_scores(adapter, out))


class LMLoss(Objective):
    """Mean next-token negative log-likelihood (nats per token) of texts under a causal LM."""

    name = "lm_loss"
    higher_is_better = False

    def __init__(self, adapter: ModelAdapter, texts: Sequence[str]):
        if not (is_hf_causal(adapter) or is_lstm_lm(adapter)):
            raise ModelError(f"{adapter.name}: LMLoss needs a causal LM (HF decoder with task='causal-lm', "
                             "or an LSTM language model)")
        if not texts:
            raise ParameterError("LMLoss needs at least one text")
        words = [t.split() for t in texts]
        self.batch = adapter.encode(words)
        self.n_rows = len(words)

    def row_scores(self, adapter, output):
        logits = logits_of(adapter, output).float()
        n = logits.shape[0] // self.batch.inputs["input_ids"].shape[0]  # stacked copies in sweeps
        ids = self.batch.inputs["input_ids"].to(logits.device).repeat(n, 1)
        mask = self.batch.attention_mask.to(logits.device)[:, 1:].float().repeat(n, 1)
        nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


class Accuracy(Objective):
    """Accuracy of a sequence-classification head on labelled texts (labels: ints or names from
    ``config.label2id``)."""

    name = "accuracy"

    def __init__(self, adapter: ModelAdapter, texts: Sequence[str], labels: Sequence):
        if len(texts) != len(labels):
            raise ParameterError(f"{len(texts)} texts but {len(labels)} labels")
        if not texts:
            raise ParameterError("Accuracy needs at least one labelled text")
        l2i = getattr(getattr(adapter, "config", None), "label2id", None) or {}
        names = getattr(adapter, "labels", None) or []
        ys = []
        for y in labels:
            if isinstance(y, str) and not y.lstrip("-").isdigit():
                if y in l2i:
                    y = l2i[y]
                elif y in names:
                    y = names.index(y)
                else:
                    raise ParameterError(f"label {y!r} is not one of the model's classes {sorted(l2i) or names}")
            ys.append(int(y))
        self.batch = adapter.encode([t.split() if isinstance(t, str) else list(t) for t in texts])
        self.labels = torch.tensor(ys)

    def row_scores(self, adapter, output):
        logits = logits_of(adapter, output)
        if logits.dim() != 2:
            raise ModelError(f"{adapter.name}: Accuracy needs sequence-level logits [batch, classes], got "
                             f"{list(logits.shape)}")
        y = self.labels.repeat(logits.shape[0] // len(self.labels)).to(logits.device)
        return (logits.argmax(-1) == y).float()


@dataclass
class AgreementPair:
    """A number-agreement minimal pair (Lakretz et al. 2019): the verb form that agrees with the
    subject (``correct``) and the one that does not (``wrong``) after ``prefix``."""

    prefix: str
    correct: str
    wrong: str
    condition: str = ""  # e.g. "simple", "nounPP_attractor"

    def __post_init__(self) -> None:
        # verb forms given as bare words continue the prefix as the next word
        for name in ("correct", "wrong"):
            form = getattr(self, name)
            if self.prefix and form and not self.prefix[-1].isspace() and not form[0].isspace():
                setattr(self, name, " " + form)


def as_pairs(pairs) -> list[AgreementPair]:
    out = []
    for p in pairs:
        if isinstance(p, AgreementPair):
            out.append(p)
        elif isinstance(p, dict):
            out.append(AgreementPair(p["prefix"], p["correct"], p["wrong"], p.get("condition", "")))
        else:
            out.append(AgreementPair(*p))
    return out


class Agreement(Objective):
    """Number agreement on minimal pairs: ``measure="accuracy"`` = share with
    p(correct) > p(wrong) at the verb; ``"margin"`` = mean log p(correct) − log p(wrong). On
    character models the verb forms are words: each is scored followed by a word boundary (module
    docstring), so " is" does not also count " island"."""

    name = "agreement"

    def __init__(self, adapter: ModelAdapter, pairs, measure: str = "accuracy", word_boundary: bool | None = None):
        if measure not in ("accuracy", "margin"):
            raise ParameterError(f"measure must be 'accuracy' or 'margin', got {measure!r}")
        self.pairs = as_pairs(pairs)
        if not self.pairs:
            raise ParameterError("no agreement pairs")
        self.measure = measure
        self.name = f"agreement_{measure}"
        self.word_boundary = word_boundary
        self.cb = None
        if is_hf_causal(adapter) or is_lstm_lm(adapter):
            pre = [p.prefix for p in self.pairs]
            self.cb = encode_continuations(adapter, pre + pre, [p.correct for p in self.pairs] +
                                           [p.wrong for p in self.pairs], word_boundary)
            self.batch = self.cb.batch
        elif not uses_sequence_logprob(adapter):
            raise ModelError(f"{adapter.name}: agreement needs a causal LM or an adapter with sequence_logprob")

    def batched(self, adapter):
        return self.cb is not None

    def row_scores(self, adapter, output):
        n = logits_of(adapter, output).shape[0] // len(self.cb)  # stacked copies in sweeps
        return continuation_scores(adapter, self.cb if n == 1 else self.cb.repeated(n, self.cb.batch), output)

    def margins_from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        n = len(self.pairs)
        return rows[:n] - rows[n:2 * n]

    def reduce(self, rows):
        m = self.margins_from_rows(rows)
        return float((m > 0).float().mean()) if self.measure == "accuracy" else float(m.mean())

    def margins(self, adapter: ModelAdapter) -> np.ndarray:
        """log p(correct) − log p(wrong) for each pair."""
        if self.cb is None:
            pre = [p.prefix for p in self.pairs]
            c = continuation_logprobs(adapter, pre, [p.correct for p in self.pairs], word_boundary=self.word_boundary)
            w = continuation_logprobs(adapter, pre, [p.wrong for p in self.pairs], word_boundary=self.word_boundary)
            return c - w
        with torch.no_grad():
            rows = continuation_scores(adapter, self.cb)
        return self.margins_from_rows(rows).double().cpu().numpy()

    def __call__(self, adapter):
        m = self.margins(adapter)
        return float((m > 0).mean()) if self.measure == "accuracy" else float(m.mean())


def agreement_margins(adapter: ModelAdapter, pairs, word_boundary: bool | None = None) -> np.ndarray:
    """log p(correct) − log p(wrong) at the verb for each pair."""
    return Agreement(adapter, pairs, word_boundary=word_boundary).margins(adapter)


def agreement_accuracy(adapter: ModelAdapter, pairs, by_condition: bool = False, word_boundary: bool | None = None):
    """Share of minimal pairs with p(correct) > p(wrong) (Lakretz et al. 2019). With
    ``by_condition`` a ``{condition: accuracy}`` dict (plus ``"all"``)."""
    pairs = as_pairs(pairs)
    m = agreement_margins(adapter, pairs, word_boundary)
    if not by_condition:
        return float((m > 0).mean())
    out = {"all": float((m > 0).mean())}
    conds = np.array([p.condition for p in pairs])
    for c in dict.fromkeys(conds.tolist()):
        out[c] = float((m[conds == c] > 0).mean())
    return out


def simple_agreement_pairs(n: int = 64, attractors: bool = True, seed: int = 0) -> list[AgreementPair]:
    """``n`` subject-verb agreement minimal pairs of the built-in grammar
    (:func:`finegrain.data.generate.agreement_pairs`: Lakretz et al. 2019's conditions, with and
    without an attractor noun), as :class:`AgreementPair` objects."""
    return as_pairs(agreement_pairs(n=n, seed=seed, attractors=attractors))
