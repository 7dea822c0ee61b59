"""Scoring the model's own output: continuation log-probabilities, LM loss, classifier accuracy,
and number-agreement minimal pairs (Lakretz et al. 2019), all usable inside :func:`intervene`.

Every score is built as an *objective*: a fixed batch plus a per-row score, so that a batched
single-unit sweep can repeat the batch, give each copy a different edit, and read one score per
copy from one forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finegrain.models.base import Batch, ModelAdapter, ModelError

log = logging.getLogger(__name__)


def is_hf_causal(adapter: ModelAdapter) -> bool:
    """A transformers decoder whose forward returns next-token logits."""
    from finegrain.models.hf import HFAdapter

    return isinstance(adapter, HFAdapter) and adapter.kind == "decoder" and getattr(adapter, "task", "") == "causal-lm"


def uses_sequence_logprob(adapter: ModelAdapter) -> bool:
    """Adapters (the char LSTM) that score continuations themselves."""
    return not is_hf_causal(adapter) and callable(getattr(adapter, "sequence_logprob", None))


# ---------------------------------------------------------------------------------------------
@dataclass
class ContinuationBatch:
    """Prefix+continuation rows tokenised jointly; ``targets[b]`` = [(position, token id)] of the
    continuation tokens of row ``b`` (predicted from the logits at ``position - 1``)."""

    batch: Batch
    targets: list[list[tuple[int, int]]]
    prefix_lens: list[int]  # number of tokens before the first continuation token
    offsets: list[list[tuple[int, int]]] | None = None  # character span of each token

    def __len__(self) -> int:
        return len(self.targets)


def encode_continuations(adapter: ModelAdapter, prefixes: Sequence[str], continuations: Sequence[str]
                         ) -> ContinuationBatch:
    """Tokenise ``prefix + continuation`` jointly (so BPE merges are those of running text) and
    find the continuation's tokens through character offsets."""
    if not is_hf_causal(adapter):
        raise ModelError(f"{adapter.name}: continuation scoring needs a causal LM (task='causal-lm')")
    if len(prefixes) != len(continuations):
        raise ModelError("prefixes and continuations differ in length")
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
            raise ModelError(f"continuation {continuations[b]!r} produced no tokens after {p!r}")
        first = tgt[0][0]
        if offs[first][0] < cut:
            log.warning("a token straddles the prefix/continuation boundary in %r; it is scored as "
                        "part of the continuation", texts[b])
        if first == 0:
            raise ModelError(f"empty prefix for {texts[b]!r}: the first token has no context")
        targets.append(tgt)
        prefix_lens.append(first)
    inputs = {"input_ids": ids, "attention_mask": mask}
    batch = Batch(inputs, [[None] * ids.shape[1] for _ in texts], [0] * len(texts), mask,
                  [tok.convert_ids_to_tokens(r) for r in ids.tolist()]).to(adapter.device)
    offsets = [[tuple(o) for o in row] for row in enc["offset_mapping"].tolist()]
    return ContinuationBatch(batch, targets, prefix_lens, offsets)


def logits_of(adapter: ModelAdapter, output) -> torch.Tensor:
    return adapter.score_fn(output)


def continuation_scores(adapter: ModelAdapter, cb: ContinuationBatch, output=None) -> torch.Tensor:
    """Sum of continuation token log-probabilities per row (``[B]``)."""
    if output is None:
        with torch.no_grad():
            output = adapter.forward(cb.batch)
    logp = torch.log_softmax(logits_of(adapter, output).float(), -1)
    rows, pos, ids = [], [], []
    for b, tgt in enumerate(cb.targets):
        for t, i in tgt:
            rows.append(b)
            pos.append(t - 1)
            ids.append(i)
    dev = logp.device
    vals = logp[torch.tensor(rows, device=dev), torch.tensor(pos, device=dev), torch.tensor(ids, device=dev)]
    out = torch.zeros(len(cb.targets), dtype=vals.dtype, device=dev)
    return out.index_add(0, torch.tensor(rows, device=dev), vals)


def continuation_logprobs(adapter: ModelAdapter, prefixes: Sequence[str], continuations: Sequence[str],
                          batch_size: int = 64) -> np.ndarray:
    """``log p(continuation | prefix)`` for many pairs: a sum over the continuation's tokens for
    HF causal LMs; delegated to ``adapter.sequence_logprob`` (e.g. a product over characters for
    the char LSTM) when the adapter has it."""
    if uses_sequence_logprob(adapter):
        with torch.no_grad():
            return np.array([float(adapter.sequence_logprob(p, c)) for p, c in zip(prefixes, continuations)])
    out = []
    for i in range(0, len(prefixes), batch_size):
        cb = encode_continuations(adapter, prefixes[i:i + batch_size], continuations[i:i + batch_size])
        out.append(continuation_scores(adapter, cb).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def continuation_logprob(adapter: ModelAdapter, prefix: str, continuation: str) -> float:
    """``log p(continuation | prefix)`` (see :func:`continuation_logprobs`). The continuation
    carries its own leading space, e.g. ``("The nurse said that", " she")``."""
    return float(continuation_logprobs(adapter, [prefix], [continuation])[0])


# ---------------------------------------------------------------------------------------------
def repeat_batch(batch: Batch, n: int) -> Batch:
    """``n`` stacked copies of a batch (copy ``c`` holds rows ``c*B .. c*B+B-1``)."""
    def rep(v):
        return v.repeat(n, *([1] * (v.dim() - 1))) if torch.is_tensor(v) else v

    return Batch({k: rep(v) for k, v in batch.inputs.items()}, batch.word_ids * n, batch.n_words * n,
                 rep(batch.attention_mask), batch.tokens * n)


class Objective:
    """A fixed evaluation of the model's own output.

    ``batch`` is run through the model; ``row_scores(output)`` gives one number per row;
    ``reduce(rows)`` turns the rows of one copy into the score. ``higher_is_better`` says which
    way a drop goes. Calling the objective evaluates it (edits active if inside intervene).
    """

    name = "score"
    higher_is_better = True
    batch: Batch

    def row_scores(self, adapter: ModelAdapter, output) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, rows: torch.Tensor) -> float:
        return float(rows.float().mean())

    def batched(self, adapter: ModelAdapter) -> bool:
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
        if not (is_hf_causal(adapter) or adapter.kind == "lstm"):
            raise ModelError("LMLoss needs a causal LM (HF decoder with task='causal-lm', or an LSTM LM)")
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
            raise ModelError(f"{len(texts)} texts but {len(labels)} labels")
        l2i = getattr(getattr(adapter, "config", None), "label2id", None) or {}
        ys = []
        for y in labels:
            if isinstance(y, str) and not y.lstrip("-").isdigit():
                if y not in l2i:
                    raise ModelError(f"label {y!r} not in the model's label2id {l2i}")
                y = l2i[y]
            ys.append(int(y))
        self.batch = adapter.encode([t.split() if isinstance(t, str) else list(t) for t in texts])
        self.labels = torch.tensor(ys)

    def row_scores(self, adapter, output):
        logits = logits_of(adapter, output)
        if logits.dim() != 2:
            raise ModelError("Accuracy needs sequence-level logits [batch, classes]")
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
    p(correct) > p(wrong) at the verb; ``"margin"`` = mean log p(correct) − log p(wrong)."""

    name = "agreement"

    def __init__(self, adapter: ModelAdapter, pairs, measure: str = "accuracy"):
        if measure not in ("accuracy", "margin"):
            raise ModelError(f"measure must be 'accuracy' or 'margin', got {measure!r}")
        self.pairs = as_pairs(pairs)
        if not self.pairs:
            raise ModelError("no agreement pairs")
        self.measure = measure
        self.name = f"agreement_{measure}"
        self.cb = None
        if is_hf_causal(adapter):
            pre = [p.prefix for p in self.pairs]
            self.cb = encode_continuations(adapter, pre + pre, [p.correct for p in self.pairs] +
                                           [p.wrong for p in self.pairs])
            self.batch = self.cb.batch
        elif not uses_sequence_logprob(adapter):
            raise ModelError(f"{adapter.name}: agreement needs a causal LM or an adapter with sequence_logprob")

    def batched(self, adapter):
        return self.cb is not None

    def row_scores(self, adapter, output):
        return _copywise_scores(adapter, self.cb, output)

    def margins_from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        n = len(self.pairs)
        return rows[:n] - rows[n:2 * n]

    def reduce(self, rows):
        m = self.margins_from_rows(rows)
        return float((m > 0).float().mean()) if self.measure == "accuracy" else float(m.mean())

    def margins(self, adapter: ModelAdapter) -> np.ndarray:
        if self.cb is None:
            c = continuation_logprobs(adapter, [p.prefix for p in self.pairs], [p.correct for p in self.pairs])
            w = continuation_logprobs(adapter, [p.prefix for p in self.pairs], [p.wrong for p in self.pairs])
            return c - w
        with torch.no_grad():
            out = adapter.forward(self.batch)
        return self.margins_from_rows(self.row_scores(adapter, out)).cpu().numpy()

    def __call__(self, adapter):
        m = self.margins(adapter)
        return float((m > 0).mean()) if self.measure == "accuracy" else float(m.mean())


def _copywise_scores(adapter, cb: ContinuationBatch, output) -> torch.Tensor:
    """Continuation scores for a batch that may be ``n`` stacked copies of ``cb``."""
    logits = logits_of(adapter, output)
    n = logits.shape[0] // len(cb)
    if n == 1:
        return continuation_scores(adapter, cb, output)
    expanded = ContinuationBatch(cb.batch, cb.targets * n, cb.prefix_lens * n)
    return continuation_scores(adapter, expanded, output)


def agreement_margins(adapter: ModelAdapter, pairs) -> np.ndarray:
    """log p(correct) − log p(wrong) at the verb for each pair."""
    return Agreement(adapter, pairs).margins(adapter)


def agreement_accuracy(adapter: ModelAdapter, pairs, by_condition: bool = False):
    """Share of minimal pairs with p(correct) > p(wrong) (Lakretz et al. 2019). With
    ``by_condition`` a ``{condition: accuracy}`` dict (plus ``"all"``)."""
    pairs = as_pairs(pairs)
    m = agreement_margins(adapter, pairs)
    if not by_condition:
        return float((m > 0).mean())
    out = {"all": float((m > 0).mean())}
    conds = np.array([p.condition for p in pairs])
    for c in dict.fromkeys(conds.tolist()):
        out[c] = float((m[conds == c] > 0).mean())
    return out


_NOUNS = [("key", "keys"), ("dog", "dogs"), ("author", "authors"), ("boy", "boys"), ("farmer", "farmers"),
          ("teacher", "teachers"), ("cat", "cats"), ("pilot", "pilots")]
_ATTRACTORS = [("cabinet", "cabinets"), ("table", "tables"), ("house", "houses"), ("park", "parks")]
_VERBS = [("is", "are"), ("was", "were"), ("runs", "run"), ("has", "have")]


def simple_agreement_pairs(n: int = 64, attractors: bool = True, seed: int = 0) -> list[AgreementPair]:
    """Small generated singular/plural minimal pairs, with and without an attractor noun
    ("The key to the cabinets" + " is" vs " are"). The full generator lives in
    ``finegrain.data.generate`` when installed; this fallback keeps tests self-contained."""
    try:  # the data helper's generator, when present
        from finegrain.data.generate import agreement_pairs  # type: ignore

        return as_pairs(agreement_pairs(n=n, attractors=attractors, seed=seed))
    except (ImportError, TypeError, AttributeError):
        pass
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sg, pl = _NOUNS[rng.integers(len(_NOUNS))]
        v_sg, v_pl = _VERBS[rng.integers(len(_VERBS))]
        plural = bool(i % 2)
        subj = pl if plural else sg
        good, bad = (v_pl, v_sg) if plural else (v_sg, v_pl)
        if attractors and (i // 2) % 2:
            a_sg, a_pl = _ATTRACTORS[rng.integers(len(_ATTRACTORS))]
            attr_plural = not plural
            prefix = f"The {subj} near the {a_pl if attr_plural else a_sg}"
            cond = "attractor-" + ("ps" if plural else "sp")
        else:
            prefix = f"The {subj}"
            cond = "simple"
        out.append(AgreementPair(prefix, " " + good, " " + bad, cond))
    return out
