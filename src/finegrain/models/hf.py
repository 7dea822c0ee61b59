"""Adapter for Hugging Face transformers: encoders (BERT, RoBERTa, DistilBERT, ELECTRA, ...) and
decoders (GPT-2, Llama family, ...).

Hook points are found structurally: the list of transformer blocks, and inside each block the
attention output projection and the MLP down projection, whose *inputs* are the concatenated head
outputs and the MLP intermediate activations.

For the logit lens and direct logit attribution the adapter also finds the final norm and the LM head
(:meth:`HFAdapter.final_norm`, :meth:`HFAdapter.lm_head`, :meth:`HFAdapter.unembed`) and the output
projections' weights; :meth:`HFAdapter.attention_patterns` reads every head's attention weights in an
eager forward (sdpa kernels never form them).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import os
from collections.abc import Iterator, Sequence

import torch
from huggingface_hub import constants
from torch import nn

from finegrain.errors import ParameterError
from finegrain.models.base import EMBEDDED, Batch, HookFn, ModelAdapter, ModelError, resolve_device

# Candidate submodule paths inside one block, tried in order (first match wins).
_ATTN_OUT = ["attention.output.dense", "attn.c_proj", "self_attn.o_proj", "attention.out_lin", "attn.out_proj",
             "self_attention.dense", "attn.o_proj", "attention.dense", "attention.o_proj"]
_MLP_DOWN = ["output.dense", "mlp.c_proj", "mlp.down_proj", "ffn.lin2", "mlp.fc_out", "mlp.dense_4h_to_h",
             "mlp.fc2", "feed_forward.down_proj", "mlp.w2"]


def _get(module: nn.Module, path: str) -> nn.Module | None:
    cur = module
    for part in path.split("."):
        if not hasattr(cur, part):
            return None
        cur = getattr(cur, part)
    return cur if isinstance(cur, nn.Module) else None


def _in_features(mod: nn.Module) -> int:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    if hasattr(mod, "nx"):  # transformers' Conv1D (GPT-2)
        return int(mod.nx)
    w = getattr(mod, "weight", None)
    if w is not None:
        # Conv1D stores [in, out]; Linear-like stores [out, in]
        return int(w.shape[0] if type(mod).__name__ == "Conv1D" else w.shape[1])
    raise ModelError(f"cannot infer input size of {type(mod).__name__}")


def _find_blocks(model: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and n_layers > 0:
            # the decoder/encoder stack is the shallowest matching list
            if best is None or name.count(".") < best[0].count("."):
                best = (name, mod)
    if best is None:
        raise ModelError(f"cannot find the {n_layers} transformer blocks in {type(model).__name__}")
    return best


class HFAdapter(ModelAdapter):
    """Wraps a transformers ``PreTrainedModel`` and its (fast) tokenizer."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "hf", device="auto", task: str = "base"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.task = task
        self.device = resolve_device(device)
        self.model.to(self.device)
        cfg = model.config
        self.config = cfg
        self.kind = "decoder" if getattr(cfg, "is_decoder", False) or _is_causal(cfg) else "encoder"
        n_layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0))
        self.block_path, self.blocks = _find_blocks(model, n_layers)
        self.n_layers = n_layers
        self.hidden_size = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        self.n_heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        self._attn = [self._sub(b, _ATTN_OUT) for b in self.blocks]
        self._mlp = [self._sub(b, _MLP_DOWN) for b in self.blocks]
        self.max_length = int(
            min(
                getattr(tokenizer, "model_max_length", 10**9) or 10**9,
                getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 10**9,
            )
        )
        if getattr(tokenizer, "pad_token", None) is None and tokenizer is not None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"{name}: a fast tokenizer is required for word alignment")
        self._sizes = self._compute_sizes()

    @staticmethod
    def _sub(block: nn.Module, candidates: Sequence[str]) -> nn.Module | None:
        for path in candidates:
            m = _get(block, path)
            if m is not None:
                return m
        return None

    def _compute_sizes(self) -> dict[str, int]:
        sizes = {"layer.0": self.hidden_size}
        for i in range(1, self.n_layers + 1):
            sizes[f"layer.{i}"] = self.hidden_size
            if self._mlp[i - 1] is not None:
                sizes[f"layer.{i}.mlp"] = _in_features(self._mlp[i - 1])
            if self._attn[i - 1] is not None:
                sizes[f"layer.{i}.attn"] = _in_features(self._attn[i - 1])
        return sizes

    def layers(self) -> dict[str, int]:
        return dict(self._sizes)

    def hidden_layers(self) -> list[str]:
        return [f"layer.{i}" for i in range(self.n_layers + 1)]

    def heads(self, layer: str) -> tuple[int, int]:
        size = self.check_layer(layer)
        if not layer.endswith(".attn"):
            raise ModelError(f"{layer} is not an attention component (use layer.i.attn)")
        return self.n_heads, size // self.n_heads

    # -- hooks ---------------------------------------------------------------------------
    def _register(self, layer: str, fn: HookFn):
        parts = layer.split(".")
        i = int(parts[1])
        if len(parts) == 2 and i == 0:
            return self.blocks[0].register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
        if len(parts) == 2:
            return self.blocks[i - 1].register_forward_hook(_out_hook(fn))
        target = self._mlp[i - 1] if parts[2] == "mlp" else self._attn[i - 1]
        return target.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)

    # -- encoding ------------------------------------------------------------------------
    def encode(self, sentences, max_length: int | None = None) -> Batch:
        """Tokenise sentences given as word lists (or strings, split on whitespace).

        Words are joined with single spaces and tokenised as running text (so byte-level BPE and
        SentencePiece see the spaces they were trained with); each token is mapped to its word
        through the tokenizer's character offsets, which is exact for any fast tokenizer.
        """
        words = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        if not words:
            raise ModelError("encode() needs at least one sentence")
        texts, owners = zip(*(_join(w) for w in words))
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        if max_length is None and enc["input_ids"].shape[1] > self.max_length:
            raise ModelError(
                f"a sentence has {enc['input_ids'].shape[1]} tokens, over the model maximum of "
                f"{self.max_length}; extraction splits such sentences into windows"
            )
        word_ids = [_word_ids(offs, owner) for offs, owner in zip(enc["offset_mapping"].tolist(), owners)]
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in enc["input_ids"].tolist()]
        return Batch(inputs, word_ids, [len(w) for w in words], enc["attention_mask"], tokens).to(self.device)

    def token_count(self, words: Sequence[str]) -> int:
        """Number of tokens (special tokens included) a word list encodes to."""
        return len(self.tokenizer(_join(list(words))[0])["input_ids"])

    def token_counts(self, sentences: Sequence[Sequence[str]]) -> list[int]:
        """Token counts of many word lists in one (parallel, Rust-side) tokenizer call."""
        enc = self.tokenizer([_join(list(w))[0] for w in sentences])
        return [len(ids) for ids in enc["input_ids"]]

    def forward(self, batch: Batch, **kwargs):
        return self.model(**batch.inputs, **kwargs)

    # -- vocabulary ----------------------------------------------------------------------
    def token_id(self, token: str | int) -> int:
        """The vocabulary id of ``token``: an id, a vocabulary item as the tokenizer writes it (``"Ġcat"``,
        ``"[MASK]"``), or a text that encodes to exactly one token (``" cat"``; the leading space matters
        for byte-level BPE, so no space is added or removed)."""
        size = len(self.tokenizer)
        if isinstance(token, int) and not isinstance(token, bool):
            if not 0 <= token < size:
                raise ParameterError(f"token id {token} out of range: the vocabulary of {self.name} has {size} entries")
            return int(token)
        vocab = self.tokenizer.get_vocab()
        if token in vocab:
            return int(vocab[token])
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ParameterError(
                f"{token!r} is not a single token of {self.name}: it encodes to "
                f"{self.tokenizer.convert_ids_to_tokens(ids)}; give one token (e.g. with its leading space)"
            )
        return int(ids[0])

    def token_str(self, token_id: int) -> str:
        """The text of one vocabulary item (``" cat"`` for GPT-2's ``"Ġcat"``); a byte-level piece that is not
        text on its own keeps its vocabulary spelling."""
        text = self.tokenizer.decode([int(token_id)])
        return self.tokenizer.convert_ids_to_tokens(int(token_id)) if "\ufffd" in text else text

    # -- attention patterns ----------------------------------------------------------------
    @contextlib.contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Run the block with the eager attention implementation, the one that materialises the attention
        weights (sdpa and flash kernels never form them, and ``output_attentions=True`` then returns an empty
        tuple); the previous implementation is restored on exit, also on error."""
        models = [m for m in self.model.modules() if hasattr(m, "set_attn_implementation") and hasattr(m, "config")]
        prev = [(m, getattr(m.config, "_attn_implementation", None)) for m in models]
        try:
            for m, impl in prev:
                if impl not in (None, "eager"):
                    m.set_attn_implementation("eager")
            yield
        finally:
            for m, impl in prev:
                if impl is not None and getattr(m.config, "_attn_implementation", None) != impl:
                    m.set_attn_implementation(impl)

    def attention_patterns(self, batch: Batch) -> tuple[object, list[torch.Tensor]]:
        """Forward ``batch`` and return ``(output, [pattern of block i: [batch, heads, query, key]])``.

        The patterns are the post-softmax weights that each block's self-attention module returns in an
        eager forward (:meth:`eager_attention`); they are read by forward hooks on the block's submodules
        (the first output tensor of shape ``[batch, heads, tokens, tokens]`` whose rows sum to 1), so they
        also come from models wrapped in a custom head, and hooks and interventions active around the
        call apply.
        """
        B, T = batch.inputs["input_ids"].shape
        found: list[torch.Tensor | None] = [None] * self.n_layers

        def make(i):
            def hook(module, args, output):
                if found[i] is None:
                    found[i] = _find_pattern(output, B, self.n_heads, T)

            return hook

        handles = [sub.register_forward_hook(make(i)) for i, blk in enumerate(self.blocks)
                   for sub in blk.modules() if sub is not blk]
        kwargs = {"output_attentions": True} if _accepts(self.model.forward, "output_attentions") else {}
        try:
            with self.eager_attention():
                out = self.forward(batch, **kwargs)
        finally:
            for h in handles:
                h.remove()
        missing = [i + 1 for i, p in enumerate(found) if p is None]
        if missing:
            raise ModelError(f"{self.name}: no attention weights found in blocks {missing} (eager forward)")
        return out, found  # type: ignore[return-value]

    # -- final norm and unembedding (logit lens, direct logit attribution) -------------------
    def final_norm(self) -> nn.Module | None:
        """The norm applied to the last block's output before the head (GPT-2 ``ln_f``, Llama ``norm``):
        a child of the module holding the blocks, registered after them, whose class is a norm (or one named
        ``final...`` registered before them, as in OPT; a norm before the blocks is otherwise an embedding
        norm, as in BLOOM); ``None`` when there is none (post-norm encoders such as BERT). The logit lens
        checks the choice against the model's own logits."""
        parent_path = self.block_path.rpartition(".")[0]
        parent = _get(self.model, parent_path) if parent_path else self.model
        after, norms = False, []
        for name, child in (parent.named_children() if parent is not None else []):
            if child is self.blocks:
                after = True
            elif "norm" in type(child).__name__.lower() and (after or name.startswith("final")):
                norms.append(child)
        return norms[-1] if norms else None

    def lm_head(self) -> nn.Module:
        """The head that maps the (final-normed) last hidden state to vocabulary logits: the top-level child
        of the model that holds its output embeddings (GPT-2 ``lm_head``, BERT ``cls``)."""
        get = getattr(self.model, "get_output_embeddings", None)
        out_emb = get() if get is not None else None
        if out_emb is None:
            raise ModelError(f"{self.name} (task {self.task}) has no language-model head: load it with "
                             "task causal-lm (decoders) or masked-lm (encoders)")
        for _, child in self.model.named_children():
            mods = list(child.modules())
            if any(m is out_emb for m in mods) and not any(m is self.blocks for m in mods):
                return child
        raise ModelError(f"{self.name}: cannot find the module that holds the output embeddings")

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of residual-stream vectors ``[..., hidden]``: final norm, then the LM head (the
        logit lens of nostalgebraist 2020)."""
        norm = self.final_norm()
        return self.lm_head()(norm(hidden) if norm is not None else hidden)

    def unembedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_U [vocab, hidden], b_U [vocab] or None)`` when the LM head is one linear map (decoders);
        a head that transforms first (BERT's dense + GELU + LayerNorm) has no such matrix."""
        head = self.lm_head()
        w = getattr(head, "weight", None)
        if w is None or w.dim() != 2 or not isinstance(head, nn.Linear):
            raise ModelError(f"{self.name}: the LM head ({type(head).__name__}) is not a single linear unembedding "
                             "(a BERT-style MLM head applies a nonlinear transform first)")
        return w, head.bias

    def output_projection(self, layer: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W [in, out], b [out] or None)`` of the projection whose input is the hook point ``layer.i.attn``
        (the attention output projection; head h owns input rows ``h*head_dim .. (h+1)*head_dim - 1``) or
        ``layer.i.mlp`` (the MLP down projection): ``block output = act @ W + b``."""
        self.check_layer(layer)
        parts = layer.split(".")
        if len(parts) != 3:
            raise ModelError(f"{layer} is not an attention or MLP component (use layer.i.attn or layer.i.mlp)")
        mod = (self._mlp if parts[2] == "mlp" else self._attn)[int(parts[1]) - 1]
        w = mod.weight
        if type(mod).__name__ != "Conv1D":  # transformers' Conv1D stores [in, out]; nn.Linear [out, in]
            w = w.T
        return w, getattr(mod, "bias", None)


def _pre_hook(fn: HookFn):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0], None)
            if new is not None:
                return (new, *args[1:]), kwargs
        else:
            new = fn(kwargs["hidden_states"], None)
            if new is not None:
                return args, {**kwargs, "hidden_states": new}
        return None

    return hook


def _out_hook(fn: HookFn):
    def hook(module, args, output):
        act = output[0] if isinstance(output, tuple) else output
        new = fn(act, None)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def _find_pattern(output, batch: int, heads: int, tokens: int) -> torch.Tensor | None:
    """The attention weights among a module's outputs: ``[batch, heads, tokens, tokens]``, non-negative rows
    summing to 1 (which tells them from cached keys or values of the same shape)."""
    items = output if isinstance(output, tuple | list) else (output,)
    for t in items:
        if torch.is_tensor(t) and t.dim() == 4 and tuple(t.shape) == (batch, heads, tokens, tokens):
            with torch.no_grad():
                rows = t.detach().float().sum(-1)
                # a fully masked query row (padding) may come out all zeros instead of summing to 1
                if bool((t >= 0).all()) and bool((((rows - 1).abs() < 1e-3) | (rows.abs() < 1e-3)).all()):
                    return t
    return None


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _is_causal(cfg) -> bool:
    archs = " ".join(getattr(cfg, "architectures", None) or [])
    return "CausalLM" in archs or getattr(cfg, "model_type", "") in {
        "gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2", "qwen3", "phi", "phi3", "gemma", "gemma2",
        "opt", "bloom", "falcon", "gpt_neox", "olmo", "smollm3",
    }


def _join(words: Sequence[str]) -> tuple[str, list[int]]:
    """``(text, owner)`` where ``owner[c]`` is the word index of character ``c`` (-1 for spaces)."""
    owner: list[int] = []
    for i, w in enumerate(words):
        if i:
            owner.append(-1)
        owner.extend([i] * len(w))
    return " ".join(words), owner


def _word_ids(offsets: Sequence[Sequence[int]], owner: Sequence[int]) -> list[int | None]:
    out: list[int | None] = []
    for s, e in offsets:
        w = None
        for c in range(s, min(e, len(owner))):
            if owner[c] >= 0:
                w = owner[c]
                break
        out.append(w)
    return out


# --------------------------------------------------------------------------------------------
TASKS = {
    "base": "AutoModel",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
}


def load_hf(
    name_or_path: str,
    task: str = "base",
    device="auto",
    attn_implementation: str | None = None,
    allow_download: bool = False,
    **model_kwargs,
) -> HFAdapter:
    """Load any HF model + tokenizer from a local directory or the local Hugging Face cache.

    Nothing is fetched from the hub unless ``allow_download=True``: transformers gets
    ``local_files_only=True``, so a name that is neither a directory nor cached fails at once (no
    network, no retries), with the closest embedded or cached name suggested."""
    import transformers  # heavy: only loading needs it

    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    local = os.path.isdir(name_or_path)
    kw = {} if allow_download and not local else {"local_files_only": True}
    if attn_implementation:
        model_kwargs["attn_implementation"] = attn_implementation
    auto = getattr(transformers, TASKS[task])
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **kw)
        model = auto.from_pretrained(name_or_path, **kw, **model_kwargs)
    except (OSError, ValueError) as e:
        if local:
            raise ModelError(f"cannot load a {task} model from {name_or_path}: {e}") from e
        hint = _suggest(name_or_path)
        raise ModelError(
            f"cannot load {name_or_path!r}: it is not a local directory and "
            + ("the hub did not provide it" if allow_download else "no cached copy was found")
            + (f". Did you mean {hint!r}?" if hint else ".")
            + ("" if allow_download else " finegrain never downloads unless asked (allow_download=True, "
                                         "--allow-download): pass a local path, a cached name, or the embedded "
                                         "defaults 'minilm' / 'textgenrnn'.")
            + f" ({type(e).__name__})"
        ) from None
    return HFAdapter(model, tokenizer, name=name_or_path, device=device, task=task)


def _hub_cache_names(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Model names in the local Hugging Face cache (``models--org--name`` directories)."""
    if cache_dir is None:
        cache_dir = constants.HF_HUB_CACHE
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return []
    return sorted(e[len("models--"):].replace("--", "/") for e in entries if e.startswith("models--"))


def _suggest(name: str) -> str | None:
    """The closest embedded, cached or local (current directory) model name to ``name`` (difflib)."""
    try:
        here = [e for e in os.listdir(".") if os.path.isfile(os.path.join(e, "config.json"))]
    except OSError:
        here = []
    candidates = [*EMBEDDED, *_hub_cache_names(), *here]
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not match and "/" in name:  # org/name: compare the model part alone too
        match = difflib.get_close_matches(name.rsplit("/", 1)[1], candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def attach(model: nn.Module, tokenizer, name: str = "model", device="auto") -> HFAdapter:
    """Wrap an already-built transformers model (e.g. a tiny random one) as an adapter."""
    return HFAdapter(model, tokenizer, name=name, device=device)

