"""A small classification head on a frozen encoder, so that a bare encoder (the embedded MiniLM)
has a class logit to explain.

``train_head("minilm", "builtin:sentiment")`` fits a ``torch.nn.Linear`` on mean-pooled last
hidden states (the encoder stays frozen; features are computed once, so training takes seconds on
CPU) and returns an :class:`~finegrain.models.hf.HFAdapter` whose output has ``.logits``: gradients
flow from the head through the encoder, so every attribution method works on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finegrain.data.generate import sentiment_corpus
from finegrain.errors import ParameterError
from finegrain.models import load_model
from finegrain.models.base import ModelAdapter, ModelError, preserved_state
from finegrain.models.hf import HFAdapter

_POS = ["great", "wonderful", "excellent", "delightful", "brilliant", "superb", "lovely", "fantastic", "charming",
        "enjoyable", "moving", "beautiful", "funny", "touching", "amazing", "pleasant", "outstanding", "terrific"]
_NEG = ["terrible", "awful", "boring", "dreadful", "horrible", "dull", "painful", "disappointing", "bad", "poor",
        "annoying", "stupid", "tedious", "ugly", "mediocre", "unpleasant", "pathetic", "lousy"]
_NOUNS = ["movie", "film", "book", "meal", "concert", "show", "story", "performance", "album", "game", "trip", "play"]
_TEMPLATES = ["the {n} was {a} .", "what a {a} {n} !", "i thought the {n} was really {a} .", "this {n} is {a} .",
              "honestly , a {a} {n} .", "the whole {n} felt {a} to me .", "we found the {n} {a} ."]


def builtin_sentiment(seed: int = 0, n: int = 400) -> list[tuple[str, int]]:
    """A small template sentiment corpus written inline: ``[(sentence, label)]``, 1 = positive."""
    out = []
    for label, adjs in ((1, _POS), (0, _NEG)):
        for a in adjs:
            for n_ in _NOUNS:
                for t in _TEMPLATES:
                    out.append((t.format(a=a, n=n_), label))
    rng = random.Random(seed)
    rng.shuffle(out)
    return out[:n]


def generated_sentiment(seed: int = 0, n: int = 1000) -> list[tuple[str, int]]:
    """The sentiment corpus of :mod:`finegrain.data.generate` (with negation; harder)."""
    corpus = sentiment_corpus(n_sentences=n, seed=seed)
    return [(" ".join(s.words), int(s.sent_labels["sentiment"] == "pos")) for s in corpus.sentences]


TASKS = {"builtin:sentiment": (builtin_sentiment, ["negative", "positive"]),
         "builtin:sentiment-generated": (generated_sentiment, ["negative", "positive"])}


@dataclass
class HeadOutput:
    logits: torch.Tensor
    last_hidden_state: torch.Tensor


class PooledHead(nn.Module):
    """encoder → mean pooling over real tokens → Linear. Exposes the encoder's config, blocks and
    input embeddings, so :class:`HFAdapter` wraps it like any transformers model."""

    def __init__(self, encoder: nn.Module, n_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        with torch.random.fork_rng(devices=[]):  # nn.Linear draws its init from the global generator
            self.head = nn.Linear(int(encoder.config.hidden_size), n_classes)
        if generator is not None:  # nn.Linear's own initialisation, from a local generator
            bound = 1.0 / float(encoder.config.hidden_size) ** 0.5
            with torch.no_grad():
                self.head.weight.uniform_(-bound, bound, generator=generator)
                self.head.bias.uniform_(-bound, bound, generator=generator)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kw):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kw)
        h = out.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(h.shape[:2], device=h.device)
        m = attention_mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return HeadOutput(self.head(pooled), h)


def _base(adapter: ModelAdapter | str, device) -> ModelAdapter:
    if isinstance(adapter, str):
        return load_model(adapter, device=device)
    return adapter


def _wrap(base: ModelAdapter, head_model: PooledHead, name: str):
    ad = HFAdapter(head_model, base.tokenizer, name=name, device=base.device, task="sequence-classification")
    return ad


@torch.no_grad()
def _pooled(base: ModelAdapter, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    feats = []
    for s in range(0, len(texts), batch_size):
        b = base.encode([t.split() for t in texts[s : s + batch_size]])
        h = base.forward(b).last_hidden_state
        m = b.attention_mask.to(h.dtype).unsqueeze(-1)
        feats.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    return torch.cat(feats)


def train_head(
    adapter: ModelAdapter | str = "minilm",
    task: str = "builtin:sentiment",
    epochs: int = 200,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    test_fraction: float = 0.25,
    seed: int = 0,
    device: str = "cpu",
    save: str | Path | None = None,
    data: list[tuple[str, int]] | None = None,
    labels: list[str] | None = None,
) -> ModelAdapter:
    """Train a linear head on the frozen encoder's mean-pooled states; returns an adapter whose
    output ``.logits`` are the head's class logits. ``adapter.head_info`` holds the task, labels and
    held-out accuracy (the labels name the classes in attribution results). ``data`` overrides the
    task with ``[(sentence, label)]`` (labels ``0..C-1``; ``labels`` names them). All randomness comes
    from ``seed`` (a local generator); the encoder is handed back in the mode it had."""
    base = _base(adapter, device)
    if data is None:
        if task not in TASKS:
            raise ParameterError(f"unknown head task {task!r}; built-in tasks: {', '.join(TASKS)}")
        make, task_labels = TASKS[task]
        data = make(seed=seed)
        labels = list(labels) if labels is not None else task_labels
    else:
        classes = sorted({y for _, y in data})
        if classes != list(range(len(classes))):
            raise ParameterError(f"head labels must be 0..C-1, got {classes[:10]}")
        labels = list(labels) if labels is not None else [str(i) for i in classes]
    if getattr(base.model.config, "hidden_size", None) is None:
        raise ModelError("train_head needs a transformers encoder with config.hidden_size")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    n_test = int(len(data) * test_fraction)
    test, train = [data[i] for i in perm[:n_test]], [data[i] for i in perm[n_test:]]
    with preserved_state(base.model):
        base.model.eval()
        Xtr, ytr = _pooled(base, [t for t, _ in train]), torch.tensor([y for _, y in train])
    model = PooledHead(base.model, len(labels), generator=torch.Generator().manual_seed(seed))
    head = model.head.float().cpu()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head((Xtr - mu) / sd), ytr)
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the linear layer
        w = head.weight / sd
        head.bias -= (w * mu).sum(1)
        head.weight.copy_(w)
    model.head = head.to(base.device)
    ad = _wrap(base, model, f"{base.name}+{task}")
    acc = None
    if test:
        with preserved_state(base.model):
            base.model.eval()
            Xte = _pooled(base, [t for t, _ in test]).to(base.device)
        with torch.no_grad():
            acc = float((model.head(Xte).argmax(1).cpu() == torch.tensor([y for _, y in test])).float().mean())
    ad.head_info = {"task": task, "labels": labels, "accuracy": acc, "n_train": len(train), "n_test": len(test)}
    if save is not None:
        save_head(ad, save)
    return ad


def save_head(adapter: ModelAdapter, path: str | Path) -> Path:
    """Save the head's state_dict and metadata (the encoder is not saved)."""
    path = Path(path)
    if not isinstance(getattr(adapter, "model", None), PooledHead):
        raise ParameterError(f"{getattr(adapter, 'name', adapter)} is not a head adapter from train_head")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"head": adapter.model.head.state_dict(), "info": getattr(adapter, "head_info", {})}, tmp)
    tmp.replace(path)  # never a half-written head file
    return path


def load_head(path: str | Path, adapter: ModelAdapter | str = "minilm", device: str = "cpu") -> ModelAdapter:
    """Rebuild a head adapter from :func:`save_head` output on top of ``adapter``."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"head file {path} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    base = _base(adapter, device)
    n_classes = blob["head"]["weight"].shape[0]
    model = PooledHead(base.model, n_classes)
    model.head.load_state_dict(blob["head"])
    model.head.to(base.device)
    ad = _wrap(base, model, f"{base.name}+{blob['info'].get('task', 'head')}")
    ad.head_info = blob["info"]
    return ad


def head_adapter(spec: str, adapter: ModelAdapter | str = "minilm", cache_dir: str | Path | None = None,
                 device: str = "cpu") -> ModelAdapter:
    """``--head`` CLI value: a ``.pt`` file from :func:`save_head` or a built-in task name, trained on
    the fly. ``cache_dir`` (default ``None``: nothing is written, the head is trained in memory each
    time) keeps trained heads as ``<model>-<task>.pt`` in that directory for later calls."""
    if spec.endswith(".pt"):
        if not Path(spec).exists():
            raise ParameterError(f"head file {spec} does not exist")
        return load_head(spec, adapter, device)
    if spec not in TASKS:
        raise ParameterError(f"unknown head {spec!r}: a saved head .pt file or one of {', '.join(TASKS)}")
    if cache_dir is not None:
        name = getattr(adapter, "name", adapter) if not isinstance(adapter, str) else adapter
        p = Path(cache_dir) / f"{Path(str(name)).name}-{spec.replace(':', '_')}.pt"
        if p.exists():
            return load_head(p, adapter, device)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return train_head(adapter, spec, device=device, save=p)
    return train_head(adapter, spec, device=device)
