"""Tiny, randomly initialised models and tokenizers for tests, examples and benchmarks.

Built from configs in well under a second, fully offline. The ``charpiece`` tokenizer is a real
fast WordPiece tokenizer whose vocabulary holds only single characters, so a word of *n*
characters is always exactly *n* subwords (the idea of NeuroX's fake tokenizer: the expected
alignment is known from the word itself, which makes exhaustive alignment tests possible).
"""

from __future__ import annotations

import string

import torch
from torch import nn

from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter
from finegrain.models.textgenrnn import TextgenrnnModel

CHARS = string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,;:!?'\"-()"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def charpiece_tokenizer(lowercase: bool = False):
    """Fast WordPiece tokenizer: every character is one subword (``##c`` inside a word)."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    for c in CHARS:
        vocab.setdefault("##" + c, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )


def bpe_tokenizer(texts: list[str] | None = None, vocab_size: int = 300):
    """A small byte-level BPE (GPT-2 style, ``Ġ`` marks a leading space) trained on ``texts``."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = texts or [
        "the cat sat on the mat", "the dogs run in the park", "a nurse said that she was tired",
        "the keys to the cabinet are on the table", "unbelievable results were reported today",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        model_max_length=64,
    )


def tiny_bert(task: str = "base", num_labels: int = 2, seed: int = 0, hidden_act: str = "gelu",
              layers: int = 2, hidden: int = 32) -> HFAdapter:
    """A 2-layer, 32-wide BERT with the charpiece tokenizer."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    torch.manual_seed(seed)
    tok = charpiece_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=hidden * 2, max_position_embeddings=128, num_labels=num_labels, hidden_act=hidden_act,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )
    cls = {
        "base": BertModel, "masked-lm": BertForMaskedLM, "sequence-classification": BertForSequenceClassification,
        "token-classification": BertForTokenClassification,
    }[task]
    return HFAdapter(cls(cfg), tok, name=f"tiny-bert-{task}", device="cpu", task=task)


def tiny_gpt2(task: str = "causal-lm", seed: int = 0, layers: int = 2, hidden: int = 32) -> HFAdapter:
    """A 2-layer, 32-wide GPT-2 with a small byte-level BPE tokenizer."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    torch.manual_seed(seed)
    tok = bpe_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=4, n_positions=64, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(cfg) if task == "causal-lm" else GPT2Model(cfg)
    return HFAdapter(model, tok, name=f"tiny-gpt2-{task}", device="cpu", task=task)


def sharpen(adapter: HFAdapter, std: float = 0.4, seed: int = 0) -> HFAdapter:
    """Random tiny models are nearly constant; larger weights give targets worth attributing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in adapter.model.modules():
            if isinstance(m, torch.nn.Linear | torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return adapter


LSTM_CHARS = ["<pad>", "<s>", " ", ".", ","] + list(string.ascii_lowercase)


def tiny_lstm_lm(seed: int = 0, task: str = "lm", embedding: int = 8, hidden: int = 12, layers: int = 2,
                 std: float = 0.8, **kw):
    """A small character LSTM (a language model, or a 2-class classifier with ``task="classification"``)
    wrapped as users wrap theirs (``LSTMAdapter.from_modules``; bos ``<s>``, padding index 0), with
    N(0, std) weights from a local generator."""
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global generator
        emb = nn.Embedding(len(LSTM_CHARS), embedding, padding_idx=0)
        lstm = nn.LSTM(embedding, hidden, layers, batch_first=True)
        head = nn.Linear(hidden, len(LSTM_CHARS) if task == "lm" else 2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*emb.parameters(), *lstm.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * std)
        emb.weight[0] = 0
    return LSTMAdapter.from_modules(emb, lstm, head, LSTM_CHARS, task, level="char", bos="<s>", device="cpu", **kw)


def tiny_textgenrnn(context: str = "window", seed: int = 0, window: int = 6):
    """textgenrnn's architecture (embedding -> 2 LSTMs -> attention over [emb, h1, h2] -> dense) at toy size
    with a ``window``-character context, random weights from a local generator."""
    with torch.random.fork_rng(devices=[]):
        model = TextgenrnnModel(vocab_size=len(LSTM_CHARS), embedding_dim=6, hidden_size=5, window=window,
                                context=context)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return LSTMAdapter(model, LSTM_CHARS, level="char", bos="<s>", unk=0, pad_index=0, name="tiny-textgenrnn",
                       device="cpu")
