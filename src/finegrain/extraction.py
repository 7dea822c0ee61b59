"""Activation extraction into an on-disk store.

Sentences are processed in *buffers* (default 512 sentences): inside a buffer they are sorted by
length and batched (less padding), then the activations are written back in corpus order, so the
store's rows follow the corpus while memory stays one buffer whatever the corpus size. A buffer is
the unit of resumption: an interrupted run restarts at the first unwritten buffer.

Subword tokens are aggregated to words (``first``/``last``/``mean``) through the tokenizer's own
word alignment (``word_ids``), so any tokenizer (WordPiece, byte-level BPE, SentencePiece) is
handled without string matching; ``aggregation="token"`` keeps one row per model token instead (one
per character, spaces included, for character models). Sentences longer than the model's maximum
length are split into consecutive windows of whole words, measured as the tokenizer encodes them in
running text; nothing is truncated silently.

A word that produces no model token (e.g. only zero-width spaces, which BERT's normaliser removes) has
a row of zeros: the store keeps one row per word so that rows stay aligned with the corpus and its
labels, a warning names how many, and the store's metadata records them (``tokenless_words``,
``tokenless_rows``) so that analyses can leave them out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

import finegrain
from finegrain.data import as_corpus
from finegrain.data.corpus import Corpus
from finegrain.errors import CorpusError, ParameterError
from finegrain.models.base import Batch, ModelAdapter, ModelError, preserved_state
from finegrain.models.kernels import onednn_linears
from finegrain.models.seq2seq import Seq2SeqAdapter, word_lists
from finegrain.neurons import parse_neurons
from finegrain.store import ActivationStore, StoreWriter

log = logging.getLogger(__name__)

AGGREGATIONS = ("first", "last", "mean", "token")
TOKENLESS_ROWS_KEPT = 1000  # rows of tokenless words listed in the metadata (their count is always there)
POOLINGS = ("cls", "mean", "last")
SOURCE_COLUMN = "source"  # the corpus's sentence-level column of sources (decoder side of an encoder-decoder)
PRECISIONS = ("float32", "bfloat16", "float16")
DTYPES = ("auto", "float32", "float16")
AUTO_FLOAT16_BYTES = 2 << 30  # dtype="auto": float16 once a float32 store would pass 2 GiB


@dataclass
class _Unit:
    """A piece of a sentence small enough for the model: words[start:stop] of sentence ``sent``."""

    sent: int
    start: int
    stop: int
    n_tokens: int


def _fingerprint(model, corpus: Corpus, layers, aggregation, pooling, dtype, precision="float32", units=None) -> str:
    """``model`` is an adapter or its ``weights_hash()`` (distributed drivers do not load the model)."""
    h = hashlib.sha1()
    h.update((model if isinstance(model, str) else model.weights_hash()).encode())
    for s in corpus.sentences:
        h.update("\x1f".join(s.words).encode())
        h.update(b"\x1e")
    # float32 keeps the fingerprint of stores written before ``precision`` existed
    extra = ([] if precision == "float32" else [precision]) + ([units] if units else [])
    h.update(json.dumps([list(layers), aggregation, pooling, dtype] + extra).encode())
    return h.hexdigest()


def _plan_units(model: ModelAdapter, sentences: Sequence[Sequence[str]], max_tokens: int) -> list[_Unit]:
    """Split sentences into units that fit the model; measure token counts for length sorting.

    A sentence over ``max_tokens`` becomes consecutive windows of whole words, each checked with the
    tokenizer on exactly the text the model will see: a word's tokens depend on its context (byte-level
    BPE's leading-space token, SentencePiece's ``▁``, WordPiece's ``##`` continuation), so counting each
    word alone underestimates windows (27 words counted as 64 GPT-2 tokens were 75)."""
    units: list[_Unit] = []
    counter = getattr(model, "token_count", None)
    counts = model.token_counts(sentences) if hasattr(model, "token_counts") else None
    for i, words in enumerate(sentences):
        if counter is None:
            units.append(_Unit(i, 0, len(words), sum(len(w) + 1 for w in words)))
            continue
        n = counts[i] if counts is not None else counter(words)
        if n <= max_tokens:
            units.append(_Unit(i, 0, len(words), n))
            continue
        units.extend(_windows(model, counter, words, i, max_tokens))
        log.info("sentence %d (%d tokens) split into windows for max length %d", i, n, max_tokens)
    return units


def _windows(model, counter, words: Sequence[str], sent: int, max_tokens: int) -> list[_Unit]:
    """Windows of whole words of one sentence, each at most ``max_tokens`` tokens as encoded."""
    overhead = counter([])
    # a word's cost in running text: the tokens it adds after another word (one batched call), an
    # estimate for planning; every window is then measured exactly and shrunk or grown to fit
    probe = [["a", w] for w in words]
    base = counter(["a"])
    est = [c - base for c in (model.token_counts(probe) if hasattr(model, "token_counts")
                              else [counter(p) for p in probe])]
    units: list[_Unit] = []
    start = 0
    while start < len(words):
        stop, used = start, overhead
        while stop < len(words) and (stop == start or used + est[stop] <= max_tokens):
            used += est[stop]
            stop += 1
        real = counter(words[start:stop])
        while real > max_tokens and stop - start > 1:
            over = real - max_tokens
            avg = max(1.0, (real - overhead) / (stop - start))
            stop = max(start + 1, stop - max(1, int(-(-over // avg))))
            real = counter(words[start:stop])
        if real > max_tokens:
            raise ModelError(f"sentence {sent}: word {words[start]!r} alone is {real} tokens, over the model's "
                             f"maximum of {max_tokens}; finegrain windows sentences at word boundaries only")
        while stop < len(words):  # the estimate may have been pessimistic: take every word that fits
            nxt = counter(words[start : stop + 1])
            if nxt > max_tokens:
                break
            stop, real = stop + 1, nxt
        units.append(_Unit(sent, start, stop, real))
        start = stop
    return units


def _special_tokens(model: ModelAdapter) -> set[str]:
    """Token strings a token-level store leaves out: the tokenizer's special tokens (``[CLS]``,
    ``<|endoftext|>``, ...) and a character model's begin-of-text token. A special token typed in the
    text itself belongs to a word (its offsets say so) and is kept."""
    specials = set(getattr(getattr(model, "tokenizer", None), "all_special_tokens", None) or [])
    bos = getattr(model, "bos", None)
    if isinstance(bos, str):
        specials.add(bos)
    return specials


def _kept_tokens(batch: Batch, b: int, specials: set[str], mask: list[int]) -> list[int]:
    """Positions of sentence ``b`` that are rows of a token-level store: real tokens (attention mask 1)
    that belong to a word or are not special (spaces of character models, BPE's lone ``Ġ``)."""
    wid, toks = batch.word_ids[b], batch.tokens[b] if batch.tokens else None
    return [t for t, w in enumerate(wid)
            if mask[t] and (w is not None or toks is None or toks[t] not in specials)]


def _unit_token_rows(model: ModelAdapter, sentences, units: Sequence[_Unit], specials: set[str]) -> list[int]:
    """Rows of a token-level store of each unit: its token count less the special tokens the tokenizer
    adds (exact for tokenizers with ``token_count``), else counted from the encoding itself."""
    counter = getattr(model, "token_count", None)
    if counter is not None:
        overhead = counter([])
        return [u.n_tokens - overhead for u in units]
    out: list[int] = []
    for k0 in range(0, len(units), 64):
        group = units[k0 : k0 + 64]
        batch = model.encode([sentences[u.sent][u.start : u.stop] for u in group])
        mask = batch.attention_mask.tolist()
        out.extend(len(_kept_tokens(batch, b, specials, mask[b])) for b in range(len(group)))
    return out


def token_rows_per_sentence(model: ModelAdapter, sentences: Sequence[Sequence[str]], max_tokens: int) -> list[int]:
    """Rows of each sentence in a token-level store (``aggregation="token"``), windows included."""
    specials = _special_tokens(model)
    rows = [0] * len(sentences)
    for k0 in range(0, len(sentences), 512):
        part = sentences[k0 : k0 + 512]
        units = _plan_units(model, part, max_tokens)
        for u, r in zip(units, _unit_token_rows(model, part, units, specials)):
            rows[k0 + u.sent] += r
    return rows


def _token_map(batch: Batch, units: Sequence[_Unit], base_rows: Sequence[int], aggregation: str):
    """For a batch, ``(src, rows)``: token ``src[k]`` (a flat index into ``[B*T]``) is aggregated into
    buffer row ``rows[k]`` (``base_rows[b]``: the buffer row of the first word of unit ``b``'s sentence).
    For ``first``/``last`` one token per word is kept."""
    T = len(batch.word_ids[0])
    src: list[int] = []
    rows: list[int] = []
    for b, (u, base) in enumerate(zip(units, base_rows)):
        wid = batch.word_ids[b]
        r0 = base + u.start
        for t, w in enumerate(wid):
            if w is None:
                continue
            if aggregation == "first" and t > 0 and wid[t - 1] == w:
                continue
            if aggregation == "last" and t + 1 < len(wid) and wid[t + 1] == w:
                continue
            src.append(b * T + t)
            rows.append(r0 + w)
    # int64 even when empty: a batch whose words all tokenize to nothing has no (src, row) pair at all
    return np.asarray(src, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def _token_rows_map(batch: Batch, units: Sequence[_Unit], bases: Sequence[int], expected: Sequence[int],
                    specials: set[str]):
    """Token-level rows of a batch: ``(src, dest, words, tokens)`` with ``src`` flat token indices into
    ``[B*T]``, ``dest`` buffer rows, ``words`` the sentence word each token belongs to (a token of no
    word, such as a space, is given to the word after it, else the one before) and the token texts."""
    T = len(batch.word_ids[0])
    mask = batch.attention_mask.tolist()
    src: list[int] = []
    dest: list[int] = []
    words: list[int] = []
    tokens: list[str] = []
    for b, (u, base, n) in enumerate(zip(units, bases, expected)):
        keep = _kept_tokens(batch, b, specials, mask[b])
        if len(keep) != n:
            raise ModelError(f"sentence {u.sent}: {len(keep)} tokens encoded where {n} were planned; the "
                             f"model's token_count() disagrees with its encode()")
        wid = batch.word_ids[b]
        owner = [wid[t] for t in keep]
        nxt = None
        for j in range(len(owner) - 1, -1, -1):  # no word: the next word's
            if owner[j] is None:
                owner[j] = nxt
            else:
                nxt = owner[j]
        prev = None
        for j in range(len(owner)):  # trailing tokens of no word: the previous word's
            if owner[j] is None:
                owner[j] = prev
            prev = owner[j]
        src.extend(b * T + t for t in keep)
        dest.extend(range(base, base + len(keep)))
        words.extend(u.start + (w if w is not None else 0) for w in owner)
        toks = batch.tokens[b] if batch.tokens else [""] * T
        tokens.extend(str(toks[t]) for t in keep)
    return src, np.asarray(dest, dtype=np.int64), words, tokens


def _pool(act: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    m = mask.to(act.device).bool()
    if act.shape[1] != m.shape[1]:  # character LSTMs report per-step states: same length as mask
        raise ModelError("activation and attention mask lengths differ")
    if pooling == "mean":
        w = m.float()[..., None]
        return (act.float() * w).sum(1) / w.sum(1).clamp_min(1)
    idx = m.float().argmax(1) if pooling == "cls" else (m.shape[1] - 1 - m.flip(1).float().argmax(1))
    return act[torch.arange(act.shape[0], device=act.device), idx].float()


FORWARD_OVERHEAD_TOKENS = {"cpu": 48}  # a forward's fixed cost in tokens' worth of compute (others: 1024)


def forward_overhead_tokens(device) -> int:
    """The fixed cost of one forward pass (Python, kernel launches) in tokens' worth of compute, for
    :func:`length_batches`: measured for MiniLM on 2 CPU cores (~3-6 ms against ~0.1 ms per token);
    accelerators compute padding almost for free, so there batches are as full as allowed."""
    return FORWARD_OVERHEAD_TOKENS.get(torch.device(device).type, 1024)


def length_batches(lengths: Sequence[int], batch_size: int, overhead: float) -> list[tuple[int, int]]:
    """Cut units sorted by token count (``lengths``, ascending) into batches ``[a, b)`` of at most
    ``batch_size`` units that minimise the compute of the padded batches plus ``overhead`` per
    forward pass: ``sum((b - a) * lengths[b - 1] + overhead)``, by dynamic programming (O(n x batch_size)).

    Fixed batches of ``batch_size`` cut through groups of equal length and pad short sentences to long
    ones: within a buffer of 512 generated sentences that was ~6% more tokens than a sort of the whole
    corpus; the optimal cut is within ~2% of it (exact lengths bucketed, neighbours merged only where a
    further forward pass costs more than the padding)."""
    n, size = len(lengths), max(1, int(batch_size))
    best = [0.0] * (n + 1)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[j - 1]
        b_cost, b_cut = float("inf"), j - 1
        for i in range(max(0, j - size), j):
            c = best[i] + (j - i) * longest
            if c < b_cost:
                b_cost, b_cut = c, i
        best[j], cut[j] = b_cost + overhead, b_cut
    out, j = [], n
    while j:
        out.append((cut[j], j))
        j = cut[j]
    return out[::-1]


def model_facts(model: ModelAdapter, layers: Sequence[str] | str | None = "hidden") -> dict:
    """What planning an extraction needs from a model (picklable; computed where the model lives)."""
    if not isinstance(model, ModelAdapter):
        raise ModelError(f"extract() needs a finegrain model adapter (load_model), got {type(model).__name__}")
    layer_names = model.resolve_layers(layers)
    return {
        "layer_names": layer_names,
        "sizes": {lay: model.check_layer(lay) for lay in layer_names},
        "all_sizes": dict(model.layers()),
        "max_length": model.max_length,
        "name": model.name,
        "kind": model.kind,
        "weights_hash": model.weights_hash(),
    }


@dataclass
class ExtractionPlan:
    """Everything about an extraction except the model itself: shared by ``extract`` and the
    distributed engine (:mod:`finegrain.distributed`) so that both lay out the store identically."""

    layer_names: list[str]
    sizes: dict[str, int]
    level: str
    n_rows: int
    label_cols: list[str]
    max_tokens: int
    meta: dict
    rows_per_sent: np.ndarray
    sent_start: np.ndarray
    aggregation: str
    pooling: str | None
    dtype: str
    precision: str = "float32"
    units: dict[str, list[int]] = field(default_factory=dict)  # layers that keep only these units
    onednn: bool | None = None  # oneDNN linears for float32 on CPU (None: FINEGRAIN_ONEDNN, default on)

    def autocast(self, device: torch.device):
        """The forward's autocast context: mixed precision (bfloat16 / float16 matmuls, float32
        accumulation) when asked, else a no-op."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=getattr(torch, self.precision))

    def fast_linears(self, model: ModelAdapter, batch_size: int):
        """float32 on CPU: the model's linear layers through oneDNN (~1.2x faster forward, see
        ``models.kernels``); a driver opens it around its whole loop so that weights are packed once
        (the block inside :func:`compute_buffer` then leaves them as they are)."""
        enabled = False if self.precision != "float32" else self.onednn
        return onednn_linears(model.model, rows_hint=batch_size * 32, enabled=enabled)

    @property
    def np_dtype(self):
        return np.float16 if self.dtype == "float16" else np.float32

    @property
    def torch_dtype(self):
        return torch.float16 if self.dtype == "float16" else torch.float32


def plan_extraction(
    facts: dict, corpus: Corpus, aggregation: str = "mean", pooling: str | None = None, dtype: str = "float32",
    max_length: int | None = None, precision: str = "float32", neurons=None, rows_per_sent=None,
    onednn: bool | None = None,
) -> ExtractionPlan:
    """Validate the options and lay out the rows of the store (``facts`` from :func:`model_facts`).
    With ``neurons``, the store holds only those units (and their layers). ``rows_per_sent``: rows of
    each sentence of a token-level store (:func:`token_rows_per_sentence`; they depend on the tokenizer)."""
    _check_options(aggregation, pooling, precision, dtype)
    units: dict[str, list[int]] = {}
    if neurons is not None:
        layers, units = neuron_units(facts, neurons)
        facts = {**facts, "layer_names": layers, "sizes": {lay: facts["all_sizes"][lay] for lay in layers}}
    layer_names = list(facts["layer_names"])
    sizes = {lay: len(units[lay]) if lay in units else int(facts["sizes"][lay]) for lay in layer_names}
    tokens = aggregation == "token" and not pooling
    level = "sentence" if pooling else "token" if tokens else "word"
    if pooling:
        rows = np.ones(len(corpus), dtype=np.int64)
    elif tokens:
        if rows_per_sent is None or len(rows_per_sent) != len(corpus):
            raise ParameterError("a token-level store (aggregation='token') needs the tokenizer's rows per "
                                 "sentence (token_rows_per_sentence); extract() computes them")
        rows = np.asarray(rows_per_sent, dtype=np.int64)
    else:
        rows = np.array([len(s.words) for s in corpus.sentences], dtype=np.int64)
    n_rows = int(rows.sum())
    if dtype == "auto":  # float16 halves the disk and the reads; below the threshold exactness wins
        dtype = "float16" if n_rows * sum(sizes.values()) * 4 > AUTO_FLOAT16_BYTES else "float32"
    meta = {
        "model": facts["name"],
        "model_kind": facts["kind"],
        "weights_hash": facts["weights_hash"],
        "level": level,
        "aggregation": None if pooling else aggregation,
        "pooling": pooling,
        "n_sentences": len(corpus),
        "corpus": corpus.name,
        "finegrain_version": finegrain.__version__,
        "precision": precision,
        "fingerprint": _fingerprint(facts["weights_hash"], corpus, layer_names, aggregation, pooling, dtype,
                                    precision, units),
    }
    if units:
        meta["units"] = units
    if tokens:
        meta["index_columns"] = ["token_word"]
    return ExtractionPlan(
        layer_names=layer_names,
        sizes=sizes,
        level=level,
        n_rows=n_rows,
        label_cols=list(corpus.sentence_label_columns if pooling else corpus.label_columns),
        max_tokens=max_tokens(facts, max_length),
        meta=meta,
        rows_per_sent=rows,
        sent_start=np.concatenate([[0], np.cumsum(rows)]),
        aggregation=aggregation,
        pooling=pooling,
        dtype=dtype,
        precision=precision,
        units=units,
        onednn=onednn,
    )


def max_tokens(facts: dict, max_length: int | None = None) -> int:
    """The window budget: ``max_length`` if given, never more than the model's maximum."""
    return int(min(max_length or facts["max_length"], facts["max_length"]))


def neuron_units(facts: dict, neurons) -> tuple[list[str], dict[str, list[int]]]:
    """``(layers, {layer: sorted unit ids})`` of a neuron selection such as ``["layer.3:7", "layer.5:1"]``
    (or a comma-separated string), checked against the model's layer sizes (``facts``)."""
    try:
        ns = parse_neurons(neurons)
    except ValueError as e:
        raise ModelError(str(e)) from e
    if not ns:
        raise ModelError("neurons= selects no neuron")
    units: dict[str, set[int]] = {}
    for n in ns:
        if n.layer not in facts["all_sizes"]:
            raise ModelError(f"unknown layer {n.layer!r} in neuron {n}; available: {', '.join(facts['all_sizes'])}")
        if n.unit >= facts["all_sizes"][n.layer]:
            raise ModelError(f"neuron {n} out of range: {n.layer} has {facts['all_sizes'][n.layer]} units")
        units.setdefault(n.layer, set()).add(n.unit)
    return list(units), {lay: sorted(u) for lay, u in units.items()}


def _check_options(aggregation: str, pooling: str | None, precision: str, dtype: str = "auto") -> None:
    if dtype not in DTYPES:
        raise ParameterError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if aggregation not in AGGREGATIONS:
        raise ParameterError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if pooling is not None and pooling not in POOLINGS:
        raise ParameterError(f"pooling must be one of {POOLINGS} or None, got {pooling!r}")
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def compute_buffer(
    model: ModelAdapter, plan: ExtractionPlan, sentences: Sequence[Sequence[str]], batch_size: int = 32,
    on_sentences=None, extras: dict | None = None, sources: Sequence[Sequence[str]] | None = None,
    pool: BufferPool | None = None,
) -> dict[str, np.ndarray]:
    """Activations ``{layer: [rows, size]}`` of one buffer of sentences (word lists), rows in order.

    This is the one code path for every engine: the same buffer gives the same batches, hence the
    same values, whether it runs in ``extract`` or in a Ray actor. ``on_sentences(n)`` reports progress.
    ``extras`` (a dict, filled in): ``"tokenless"``, buffer rows of words that produced no token (their
    rows are zero); for token-level plans ``"token_word"`` (the word of each row) and ``"tokens"``.
    ``sources``: for a model that reads each sentence behind another one (the decoder side of an
    encoder-decoder, ``needs_sources``), that sentence, one per sentence of ``sentences``.

    Word rows are built in float32 straight in the buffer (a word's first token copied to its row, its
    other tokens added), then divided by their token counts once per buffer (``mean``): no per-batch
    output array, no scatter of it afterwards.
    ``pool``: the arrays are taken from it (reused memory) instead of allocated.
    """
    layer_names, sizes, pooling = plan.layer_names, plan.sizes, plan.pooling
    np_dtype, torch_dtype = plan.np_dtype, plan.torch_dtype
    token_level = plan.level == "token"
    word_level = not pooling and not token_level
    if sources is not None and len(sources) != len(sentences):
        raise ParameterError(f"{len(sources)} sources for {len(sentences)} sentences")
    units = _plan_units(model, sentences, plan.max_tokens)
    specials = _special_tokens(model) if token_level else set()
    unit_rows = _unit_token_rows(model, sentences, units, specials) if token_level else None
    if token_level:
        rows_per_sent = [0] * len(sentences)
        for u, r in zip(units, unit_rows):
            rows_per_sent[u.sent] += r
    else:
        rows_per_sent = [1 if pooling else len(w) for w in sentences]
    local_start = np.concatenate([[0], np.cumsum(rows_per_sent, dtype=np.int64)])
    n_buf = int(local_start[-1])
    # every row is written below, but for the rows of tokenless words, zeroed at the end
    buf = (pool.take(n_buf) if pool is not None else
           {lay: np.empty((n_buf, sizes[lay]), dtype=np.float32 if word_level else np_dtype) for lay in layer_names})
    sums = {lay: torch.from_numpy(buf[lay]) for lay in layer_names} if word_level else {}
    word_rows: list[np.ndarray] = []  # the buffer row of every aggregated token, for the counts
    unit_base = []  # token level: the first buffer row of each unit (windows of a sentence follow each other)
    if token_level:
        nxt = local_start[:-1].copy()
        for u, r in zip(units, unit_rows):
            unit_base.append(int(nxt[u.sent]))
            nxt[u.sent] += r
    token_word = np.zeros(n_buf, dtype=np.int64) if token_level else None
    tokens: list[str] = [""] * n_buf if token_level else []
    tokenless: list[int] = []
    order = sorted(range(len(units)), key=lambda k: units[k].n_tokens)
    groups = [order[a:b] for a, b in length_batches([units[k].n_tokens for k in order], batch_size,
                                                    forward_overhead_tokens(model.device))]
    pooled_parts: dict[int, list[dict[str, torch.Tensor]]] = {}
    keep = {lay: torch.as_tensor(u, device=model.device) for lay, u in plan.units.items()}
    # one autocast region for the whole buffer, so that its cache of low-precision weights is reused
    with plan.fast_linears(model, batch_size), plan.autocast(model.device):
        for ks in groups:
            group = [units[k] for k in ks]
            words = [sentences[u.sent][u.start : u.stop] for u in group]
            batch = (model.encode(words) if sources is None
                     else model.encode(words, sources=[sources[u.sent] for u in group]))
            with torch.inference_mode():
                _, cache = model.run_with_cache(batch, layer_names)
                for lay, idx in keep.items():
                    cache[lay] = cache[lay][..., idx]
                if word_level:
                    src, rows = _token_map(batch, group, [int(local_start[u.sent]) for u in group], plan.aggregation)
                    word_rows.append(rows)
                    # a word's first token is copied to its row, its other tokens (if any) added to it:
                    # index_copy_ is vectorised, index_add_ costs ~1 us a row on CPU, and most words are
                    # one token (a word's tokens are consecutive, so a row's first token starts its run)
                    first = np.ones(len(rows), dtype=bool)
                    first[1:] = rows[1:] != rows[:-1]
                    dev = cache[layer_names[0]].device
                    parts = [(torch.from_numpy(src[m]).to(dev), torch.from_numpy(rows[m]), add)
                             for m, add in ((first, False), (~first, True)) if m.any()]
                    for lay in layer_names:
                        flat = cache[lay].reshape(-1, cache[lay].shape[-1])
                        for src_t, rows_t, add in parts:
                            vals = flat.index_select(0, src_t).float().cpu()
                            (sums[lay].index_add_ if add else sums[lay].index_copy_)(0, rows_t, vals)
            if pooling:
                for lay in layer_names:
                    pooled = _pool(cache[lay], batch.attention_mask, pooling).cpu()
                    for b, u in enumerate(group):
                        pooled_parts.setdefault(u.sent, []).append({lay: pooled[b]})
            elif token_level:
                src, dest, tok_words, toks = _token_rows_map(batch, group, [unit_base[k] for k in ks],
                                                             [unit_rows[k] for k in ks], specials)
                token_word[dest] = tok_words
                for r, t in zip(dest.tolist(), toks):
                    tokens[r] = t
                idx = torch.as_tensor(src, dtype=torch.long, device=cache[layer_names[0]].device)
                for lay in layer_names:
                    flat = cache[lay].reshape(-1, cache[lay].shape[-1])
                    buf[lay][dest] = flat.index_select(0, idx).float().to(torch_dtype).cpu().numpy()
            del cache
            if on_sentences is not None:
                on_sentences(len({u.sent for u in group if u.stop == len(sentences[u.sent])}))
    if word_level:
        counts = np.bincount(np.concatenate(word_rows), minlength=n_buf) if word_rows else np.zeros(n_buf, np.int64)
        tokenless = np.flatnonzero(counts == 0).tolist()
        many = np.flatnonzero(counts > 1)
        for lay in layer_names:
            if tokenless:  # a word without a token keeps a row of zeros
                buf[lay][tokenless] = 0
            if plan.aggregation == "mean" and len(many):  # x / 1 is x: only rows of several tokens change
                buf[lay][many] /= counts[many, None].astype(np.float32)
            if np_dtype != np.float32:
                buf[lay] = buf[lay].astype(np_dtype)
    if pooling:
        for lay in layer_names:
            for i in range(len(sentences)):
                parts = [p[lay] for p in pooled_parts[i] if lay in p]
                # a sentence split into windows is pooled as the mean of its windows
                buf[lay][i] = torch.stack(parts).mean(0).numpy().astype(np_dtype)
    if tokenless:
        log.warning("%d word(s) produced no model token (e.g. buffer row %d); their rows are zero",
                    len(tokenless), tokenless[0])
    if extras is not None:
        extras["tokenless"] = sorted(tokenless)
        if token_level:
            extras["token_word"], extras["tokens"] = token_word, tokens
    return buf


class BufferPool:
    """The activation arrays of an extraction's buffers, reused once nothing refers to them any more.

    Fresh memory costs a page fault per 4 KiB page at first touch (in a virtual machine often more than
    the copy itself): a buffer of 512 sentences of MiniLM's 7 hidden states is ~45 MB, and allocating it
    anew for every buffer cost up to 0.1 s a buffer. A buffer is busy while the store writer still holds
    rows of it (being written, or the tail of an unfinished chunk): a set of arrays is taken again only
    when no view of it is left (NumPy views and ``torch.from_numpy`` keep a reference to the array they
    show), else a new set is made, so reuse never overwrites rows that are still to be written."""

    def __init__(self, plan: ExtractionPlan):
        self.sizes = {lay: plan.sizes[lay] for lay in plan.layer_names}
        # word rows are sums in float32 whatever is stored (see compute_buffer)
        self.dtype = np.float32 if plan.level == "word" else plan.np_dtype
        self.sets: list[dict[str, np.ndarray]] = []
        # an unused array's count, measured the same way (the interpreter's own references differ by version)
        self.unused = self._refs({"": np.zeros(0)})

    @staticmethod
    def _refs(arrays: dict[str, np.ndarray]) -> int:
        return max((sys.getrefcount(a) for a in arrays.values()), default=0)

    def take(self, n_rows: int) -> dict[str, np.ndarray]:
        """Arrays ``{layer: [n_rows, size]}`` (contents undefined), views of a free set, grown if too small."""
        arrays = next((a for a in self.sets if self._refs(a) <= self.unused), None)
        if arrays is None:
            arrays = {}
            self.sets.append(arrays)
        out = {}
        for lay, size in self.sizes.items():
            a = arrays.get(lay)
            if a is None or len(a) < n_rows:
                a = arrays[lay] = np.empty((n_rows, size), self.dtype)
            out[lay] = a[:n_rows]
        return out


def buffer_index(plan: ExtractionPlan, sents: Sequence, b0: int, extras: dict | None = None) -> dict:
    """Index columns (``sent_id``, ``word_pos``, ``words``, ``labels``; token level: ``extra``) of
    sentences ``b0..`` (token level: ``extras`` of :func:`compute_buffer` for those sentences)."""
    b1 = b0 + len(sents)
    label_cols = plan.label_cols
    if plan.pooling:
        return {
            "sent_id": np.arange(b0, b1),
            "word_pos": np.full(b1 - b0, -1),
            "words": [s.text for s in sents],
            "labels": {c: [s.sent_labels[c] for s in sents] for c in label_cols},
        }
    if plan.level == "token":
        if extras is None or "token_word" not in extras:
            raise ParameterError("a token-level buffer's index needs the extras of compute_buffer")
        counts = plan.rows_per_sent[b0:b1]
        sent_of_row = np.repeat(np.arange(len(sents)), counts)
        word = np.asarray(extras["token_word"], dtype=np.int64)
        return {
            "sent_id": sent_of_row + b0,
            # the token's position among its sentence's rows: (sent_id, word_pos) still indexes sentence()
            "word_pos": np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64),
            "words": list(extras["tokens"]),
            "labels": {c: [sents[i].labels[c][w] for i, w in zip(sent_of_row.tolist(), word.tolist())]
                       for c in label_cols},
            "extra": {"token_word": word},
        }
    return {
        "sent_id": np.repeat(np.arange(b0, b1), plan.rows_per_sent[b0:b1]),
        "word_pos": np.concatenate([np.arange(len(s.words)) for s in sents]),
        "words": [w for s in sents for w in s.words],
        "labels": {c: [lab for s in sents for lab in s.labels[c]] for c in label_cols},
    }


def _side_view(model: ModelAdapter, corpus: Corpus, side: str | None, sources, align: str, layers,
               neurons=None) -> ModelAdapter:
    """The adapter extraction runs: ``model`` itself, or for an encoder-decoder the view of one side
    (:meth:`~finegrain.models.seq2seq.Seq2SeqAdapter.side`) with the decoder's sources bound."""
    if not isinstance(model, Seq2SeqAdapter):
        if side is not None or sources is not None:
            raise ParameterError(f"side= and sources= are for encoder-decoder models; {model.name} is "
                                 f"{'an' if model.kind[:1] in 'aeiou' else 'a'} {model.kind}")
        return model
    if side is None:
        if neurons is not None:
            try:
                names = [n.layer for n in parse_neurons(neurons)]
            except ValueError as e:
                raise ModelError(str(e)) from e
        else:
            names = model.resolve_layers(layers) if layers not in (None, "hidden", "all") else ["enc", "dec"]
        on = {str(name).split(".", 1)[0] for name in names}
        if on != {"enc"} and on != {"dec"}:
            raise ModelError(f"{model.name} is an encoder-decoder: pass side='encoder' (rows = source words) or "
                             "side='decoder' with sources= (rows = target words; decoder layers need a target)")
        side = "encoder" if on == {"enc"} else "decoder"
    if side == "encoder":
        if sources is not None:
            raise ParameterError("side='encoder' reads the corpus as the source sentences; sources= is for the decoder")
        return model.side("encoder")
    if side != "decoder":
        raise ParameterError(f"side must be 'encoder' or 'decoder', got {side!r}")
    if sources is None:
        if SOURCE_COLUMN not in corpus.sentence_label_columns:
            raise CorpusError(f"{corpus.name}: the decoder side needs the source of each target sentence: pass "
                              f"sources=, or give the corpus a sentence-level column {SOURCE_COLUMN!r}")
        sources = [s.sent_labels[SOURCE_COLUMN] for s in corpus.sentences]
    src = word_lists(sources, "sources")
    if len(src) != len(corpus):
        raise CorpusError(f"{len(src)} sources for {len(corpus)} target sentences")
    targets = [s.words for s in corpus.sentences]
    too_long = [i for i, n in enumerate(model.token_counts(targets, target=True)) if n > model.max_length]
    if too_long:
        raise CorpusError(f"target sentence {too_long[0]} has more than {model.max_length} tokens (the model "
                          "maximum); the decoder side cannot split a target into windows")
    return model.side("decoder", sources=src, targets=targets, align=align)


def extract(
    model: ModelAdapter,
    corpus,
    path: str | os.PathLike,
    layers: Sequence[str] | str | None = "hidden",
    aggregation: str = "mean",
    pooling: str | None = None,
    dtype: str = "auto",
    batch_size: int = 32,
    buffer_sentences: int = 512,
    max_length: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    chunk_rows: int = 8192,
    precision: str = "float32",
    neurons=None,
    onednn: bool | None = None,
    direct_io: bool | None = None,
    side: str | None = None,
    sources: Sequence[Sequence[str]] | Sequence[str] | None = None,
    align: str = "input",
) -> ActivationStore:
    """Run ``model`` over ``corpus`` and write the activations of ``layers`` to ``path``.

    ``aggregation`` turns subword tokens into word rows (``first``/``last``/``mean``), or keeps one row
    per model token (``"token"``: one row per character, spaces included, for character models; the
    store's ``word`` column is then the token, ``word_pos`` its position among its sentence's tokens
    and the index column ``token_word`` the word it belongs to, a space going to the word after it;
    special tokens such as ``[CLS]`` are left out). With ``pooling`` (``cls``/``mean``/``last``) the store
    has one row per sentence instead.
    ``layers``: list of layer names, ``"hidden"`` (embeddings + every layer output) or ``"all"``.
    ``dtype`` is how activations are stored (``"auto"``: float32, or float16 when a float32 store would
    exceed 2 GiB, i.e. for large corpora); ``precision`` how the forward computes them:
    ``"bfloat16"`` (CPUs with AVX512-BF16/AMX, recent GPUs) or ``"float16"`` (GPUs) run the
    model under autocast, about twice as fast, at the cost of ~3 (bf16) or ~4 (fp16) significant digits.
    ``neurons`` (addresses such as ``["layer.3:117", "layer.5.mlp:12"]``): keep only these units; the
    store's layers are then theirs (``layers`` is ignored) and its neuron index names the real units.
    ``onednn``: float32 CPU linears through oneDNN (default: ``FINEGRAIN_ONEDNN``, on unless ``0``);
    ``direct_io``: chunk files written with ``O_DIRECT`` (default: ``FINEGRAIN_DIRECT_IO``, on unless ``0``).

    Encoder-decoder models (:class:`~finegrain.models.seq2seq.Seq2SeqAdapter`; Belinkov et al. 2017,
    "What do Neural Machine Translation Models Learn about Morphology?"): ``side="encoder"`` reads
    ``corpus`` as the source sentences (rows = source words, layers ``enc.layer.*``); ``side="decoder"``
    reads it as the *target* sentences (their labels become the store's), each teacher-forced behind its
    source, given as ``sources`` (one per target sentence, word lists or strings) or else as the corpus's
    sentence-level column ``"source"`` (rows = target words, layers ``dec.layer.*``, read where the word
    is the decoder's input, ``align="input"``, or its prediction, ``align="output"``). Each sentence
    travels with its own source, so identical targets may have different sources. A target must fit
    the model's maximum length (the decoder reads a target whole: no windows). Without ``side`` the
    side is the one all ``layers`` are on.

    A word that produces no model token (e.g. only zero-width spaces) gets a row of zeros, counted in
    the store's metadata (``tokenless_words``, and the first rows in ``tokenless_rows``). One process
    writes a store at a time: a second extraction into the same ``path`` fails at once. The model is
    handed back in the training mode it came in, also on error.

    Speed: the store is written in a background thread behind the forward passes (the buffers at the
    end of the corpus get smaller, so the last write is short); word rows are summed into the buffer
    directly. ``bench/RESULTS.md`` compares the time with a bare batched forward.
    """
    _check_options(aggregation, pooling, precision, dtype)
    if not isinstance(model, ModelAdapter):
        raise ModelError(f"extract() needs a finegrain model adapter (load_model), got {type(model).__name__}")
    corpus = as_corpus(corpus)
    model = _side_view(model, corpus, side, sources, align, layers, neurons)
    facts = model_facts(model, layers)
    rows = None
    if aggregation == "token" and not pooling:
        rows = token_rows_per_sentence(model, [s.words for s in corpus.sentences], max_tokens(facts, max_length))
    plan = plan_extraction(facts, corpus, aggregation, pooling, dtype, max_length, precision, neurons, rows, onednn)
    writer = StoreWriter(
        path, plan.sizes, plan.n_rows, label_columns=plan.label_cols, dtype=plan.dtype, chunk_rows=chunk_rows,
        meta=plan.meta, resume=resume, overwrite=overwrite, lazy=True, direct_io=direct_io,
        index_columns=plan.meta.get("index_columns", ()),
    )
    try:
        with preserved_state(model.model):
            _run(model, corpus, plan, writer, batch_size, buffer_sentences, progress, path)
        return writer.commit()
    finally:
        writer.close()  # the lock: released whatever happened (commit has released it already)


TAIL_SENTENCES = 128  # the smallest buffer, at the end of a corpus (see buffer_starts)


def buffer_starts(n_sentences: int, buffer_sentences: int) -> list[int]:
    """The first sentence of every buffer, then ``n_sentences``: buffers of ``buffer_sentences``, the
    last buffer's worth halved again and again down to :data:`TAIL_SENTENCES`.

    The store is written in a background thread while the next buffer computes, so what is left after
    the last forward pass is the last buffer's write (and the commit): with halving tails that buffer
    is small. A resumed run restarts at one of these starts, so it computes exactly the batches of an
    uninterrupted one."""
    if int(buffer_sentences) < 1:
        raise ParameterError(f"buffer_sentences must be at least 1, got {buffer_sentences}")
    starts, b = [], 0
    while n_sentences - b > buffer_sentences:
        starts.append(b)
        b += buffer_sentences
    while n_sentences - b > TAIL_SENTENCES:
        starts.append(b)
        b += -(-(n_sentences - b) // 2)
    if b < n_sentences:
        starts.append(b)
    return [*starts, n_sentences]


def _run(model, corpus: Corpus, plan: ExtractionPlan, writer: StoreWriter, batch_size: int, buffer_sentences: int,
         progress: bool | None, path) -> None:
    sent_start = plan.sent_start
    bounds = buffer_starts(len(corpus), buffer_sentences)
    # restart at the first buffer not wholly on disk
    done_sents = int(np.searchsorted(sent_start, writer.resumed_rows, side="right")) - 1
    k_first = int(np.searchsorted(bounds, done_sents, side="right")) - 1
    first_sent = bounds[k_first]
    writer.rewind(int(sent_start[first_sent]))
    if first_sent:
        log.info("resuming %s at sentence %d of %d", path, first_sent, len(corpus))
    # tokenless words of the buffers already on disk (exact while the list is complete)
    tokenless = list(writer.meta_value("tokenless_rows", [])) if first_sent else []
    n_tokenless = int(writer.meta_value("tokenless_words", 0)) if first_sent else 0
    complete_list = n_tokenless <= len(tokenless)
    tokenless = [r for r in tokenless if r < sent_start[first_sent]]
    if complete_list:
        n_tokenless = len(tokenless)

    bar = tqdm(total=len(corpus), initial=first_sent, desc="extract", unit="sent",
               disable=None if progress is None else not progress, smoothing=0.1)
    model.model.eval()
    sourced = bool(getattr(model, "needs_sources", False))  # a decoder side reads each sentence behind its source
    # the store is written in a background thread while the model computes the next buffer
    pool = ThreadPoolExecutor(max_workers=1, initializer=_background_thread)
    pending = pool.submit(writer.ensure_created)  # the store's files, while the first buffer computes
    arrays = BufferPool(plan)  # memory reused by the next buffers once the writer is done with it
    # weights packed (oneDNN) or cast (autocast's cache) once for the run, not once per buffer
    with plan.fast_linears(model, batch_size), plan.autocast(model.device):
        try:
            for b0, b1 in zip(bounds[k_first:-1], bounds[k_first + 1 :]):
                sents = corpus.sentences[b0:b1]
                extras: dict = {}
                buf = compute_buffer(model, plan, [s.words for s in sents], batch_size, on_sentences=bar.update,
                                     extras=extras, sources=[model.source_of(s) for s in sents] if sourced else None,
                                     pool=arrays)
                if extras["tokenless"]:
                    n_tokenless += len(extras["tokenless"])
                    room = TOKENLESS_ROWS_KEPT - len(tokenless)
                    tokenless.extend(int(sent_start[b0]) + r for r in extras["tokenless"][:max(0, room)])
                pending = _wait(pending)
                # the index columns are assembled in the writer's thread too
                pending = pool.submit(_write_buffer, writer, buf, plan, sents, b0, extras,
                                      {"tokenless_words": n_tokenless, "tokenless_rows": list(tokenless)}
                                      if extras["tokenless"] else None)
            _wait(pending)
        except BaseException as err:
            # keep what was computed: the rows accepted so far go to disk, so a re-run resumes after them
            # (not after a failed write: the disk is the problem, and the error says so already)
            pool.shutdown(wait=True)
            if not isinstance(err, OSError):
                try:
                    writer.flush()
                except Exception as e:  # noqa: BLE001 - the original error matters more
                    log.warning("could not save the partial store's last rows: %s", e)
            raise
        finally:
            pool.shutdown(wait=True)
            bar.close()


def _background_thread() -> None:
    """The store writer thread runs as ``SCHED_BATCH`` (Linux; its own thread only): it then never
    preempts the forward's threads when it wakes. Each forward is a series of parallel regions that
    wait for their slowest thread, so a writer that takes a core from one of them for a moment stalls
    them all: measured on 2 cores (MiniLM, 2,000 sentences), the writer thread's 0.2 s of CPU cost the
    extraction 0.7 s of wall time at the default policy. The writer keeps its fair share of the CPU
    (unlike ``SCHED_IDLE`` or a nice value, it cannot starve on a busy machine)."""
    setter = getattr(os, "sched_setscheduler", None)
    if setter is not None:
        with contextlib.suppress(OSError):
            setter(0, os.SCHED_BATCH, os.sched_param(0))


def _write_buffer(writer: StoreWriter, buf: dict, plan: ExtractionPlan, sents: Sequence, b0: int, extras: dict,
                  meta: dict | None) -> None:
    """The writer thread's job for one buffer: its rows and index, then (metadata after data) what it noted."""
    writer.write(buf, **buffer_index(plan, sents, b0, extras))
    if meta:
        writer.set_meta(**meta)


def _wait(future):
    if future is not None:
        future.result()  # re-raises a failed write here, in the caller's thread
    return None
