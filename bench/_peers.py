"""The baselines and peers of the extraction benchmark, shared by ``run.py`` (in process) and ``_jobs.py``
(fresh processes): the bare batched forward a user would write, with the same kernels as finegrain or
without, and nnsight's ``.save()`` of every hidden state.

Both take the model and tokenizer of a finegrain adapter (``adapter.model``, ``adapter.tokenizer``), so
that every variant runs the same weights; nnsight wraps that module (``nnsight.NNsight``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence

import torch


def sorted_batches(tok, sentences: Sequence[Sequence[str]], batch_size: int) -> list[list[str]]:
    """The texts in batches of ``batch_size``, sorted by token count (what anyone batching inference does:
    padding is wasted compute)."""
    texts = [" ".join(ws) for ws in sentences]
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    return [[texts[j] for j in order[i : i + batch_size]] for i in range(0, len(order), batch_size)]


def _kernels(hf, onednn: bool, precision: str):
    """The forward's context: finegrain's oneDNN linears (float32) and/or autocast (mixed precision)."""
    from finegrain.models.kernels import onednn_linears

    stack = contextlib.ExitStack()
    if onednn and precision == "float32":
        stack.enter_context(onednn_linears(hf))
    if precision != "float32":
        # one autocast region for the whole run: its cache of low-precision weights is reused by every batch
        stack.enter_context(torch.autocast("cpu", dtype=getattr(torch, precision)))
    return stack


def bare_forward(hf, tok, sentences: Sequence[Sequence[str]], batch_size: int = 32, onednn: bool = False,
                 precision: str = "float32") -> float:
    """Seconds of the bare baseline: tokenise, sort by length, ``hf(**batch, output_hidden_states=True)``
    per batch under ``inference_mode``, outputs discarded. ``onednn``: with the oneDNN linear kernels that
    finegrain's float32 extraction uses; ``precision="bfloat16"``: under autocast, as finegrain's."""
    os.sync()  # no write-back of earlier stores during the clock (finegrain's runs start the same way)
    t = time.perf_counter()
    batches = sorted_batches(tok, sentences, batch_size)
    with torch.inference_mode(), _kernels(hf, onednn, precision):
        for texts in batches:
            hf(**tok(texts, padding=True, return_tensors="pt"), output_hidden_states=True)
    return time.perf_counter() - t


def nnsight_model(hf):
    """``nnsight.NNsight`` around the module (warnings about submodules named ``output`` silenced: BERT has
    them, and nnsight serves them under another name)."""
    import warnings

    from nnsight import NNsight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NNsight(hf)


def nnsight_forward(model, hf, tok, sentences: Sequence[Sequence[str]], batch_size: int = 32,
                    precision: str = "float32") -> float:
    """Seconds of nnsight's idiom for "all hidden states": per batch one ``model.trace(**batch)`` that
    ``.save()``s the embeddings' output and every encoder layer's output (the 7 tensors of
    ``output_hidden_states``), then moves them to NumPy (a user keeps them); sorted batches as the bare
    forward. ``model``: :func:`nnsight_model` of ``hf``. No word alignment, no store: a peer's raw output."""
    os.sync()
    t = time.perf_counter()
    batches = sorted_batches(tok, sentences, batch_size)
    with torch.inference_mode(), _kernels(hf, False, precision):
        for texts in batches:
            saved = []
            with model.trace(**tok(texts, padding=True, return_tensors="pt")):
                saved.append(model.embeddings.output.save())
                for layer in model.encoder.layer:
                    saved.append(layer.output.save())
            for h in saved:
                h = h[0] if isinstance(h, tuple) else h
                h.float().numpy()
    return time.perf_counter() - t
