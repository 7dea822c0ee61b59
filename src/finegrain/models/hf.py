"""Adapter for Hugging Face transformers: encoders (BERT, RoBERTa, DistilBERT, ELECTRA, ...) and
decoders (GPT-2, Llama family, ...).

Hook points are found structurally: the list of transformer blocks, and inside each block the
attention output projection and the MLP down projection, whose *inputs* are the concatenated head
outputs and the MLP intermediate activations.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from finegrain.models.base import Batch, HookFn, ModelAdapter, ModelError, resolve_device

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
    **model_kwargs,
) -> HFAdapter:
    """Load any HF model + tokenizer from a local path or the local HF cache (never downloads
    when ``HF_HUB_OFFLINE=1``)."""
    import os

    import transformers

    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    local = os.path.isdir(name_or_path)
    kw = {"local_files_only": True} if (offline or local) else {}
    if attn_implementation:
        model_kwargs["attn_implementation"] = attn_implementation
    auto = getattr(transformers, TASKS[task])
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **kw)
        model = auto.from_pretrained(name_or_path, **kw, **model_kwargs)
    except (OSError, ValueError) as e:
        if local:
            raise ModelError(f"cannot load a {task} model from {name_or_path}: {e}") from e
        raise ModelError(
            f"cannot load {name_or_path!r}: it is not a local directory and no cached weights were found"
            f"{' (offline mode, HF_HUB_OFFLINE=1)' if offline else ''}. finegrain never downloads at run "
            f"time: pass a local path or use the embedded defaults 'minilm' / 'textgenrnn'. ({type(e).__name__})"
        ) from None
    return HFAdapter(model, tokenizer, name=name_or_path, device=device, task=task)


def attach(model: nn.Module, tokenizer, name: str = "model", device="auto") -> HFAdapter:
    """Wrap an already-built transformers model (e.g. a tiny random one) as an adapter."""
    return HFAdapter(model, tokenizer, name=name, device=device)

