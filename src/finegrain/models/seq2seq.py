"""Adapter for encoder-decoder transformers: T5 / mT5, BART / mBART, Marian, Pegasus, M2M100 and
kin (``AutoModelForSeq2SeqLM``) — the neural machine translation setting in which the field's
neuron findings were made (Belinkov et al. 2017, "What do Neural Machine Translation Models Learn
about Morphology?", ACL; Bau et al. 2019, "Identifying and Controlling Important Neurons in Neural
Machine Translation", ICLR).

Addresses name the side first, then follow :class:`~finegrain.models.hf.HFAdapter`'s scheme:

* ``enc.layer.0`` (the encoder's input embeddings, as the first block sees them), ``enc.layer.i``
  (output of encoder block *i*), ``enc.layer.i.mlp`` (input of the MLP down projection),
  ``enc.layer.i.attn`` (concatenated self-attention head outputs: the input of the output projection);
* ``dec.layer.0`` ... ``dec.layer.i.attn`` likewise for the decoder (causal self-attention), plus
  ``dec.layer.i.cross`` (concatenated cross-attention head outputs).

``enc.layer.N`` / ``dec.layer.N`` (the last layer) is the stack's output, after the stack's final
layer norm where the architecture has one (T5, mBART, Pegasus): exactly the model's own
``encoder_hidden_states[N]`` / ``decoder_hidden_states[N]``, which is what the decoder attends to
and what the LM head reads. Hook points are found structurally (the shallowest list of blocks of
each stack and, inside a block, the output projections by name), never from a table of models.

The decoder is run teacher-forced: ``encode(sources, targets=...)`` tokenises the target, and the
decoder input is the target shifted right behind the decoder start token, as in training. A batch
describes one *side*: its ``word_ids`` map the source tokens (``side="encoder"``) or the decoder
positions (``side="decoder"``) to words. :meth:`Seq2SeqAdapter.side` returns a view of the adapter
restricted to one side, which the generic extraction, probing and ranking code takes as it takes any
adapter (see :mod:`finegrain.translation`). Token positions of an edit index the tensor of the edited
layer's side: take them from ``batch.on("decoder")`` for ``dec.*`` layers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from finegrain.errors import CorpusError, ParameterError
from finegrain.models.base import Batch, HookFn, ModelAdapter, ModelError, resolve_device
from finegrain.models.hf import _in_features, _join, _out_hook, _pre_hook, _word_ids

SIDES = {"encoder": "enc", "decoder": "dec"}
ALIGNS = ("input", "output")

# Output projections inside one block, as fnmatch patterns over the block's submodule names (first
# match wins): T5 (``layer.0.SelfAttention.o``), BART / Marian / mBART / Pegasus / M2M100 / FSMT
# (``self_attn.out_proj``, ``fc2``), Llama-style names, BERT2BERT (``attention.output.dense``).
_PATTERNS = {
    "attn": ("self_attn.out_proj", "self_attn.o_proj", "layer.*.SelfAttention.o", "attention.output.dense",
             "self_attention.dense"),
    "cross": ("encoder_attn.out_proj", "encoder_attn.o_proj", "layer.*.EncDecAttention.o", "cross_attn.out_proj",
              "cross_attn.o_proj", "crossattention.output.dense"),
    "mlp": ("fc2", "mlp.fc2", "mlp.down_proj", "layer.*.DenseReluDense.wo", "ffn.fc2", "output.dense"),
}
_HEAD_ATTRS = ("num_heads", "n_heads", "num_attention_heads")


# ----------------------------------------------------------------------------------------------
@dataclass
class SideInfo:
    """Token→word alignment of one side of a batch."""

    word_ids: list[list[int | None]]
    n_words: list[int]
    attention_mask: torch.Tensor
    tokens: list[list[str]]


@dataclass
class Seq2SeqBatch(Batch):
    """A :class:`Batch` of an encoder-decoder: ``inputs`` hold the source (``input_ids``,
    ``attention_mask``) and, with targets, the teacher-forced decoder input (``decoder_input_ids``,
    ``decoder_attention_mask``). The base fields (``word_ids``, ``n_words``, ``attention_mask``,
    ``tokens``) describe ``side``; ``sides`` holds both alignments.

    ``labels[b, t]`` is the target token that decoder position ``t`` predicts (padding: the pad
    id, masked by ``sides["decoder"].attention_mask``); ``label_word_ids[b][t]`` its target word.
    """

    side: str = "encoder"
    labels: torch.Tensor | None = None
    label_word_ids: list[list[int | None]] = field(default_factory=list)
    sides: dict[str, SideInfo] = field(default_factory=dict)

    def on(self, side: str) -> Seq2SeqBatch:
        """The same inputs with the alignment of ``side`` (``"encoder"`` / ``"decoder"``)."""
        if side not in self.sides:
            raise ModelError(f"this batch has no {side} side (encode targets for the decoder side)")
        s = self.sides[side]
        return Seq2SeqBatch(self.inputs, s.word_ids, s.n_words, s.attention_mask, s.tokens, side, self.labels,
                            self.label_word_ids, self.sides)

    def to(self, device) -> Seq2SeqBatch:
        sides = {k: SideInfo(s.word_ids, s.n_words, s.attention_mask.to(device), s.tokens)
                 for k, s in self.sides.items()}
        return Seq2SeqBatch(
            {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}, self.word_ids,
            self.n_words, self.attention_mask.to(device), self.tokens, self.side,
            None if self.labels is None else self.labels.to(device), self.label_word_ids, sides,
        )


class SourceEmbedding(nn.Module):
    """The encoder's token embedding exactly as the encoder applies it (times the encoder's
    ``embed_scale`` where the stack, not the embedding module, scales it: Marian, FSMT).

    :meth:`Seq2SeqAdapter.forward` feeds the encoder through this module, so hooking it (input
    attribution swaps its output for interpolated embeddings) reaches the encoder only: T5, BART and
    Marian share one embedding matrix between encoder and decoder, and a hook on the shared module
    would replace the decoder's embeddings as well.
    """

    def __init__(self, embed: nn.Module, scale: float = 1.0):
        super().__init__()
        self.embed = embed
        self.scale = float(scale)

    @property
    def weight(self) -> torch.Tensor:
        return self.embed.weight

    @property
    def embedding_dim(self) -> int:
        return int(self.embed.weight.shape[1])

    @property
    def num_embeddings(self) -> int:
        return int(self.embed.weight.shape[0])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.embed(input_ids)
        return out * self.scale if self.scale != 1.0 else out


@dataclass
class _Stack:
    """Hook points of one stack (encoder or decoder)."""

    prefix: str
    module: nn.Module
    blocks: nn.ModuleList
    final_norm: nn.Module | None
    parts: dict[str, list[nn.Module | None]]
    heads: dict[str, list[int | None]]


def _blocks(stack: nn.Module, what: str) -> nn.ModuleList:
    """The shallowest non-empty ``ModuleList`` of a stack: its transformer blocks."""
    best = None
    for name, mod in stack.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and (best is None or name.count(".") < best[0].count(".")):
            best = (name, mod)
    if best is None:
        raise ModelError(f"cannot find the blocks of the {what} ({type(stack).__name__})")
    return best[1]


def _final_norm(stack: nn.Module) -> nn.Module | None:
    """The stack's own final normalisation (a direct child whose class is a norm and whose name is
    not the embedding norm: T5 ``final_layer_norm``, mBART ``layer_norm``); ``None`` for post-norm
    stacks (BART, Marian), whose last block output is the stack output."""
    found = None
    for name, mod in stack.named_children():
        if "norm" in type(mod).__name__.lower() and "embed" not in name.lower():
            found = mod
    return found


def _part(block: nn.Module, kind: str) -> tuple[nn.Module | None, int | None]:
    """``(output projection, number of heads)`` of component ``kind`` inside one block."""
    mods = dict(block.named_modules())
    for pattern in _PATTERNS[kind]:
        for name, mod in mods.items():
            if name and fnmatch.fnmatchcase(name, pattern) and _linear_like(mod):
                parent = mods.get(name.rpartition(".")[0]) if "." in name else block
                heads = next((int(getattr(parent, a)) for a in _HEAD_ATTRS if isinstance(getattr(parent, a, None),
                                                                                           int)), None)
                return mod, heads
    return None, None


def _linear_like(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or (getattr(mod, "weight", None) is not None and mod.weight.dim() == 2)


def _side(side: str) -> str:
    if side not in SIDES:
        raise ParameterError(f"side must be 'encoder' or 'decoder', got {side!r}")
    return side


class Seq2SeqAdapter(ModelAdapter):
    """Wraps a transformers encoder-decoder (``AutoModelForSeq2SeqLM``) and its tokenizer.

    ``forward`` returns the model output whose ``logits`` ([batch, target tokens, target vocabulary])
    score the teacher-forced target; on a source-only batch it runs the encoder alone and returns
    its output. Fast tokenizers are aligned through character offsets; slow ones (Marian's
    SentencePiece tokenizer) word by word, which is exact for SentencePiece since its pieces never
    cross a space.
    """

    kind = "seq2seq"

    def __init__(self, model: nn.Module, tokenizer, name: str = "seq2seq", device="auto"):
        cfg = model.config
        if not getattr(cfg, "is_encoder_decoder", False):
            raise ModelError(f"{name} is not an encoder-decoder model (config.is_encoder_decoder is false); "
                             "use load_model / HFAdapter for encoders and decoders")
        if tokenizer is None:
            raise ModelError(f"{name}: a tokenizer is required")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.task = "seq2seq-lm"
        self.config = cfg
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.encoder = model.get_encoder()
        self.decoder = model.get_decoder()
        self._stacks = {"enc": self._stack("enc", self.encoder), "dec": self._stack("dec", self.decoder)}
        embed = self.encoder.get_input_embeddings() if hasattr(self.encoder, "get_input_embeddings") else None
        if embed is None:
            embed = model.get_input_embeddings()
        # the stack multiplies by embed_scale only where the embedding module does not (Marian, FSMT)
        scale = 1.0 if hasattr(embed, "embed_scale") else float(getattr(self.encoder, "embed_scale", 1.0) or 1.0)
        self.source_embedding = SourceEmbedding(embed, scale)
        self.hidden_size = int(getattr(cfg, "d_model", None) or getattr(cfg, "hidden_size", None)
                               or self.source_embedding.embedding_dim)
        self.pad_id = _first_int(getattr(tokenizer, "pad_token_id", None), getattr(cfg, "pad_token_id", None))
        if self.pad_id is None:
            raise ModelError(f"{name}: neither the tokenizer nor the config defines a pad token")
        self.max_length = int(min(
            getattr(tokenizer, "model_max_length", None) or 10**9,
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 10**9,
        ))
        self._sizes = self._compute_sizes()
        self._check_source_embedding()

    # -- structure -------------------------------------------------------------------------
    def _stack(self, prefix: str, stack: nn.Module) -> _Stack:
        blocks = _blocks(stack, "encoder" if prefix == "enc" else "decoder")
        kinds = ("attn", "mlp") if prefix == "enc" else ("attn", "cross", "mlp")
        parts: dict[str, list] = {k: [] for k in kinds}
        heads: dict[str, list] = {k: [] for k in kinds}
        for b in blocks:
            for k in kinds:
                mod, h = _part(b, k)
                parts[k].append(mod)
                heads[k].append(h)
        return _Stack(prefix, stack, blocks, _final_norm(stack), parts, heads)

    def _compute_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for prefix, st in self._stacks.items():
            sizes[f"{prefix}.layer.0"] = self.hidden_size
            for i in range(1, len(st.blocks) + 1):
                sizes[f"{prefix}.layer.{i}"] = self.hidden_size
                for k, mods in st.parts.items():
                    if mods[i - 1] is not None:
                        sizes[f"{prefix}.layer.{i}.{k}"] = _in_features(mods[i - 1])
        return sizes

    def _check_source_embedding(self) -> None:
        """The encoder run on :class:`SourceEmbedding`'s output must equal the encoder run on ids
        (an unknown embedding-scaling convention would otherwise skew every result silently)."""
        ids = torch.tensor([[min(5, self.source_embedding.weight.shape[0] - 1)] * 3], device=self.device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            a = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            b = self.encoder(inputs_embeds=self.source_embedding(ids), attention_mask=mask).last_hidden_state
        if not torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-4):
            raise ModelError(f"{self.name}: cannot reproduce the encoder's input embedding (scaling convention "
                             f"of {type(self.encoder).__name__} not recognised)")

    @property
    def n_layers(self) -> dict[str, int]:
        """``{"enc": encoder blocks, "dec": decoder blocks}``."""
        return {p: len(st.blocks) for p, st in self._stacks.items()}

    def layers(self) -> dict[str, int]:
        return dict(self._sizes)

    def hidden_layers(self) -> list[str]:
        return [f"{p}.layer.{i}" for p, st in self._stacks.items() for i in range(len(st.blocks) + 1)]

    def heads(self, layer: str) -> tuple[int, int]:
        size = self.check_layer(layer)
        prefix, i, kind = _parse(layer)
        if kind not in ("attn", "cross"):
            raise ModelError(f"{layer} is not an attention component (use {prefix}.layer.i.attn or dec.layer.i.cross)")
        n = self._stacks[prefix].heads[kind][i - 1] or _config_heads(self.config, prefix)
        if not n or size % n:
            raise ModelError(f"cannot tell the number of heads of {layer} ({size} units)")
        return n, size // n

    def embedding_module(self) -> SourceEmbedding:
        """The source-side token embedding (what input attribution interpolates)."""
        return self.source_embedding

    def side(self, side: str, sources=None, targets=None, align: str = "input") -> Seq2SeqSide:
        """A view of this adapter restricted to one side, for the generic extraction code.

        ``side("encoder")``: ``encode(sentences)`` takes source sentences; rows = source words.
        ``side("decoder", sources, targets)``: ``encode(sentences)`` takes *target* sentences and looks
        up each one's source among the bound ``(sources, targets)`` pairs; rows = target words, read
        at the decoder positions whose *input* is the word's token (``align="input"``: the state that
        has read the word) or whose *prediction* it is (``align="output"``: the state about to emit it).
        """
        return Seq2SeqSide(self, side, sources=sources, targets=targets, align=align)

    # -- hooks --------------------------------------------------------------------------------
    def _register(self, layer: str, fn: HookFn):
        prefix, i, kind = _parse(layer)
        st = self._stacks[prefix]
        if kind is None:
            if i == 0:
                return st.blocks[0].register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
            if i == len(st.blocks) and st.final_norm is not None:
                return st.final_norm.register_forward_hook(_out_hook(fn))
            return st.blocks[i - 1].register_forward_hook(_out_hook(fn))
        return st.parts[kind][i - 1].register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)

    # -- encoding -----------------------------------------------------------------------------
    def _tokenize(self, sentences: list[list[str]], target: bool) -> tuple[list[list[int]], list[list[int | None]]]:
        """Token ids (special tokens included, unpadded) and token→word ids of word lists."""
        tok = self.tokenizer
        key = "text_target" if target else "text"
        if getattr(tok, "is_fast", False):
            texts, owners = zip(*(_join(w) for w in sentences))
            enc = tok(**{key: list(texts)}, return_offsets_mapping=True)
            return [list(x) for x in enc["input_ids"]], [_word_ids(o, w) for o, w in zip(enc["offset_mapping"],
                                                                                         owners)]
        ids, wids = [], []
        for words in sentences:
            pieces = [tok(**{key: w}, add_special_tokens=False)["input_ids"] for w in words]
            content = [t for p in pieces for t in p]
            full = list(tok.build_inputs_with_special_tokens(content))
            at = _find(full, content)
            if at is None:
                raise ModelError(f"{self.name}: cannot place the tokens of {' '.join(words)!r} among the special "
                                 "tokens the tokenizer adds")
            owner = [k for k, p in enumerate(pieces) for _ in p]
            ids.append(full)
            wids.append([None] * at + owner + [None] * (len(full) - at - len(content)))
        return ids, wids

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(len(x) for x in ids)
        t = torch.full((len(ids), T), self.pad_id, dtype=torch.long)
        m = torch.zeros((len(ids), T), dtype=torch.long)
        for b, x in enumerate(ids):
            t[b, : len(x)] = torch.tensor(x, dtype=torch.long)
            m[b, : len(x)] = 1
        return t, m

    def _check_length(self, ids: list[list[int]], what: str) -> None:
        longest = max(len(x) for x in ids)
        if longest > self.max_length:
            raise ModelError(f"a {what} sentence has {longest} tokens, over the model maximum of {self.max_length}")

    def _tokens(self, ids: torch.Tensor) -> list[list[str]]:
        return [list(self.tokenizer.convert_ids_to_tokens(row)) for row in ids.tolist()]

    def _decoder_inputs(self, labels: torch.Tensor) -> torch.Tensor:
        """The target shifted right behind the decoder start token (the model's own shift)."""
        prep = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if callable(prep):
            return prep(labels=labels)
        start = _first_int(getattr(self.config, "decoder_start_token_id", None),
                           getattr(getattr(self.model, "generation_config", None), "decoder_start_token_id", None))
        if start is None:
            raise ModelError(f"{self.name}: the config defines no decoder_start_token_id")
        out = labels.new_full(labels.shape, self.pad_id)
        out[:, 0] = start
        out[:, 1:] = labels[:, :-1]
        return out

    def encode(self, sentences, targets=None, side: str = "encoder", align: str = "input") -> Seq2SeqBatch:
        """Tokenise source sentences (word lists or whitespace-split strings) and, with ``targets``,
        the teacher-forced decoder input. The batch's alignment describes ``side``; on the decoder
        side ``align`` says whether a word owns the positions whose input (``"input"``) or whose
        prediction (``"output"``) is one of its tokens."""
        _side(side)
        if align not in ALIGNS:
            raise ParameterError(f"align must be one of {ALIGNS}, got {align!r}")
        src = word_lists(sentences, "sentences")
        ids, wids = self._tokenize(src, target=False)
        self._check_length(ids, "source")
        input_ids, mask = self._pad(ids)
        wids = _pad_none(wids, input_ids.shape[1])  # one entry per (padded) position, as extraction indexes them
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        sides = {"encoder": SideInfo(wids, [len(w) for w in src], mask, self._tokens(input_ids))}
        labels, label_wids = None, []
        if targets is not None:
            tgt = word_lists(targets, "targets")
            if len(tgt) != len(src):
                raise ParameterError(f"{len(src)} source sentences but {len(tgt)} targets")
            tids, label_wids = self._tokenize(tgt, target=True)
            self._check_length(tids, "target")
            labels, tmask = self._pad(tids)
            dec_ids = self._decoder_inputs(labels)
            label_wids = _pad_none(label_wids, labels.shape[1])
            inputs.update(decoder_input_ids=dec_ids, decoder_attention_mask=tmask)
            if align == "input":
                # decoder position t reads target token t-1 (position 0 reads the start token)
                dwids = [[None] + w[:-1] for w in label_wids]
                toks = self._tokens(dec_ids)
            else:
                dwids, toks = label_wids, self._tokens(labels)
            sides["decoder"] = SideInfo(dwids, [len(w) for w in tgt], tmask, toks)
        elif side == "decoder":
            raise ParameterError("the decoder side needs targets (target word lists)")
        s = sides[side]
        return Seq2SeqBatch(inputs, s.word_ids, s.n_words, s.attention_mask, s.tokens, side, labels, label_wids,
                            sides).to(self.device)

    def token_counts(self, sentences: Sequence[Sequence[str]], target: bool = False) -> list[int]:
        """Token counts (special tokens included) of source (or target) word lists."""
        return [len(x) for x in self._tokenize(word_lists(sentences, "sentences"), target=target)[0]]

    def token_count(self, words: Sequence[str], target: bool = False) -> int:
        """Token count of one word list (``[]``: the special tokens alone)."""
        if not words:
            return len(self.tokenizer(**{"text_target" if target else "text": ""})["input_ids"])
        return self.token_counts([list(words)], target=target)[0]

    # -- running ------------------------------------------------------------------------------
    def run_with_cache(self, batch: Batch, layers: Sequence[str], detach: bool = True):
        if "decoder_input_ids" not in batch.inputs and any(lay.startswith("dec.") for lay in layers):
            raise ModelError("decoder layers need a target: encode(sources, targets=...); to extract, use "
                             "finegrain.translation.extract_seq2seq(side='decoder') or side('encoder') for the encoder")
        return super().run_with_cache(batch, layers, detach=detach)

    def forward(self, batch: Batch, **kwargs):
        """Run the model (teacher-forced) on a batch; a source-only batch runs the encoder alone."""
        inputs = dict(batch.inputs)
        embeds = self.source_embedding(inputs.pop("input_ids"))
        if "decoder_input_ids" not in inputs:
            return self.encoder(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **kwargs)
        return self.model(inputs_embeds=embeds, use_cache=False, **inputs, **kwargs)


class Seq2SeqSide(ModelAdapter):
    """One side of a :class:`Seq2SeqAdapter`, shaped like any adapter for extraction.

    Its ``layers()`` / ``hidden_layers()`` are that side's addresses (the full names, ``enc.layer.3``,
    so that stores, rankings and interventions share one address space), ``encode(sentences)`` takes
    source sentences (encoder side) or target sentences (decoder side, sources found among the bound
    pairs, or passed as ``sources=``), hooks and the forward pass are the adapter's.
    """

    def __init__(self, parent: Seq2SeqAdapter, side: str, sources=None, targets=None, align: str = "input"):
        self.parent = parent
        self.side_name = _side(side)
        if align not in ALIGNS:
            raise ParameterError(f"align must be one of {ALIGNS}, got {align!r}")
        self.align = align
        self.model = parent.model
        self.tokenizer = parent.tokenizer
        self.name = f"{parent.name}/{side}"
        self.kind = f"seq2seq-{side}"
        self.max_length = parent.max_length
        self.prefix = SIDES[side] + "."
        # extraction asks a view with needs_sources for source_of(sentence) of each corpus sentence
        self.needs_sources = side == "decoder"
        self._pairs: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._ambiguous: set[tuple[str, ...]] = set()
        self._sources: list[list[str]] = []
        self.conflicts: list[int] = []  # bound target sentences that also occur with another source
        self._digest = hashlib.sha1(f"{side}\x1f{align}".encode())
        if side == "decoder":
            if sources is None or targets is None:
                raise ParameterError("side('decoder') needs the parallel sources and targets")
            self._bind(sources, targets)
        elif sources is not None or targets is not None:
            raise ParameterError("side('encoder') takes no sources/targets: encode() gets the source sentences")

    def _bind(self, sources, targets) -> None:
        src, tgt = word_lists(sources, "sources"), word_lists(targets, "targets")
        if len(src) != len(tgt):
            raise CorpusError(f"{len(src)} source sentences but {len(tgt)} target sentences")
        self._sources = src
        for i, (s, t) in enumerate(zip(src, tgt)):
            key, val = tuple(t), tuple(s)
            if self._pairs.setdefault(key, val) != val:
                self._ambiguous.add(key)
                self.conflicts.append(i)
            self._digest.update("\x1f".join(s).encode() + b"\x1e" + "\x1f".join(t).encode() + b"\x1d")

    def source_of(self, sentence) -> list[str]:
        """The bound source of corpus sentence ``sentence`` (a :class:`~finegrain.data.corpus.Sentence`
        of the target corpus, found by its position ``id``)."""
        i = int(sentence.id)
        if not 0 <= i < len(self._sources):
            raise CorpusError(f"sentence {i} is not among the {len(self._sources)} bound target sentences")
        return list(self._sources[i])

    @property
    def device(self) -> torch.device:
        return self.parent.device

    @device.setter
    def device(self, value) -> None:  # ModelAdapter.to assigns it
        self.parent.device = resolve_device(value)

    def to(self, device) -> Seq2SeqSide:
        self.parent.to(device)
        return self

    def layers(self) -> dict[str, int]:
        return {k: v for k, v in self.parent.layers().items() if k.startswith(self.prefix)}

    def hidden_layers(self) -> list[str]:
        return [n for n in self.parent.hidden_layers() if n.startswith(self.prefix)]

    def heads(self, layer: str) -> tuple[int, int]:
        self.check_layer(layer)
        return self.parent.heads(layer)

    def embedding_module(self) -> SourceEmbedding:
        return self.parent.embedding_module()

    def sources_of(self, targets: Sequence[Sequence[str]]) -> list[list[str]]:
        """The bound source sentence of each target sentence."""
        out = []
        for t in targets:
            if tuple(t) in self._ambiguous:
                raise CorpusError(f"target {' '.join(t)!r} occurs with several sources: pass sources= to encode()")
            src = self._pairs.get(tuple(t))
            if src is None:
                raise CorpusError(
                    f"target {' '.join(t)!r} is not among the bound pairs (a decoder-side extraction cannot split a "
                    "target into windows: it must fit the model's maximum length)")
            out.append(list(src))
        return out

    def encode(self, sentences, sources=None) -> Seq2SeqBatch:
        if self.side_name == "encoder":
            return self.parent.encode(sentences)
        tgt = word_lists(sentences, "sentences")
        src = word_lists(sources, "sources") if sources is not None else self.sources_of(tgt)
        return self.parent.encode(src, targets=tgt, side="decoder", align=self.align)

    def token_counts(self, sentences: Sequence[Sequence[str]]) -> list[int]:
        return self.parent.token_counts(sentences, target=self.side_name == "decoder")

    def token_count(self, words: Sequence[str]) -> int:
        return self.parent.token_count(words, target=self.side_name == "decoder")

    def _register(self, layer: str, fn: HookFn):
        return self.parent._register(layer, fn)

    def forward(self, batch: Batch, **kwargs):
        return self.parent.forward(batch, **kwargs)

    def weights_hash(self) -> str:
        """The model's hash combined with the side and its bound pairs: a decoder-side store depends on
        the sources, so two extractions with other sources must not resume into one another."""
        h = hashlib.sha1(self.parent.weights_hash().encode())
        h.update(self._digest.hexdigest().encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------------------------
def _parse(layer: str) -> tuple[str, int, str | None]:
    parts = layer.split(".")
    if len(parts) not in (3, 4) or parts[0] not in SIDES.values() or parts[1] != "layer" or not parts[2].isdigit():
        raise ModelError(f"not an encoder-decoder address: {layer!r} (e.g. enc.layer.3, dec.layer.2.cross)")
    return parts[0], int(parts[2]), parts[3] if len(parts) == 4 else None


def _config_heads(cfg, prefix: str) -> int | None:
    names = ("encoder_attention_heads",) if prefix == "enc" else ("decoder_attention_heads",)
    for n in names + ("num_heads", "num_attention_heads"):
        v = getattr(cfg, n, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _first_int(*vals) -> int | None:
    return next((int(v) for v in vals if isinstance(v, int)), None)


def _pad_none(word_ids: list[list[int | None]], T: int) -> list[list[int | None]]:
    return [list(w) + [None] * (T - len(w)) for w in word_ids]


def _find(seq: list[int], sub: list[int]) -> int | None:
    for k in range(len(seq) - len(sub) + 1):
        if seq[k : k + len(sub)] == sub:
            return k
    return None


def word_lists(sentences, what: str = "sentences") -> list[list[str]]:
    """Word lists of sentences given as word lists or whitespace-split strings (none may be empty)."""
    if isinstance(sentences, str):
        raise ParameterError(f"{what} must be a list of sentences (word lists or strings), got one string")
    out = [s.split() if isinstance(s, str) else list(s) for s in sentences]
    if not out:
        raise ParameterError(f"{what}: at least one sentence is needed")
    for i, w in enumerate(out):
        if not w:
            raise ParameterError(f"{what}: sentence {i} is empty")
    return out


# ----------------------------------------------------------------------------------------------
def _config_file(name_or_path: str | os.PathLike) -> Path | None:
    """``config.json`` of a local model directory, or of a Hugging Face name already in the local cache
    (looked up offline: the hub is never contacted)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    name = str(name_or_path)
    if path.exists() or name.count("/") > 1 or not name.strip():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache  # heavy-ish: only for names that are not directories

        found = try_to_load_from_cache(name, "config.json")
    except (ImportError, ValueError):  # not installed, or not a valid repository name
        return None
    return Path(found) if isinstance(found, str) else None


def is_seq2seq(name_or_path: str | os.PathLike) -> bool:
    """Whether a local model directory (or a cached Hugging Face name) holds an encoder-decoder:
    ``is_encoder_decoder`` in its ``config.json``, read without loading the model."""
    cfg = _config_file(name_or_path)
    if cfg is None:
        return False
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("is_encoder_decoder", False))
    except (OSError, ValueError):
        return False


def load_seq2seq(
    name_or_path: str | os.PathLike,
    task: str = "seq2seq-lm",
    device="auto",
    attn_implementation: str | None = None,
    name: str | None = None,
    **model_kwargs,
) -> Seq2SeqAdapter:
    """Load an encoder-decoder checkpoint (T5, BART, Marian, ...) with its tokenizer from a local
    directory written by ``save_pretrained`` (or a name in the local Hugging Face cache), never
    downloading (``local_files_only=True``). ``task`` is ``"seq2seq-lm"`` (or ``"base"``,
    :func:`~finegrain.models.load_model`'s default): the model with its LM head, whose logits score
    the target."""
    import transformers  # heavy: only when a model is loaded

    if task not in ("seq2seq-lm", "base"):
        raise ParameterError(f"task={task!r}: an encoder-decoder loads as 'seq2seq-lm' (its translation head)")
    if _config_file(name_or_path) is None:
        raise ModelError(f"{name_or_path} is neither a model directory (with config.json) nor a name in the local "
                         "Hugging Face cache; finegrain never downloads models")
    if not is_seq2seq(name_or_path):
        raise ModelError(f"{name_or_path} does not hold an encoder-decoder model (config.is_encoder_decoder is false)")
    if attn_implementation:
        model_kwargs["attn_implementation"] = attn_implementation
    src = str(name_or_path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(src, local_files_only=True, **model_kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise ModelError(f"cannot load an encoder-decoder model from {src}: {e}") from e
    return Seq2SeqAdapter(model, tokenizer, name=name or src, device=device)


__all__ = [
    "ALIGNS", "SIDES", "Seq2SeqAdapter", "Seq2SeqBatch", "Seq2SeqSide", "SideInfo", "SourceEmbedding", "is_seq2seq",
    "load_seq2seq", "word_lists",
]
