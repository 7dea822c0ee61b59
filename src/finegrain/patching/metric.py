"""The metric that activation patching measures: a logit difference, a logit, a probability or a
log-probability of a target token (language models) or class (classifiers), read from the model's own
output (Heimersheim & Nanda 2024, "How to use and interpret activation patching", recommend the logit
difference: it is linear in the residual stream's last layer and not saturated like a probability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from finegrain.attribute.targets import class_labels
from finegrain.errors import ModelError, ParameterError
from finegrain.models.base import Batch, ModelAdapter

MEASURES = ("logit_diff", "logit", "prob", "logprob")


def vocab_id(adapter: ModelAdapter, token: str | int) -> int:
    """The id of a vocabulary item of any adapter (HF tokenizers and LSTM vocabularies)."""
    if hasattr(adapter, "token_id"):
        return int(adapter.token_id(token))
    if isinstance(token, int) and not isinstance(token, bool):
        return int(token)
    if hasattr(adapter, "token_ids"):
        try:
            return int(adapter.token_ids([token])[0])
        except ModelError as e:
            raise ParameterError(str(e)) from None
    raise ParameterError(f"{adapter.name} cannot look up the token {token!r}; pass its id")


def token_text(adapter: ModelAdapter, token_id: int) -> str:
    """Display text of a vocabulary id."""
    if hasattr(adapter, "token_str"):
        return adapter.token_str(token_id)
    itos = getattr(adapter, "itos", None)
    return itos[token_id] if itos is not None and 0 <= token_id < len(itos) else str(token_id)


def read_position(adapter: ModelAdapter, batch: Batch, position: int | None = None, strict: bool = False) -> int:
    """The token position of a per-token output to read in row 0 of ``batch``: ``position`` (negative counts
    from the end), else the mask token of a masked LM, else the last real token (the next-token prediction
    of causal LMs and LSTMs). ``strict``: an encoder input without a mask token needs an explicit position."""
    T = int(batch.attention_mask[0].sum())
    if position is not None:
        if not -T <= position < T:
            raise ParameterError(f"position {position} out of range for {T} tokens")
        return position % T
    if adapter.kind == "encoder":
        mask_id = getattr(adapter.tokenizer, "mask_token_id", None)
        ids = batch.inputs["input_ids"][0].tolist()
        if mask_id is not None and mask_id in ids:
            return ids.index(mask_id)
        if strict:
            raise ParameterError("the model predicts every token: give position= (or put the mask token in the "
                                 "input of a masked LM)")
    return T - 1


def output_logits(adapter: ModelAdapter, output) -> torch.Tensor:
    """The logits of a model's head; a bare encoder (no head) has none to patch towards."""
    logits = getattr(output, "logits", None)
    if logits is None:
        raise ModelError(
            f"{adapter.name} has no head with logits (task {getattr(adapter, 'task', '?')}); load it with a "
            "task such as causal-lm, masked-lm or sequence-classification"
        )
    return logits


@dataclass
class PatchMetric:
    """``measure`` of ``target`` (minus ``against`` for ``logit_diff``) at one output position.

    ``target`` / ``against`` are vocabulary items (strings, see :meth:`HFAdapter.token_id`, or ids) for
    outputs ``[batch, tokens, vocab]``, and class indices or label names for classifiers ``[batch, classes]``.
    ``position`` is the token position read from per-token outputs; ``None`` means the last token for
    causal LMs and LSTMs (the next-token prediction) and the ``[MASK]`` token for masked LMs.
    ``measure="auto"`` is ``logit_diff`` when ``against`` is given, else ``logit``.
    """

    target: str | int
    against: str | int | None = None
    measure: str = "auto"
    position: int | None = None

    def __post_init__(self) -> None:
        if self.measure == "auto":
            self.measure = "logit_diff" if self.against is not None else "logit"
        if self.measure not in MEASURES:
            raise ParameterError(f"measure must be one of {', '.join(MEASURES)} or 'auto', got {self.measure!r}")
        if self.measure == "logit_diff" and self.against is None:
            raise ParameterError("measure 'logit_diff' needs against= (the token or class to subtract)")

    def bind(self, adapter: ModelAdapter, batch: Batch, output) -> BoundMetric:
        """Resolve ids and the position on ``batch`` (one row) and its ``output``."""
        logits = output_logits(adapter, output)
        pos = None
        per_token = logits.dim() == 3
        if per_token:
            pos = read_position(adapter, batch, self.position, strict=True)
        if per_token and getattr(adapter, "task", "") != "token-classification":
            target, against = vocab_id(adapter, self.target), self._opt(vocab_id, adapter, self.against)
            names = [token_text(adapter, target)] + ([] if against is None else [token_text(adapter, against)])
        elif logits.dim() in (2, 3):
            target, against = _class_id(adapter, self.target), self._opt(_class_id, adapter, self.against)
            names = [_class_name(adapter, target)] + ([] if against is None else [_class_name(adapter, against)])
        else:
            raise ModelError(f"cannot read a metric from logits of shape {tuple(logits.shape)}")
        n = logits.shape[-1]
        for i in (target, against):
            if i is not None and not 0 <= i < n:
                raise ParameterError(f"id {i} out of range: the model's output has {n} entries")
        return BoundMetric(self.measure, target, against, pos, names)

    @staticmethod
    def _opt(fn: Callable, adapter, value):
        return None if value is None else fn(adapter, value)


@dataclass
class BoundMetric:
    """A :class:`PatchMetric` with ids and position resolved: ``metric(logits) -> [rows]``."""

    measure: str
    target: int
    against: int | None
    position: int | None
    names: list[str]

    @property
    def name(self) -> str:
        t = repr(self.names[0])
        where = f" @{self.position}" if self.position is not None else ""
        if self.measure == "logit_diff":
            return f"logit({t}) - logit({self.names[1]!r}){where}"
        return f"{self.measure}({t}){where}"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        lg = logits[:, self.position] if self.position is not None else logits
        lg = lg.double()
        if self.measure == "prob":
            return torch.softmax(lg, -1)[:, self.target]
        if self.measure == "logprob":
            return torch.log_softmax(lg, -1)[:, self.target]
        if self.measure == "logit_diff":
            return lg[:, self.target] - lg[:, self.against]
        return lg[:, self.target]


def _class_id(adapter: ModelAdapter, label: str | int) -> int:
    if isinstance(label, int) and not isinstance(label, bool):
        return int(label)
    names = class_labels(adapter) or []  # a trained head's names (train_head), else the config's
    if label in names:
        return names.index(label)
    l2i = getattr(getattr(adapter, "config", None), "label2id", None) or {}
    if label in l2i:
        return int(l2i[label])
    if isinstance(label, str) and label.lstrip("-").isdigit():
        return int(label)
    known = names or sorted(l2i)
    raise ParameterError(f"class {label!r} is not a label of {adapter.name} (labels: {known or 'none'})")


def _class_name(adapter: ModelAdapter, i: int) -> str:
    names = class_labels(adapter) or []
    if 0 <= i < len(names):
        return names[i]
    i2l = getattr(getattr(adapter, "config", None), "id2label", None) or {}
    return str(i2l.get(i, i))
