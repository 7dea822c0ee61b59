"""Tiny, randomly initialised encoder-decoders (T5, BART, Marian) for tests and examples.

Built from config objects in well under a second, fully offline. They share the ``charpiece``
tokenizer of :mod:`finegrain.testing` (every character one subword, so a word of *n* characters is
exactly *n* tokens and the expected alignment is known from the words themselves), with the special
tokens of each family: ``tokens [SEP]`` for T5 and Marian (``[SEP]`` is the end-of-sequence token),
``[CLS] tokens [SEP]`` for BART (``<s> ... </s>``).
"""

from __future__ import annotations

import torch

from finegrain.models.seq2seq import Seq2SeqAdapter
from finegrain.testing import charpiece_tokenizer

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # ids of [PAD], [UNK], [CLS], [SEP] in the charpiece vocabulary


def seq2seq_tokenizer(bos: bool = False):
    """The charpiece tokenizer with an end-of-sequence token (and, with ``bos``, a start token)."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from tokenizers import processors

    tok = charpiece_tokenizer()
    single = "[CLS] $A [SEP]" if bos else "$A [SEP]"
    specials = [("[CLS]", BOS), ("[SEP]", EOS)] if bos else [("[SEP]", EOS)]
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=single + " $B [SEP]", special_tokens=specials
    )
    tok.eos_token = "[SEP]"
    tok.bos_token = "[CLS]"
    return tok


def _build(cls, cfg, seed: int):
    # a local RNG scope: the model's initialisation is reproducible and the global state untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg)


def _ids(tok) -> dict:
    """The special-token ids a config needs, from the tokenizer."""
    return {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id}


def tiny_t5(seed: int = 0, layers: int = 3, decoder_layers: int = 3, hidden: int = 32, heads: int = 4,
            gated: bool = False, tokenizer=None) -> Seq2SeqAdapter:
    """A T5 (pre-norm, relative positions, final layer norm) with the charpiece tokenizer (or
    ``tokenizer``)."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tokenizer or seq2seq_tokenizer()
    ids = _ids(tok)
    cfg = T5Config(
        vocab_size=len(tok), d_model=hidden, d_kv=hidden // heads, d_ff=hidden * 2, num_layers=layers,
        num_decoder_layers=decoder_layers, num_heads=heads, relative_attention_num_buckets=8, dropout_rate=0.0,
        feed_forward_proj="gated-gelu" if gated else "relu", pad_token_id=ids["pad_token_id"],
        eos_token_id=ids["eos_token_id"], decoder_start_token_id=ids["pad_token_id"], attn_implementation="eager",
    )
    return Seq2SeqAdapter(_build(T5ForConditionalGeneration, cfg, seed), tok, name="tiny-t5", device="cpu")


def tiny_bart(seed: int = 0, layers: int = 3, decoder_layers: int = 3, hidden: int = 32,
              heads: int = 4, tokenizer=None) -> Seq2SeqAdapter:
    """A BART (post-norm, learned positions, embedding layer norm) with the charpiece tokenizer (or
    ``tokenizer``)."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from transformers import BartConfig, BartForConditionalGeneration

    tok = tokenizer or seq2seq_tokenizer(bos=True)
    ids = _ids(tok)
    cfg = BartConfig(
        vocab_size=len(tok), d_model=hidden, encoder_layers=layers, decoder_layers=decoder_layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=hidden * 2,
        decoder_ffn_dim=hidden * 2, max_position_embeddings=128, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, **ids, decoder_start_token_id=ids["eos_token_id"],
        forced_eos_token_id=ids["eos_token_id"], attn_implementation="eager",
    )
    return Seq2SeqAdapter(_build(BartForConditionalGeneration, cfg, seed), tok, name="tiny-bart", device="cpu")


def tiny_marian(seed: int = 0, layers: int = 3, decoder_layers: int = 3, hidden: int = 32,
                heads: int = 4, tokenizer=None) -> Seq2SeqAdapter:
    """A Marian (post-norm, sinusoidal positions, embeddings scaled by the stack) with the charpiece
    tokenizer (or ``tokenizer``)."""
    # heavy: transformers and tokenizers, imported when a tiny model is built
    from transformers import MarianConfig, MarianMTModel

    tok = tokenizer or seq2seq_tokenizer()
    ids = _ids(tok)
    cfg = MarianConfig(
        vocab_size=len(tok), decoder_vocab_size=len(tok), d_model=hidden, encoder_layers=layers,
        decoder_layers=decoder_layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=hidden * 2, decoder_ffn_dim=hidden * 2, max_position_embeddings=128, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=ids["pad_token_id"],
        eos_token_id=ids["eos_token_id"], decoder_start_token_id=ids["pad_token_id"], scale_embedding=True,
        share_encoder_decoder_embeddings=True, attn_implementation="eager",
    )
    return Seq2SeqAdapter(_build(MarianMTModel, cfg, seed), tok, name="tiny-marian", device="cpu")


TINY = {"t5": tiny_t5, "bart": tiny_bart, "marian": tiny_marian}
