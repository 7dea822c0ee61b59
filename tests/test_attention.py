"""Attention patterns: equal to eager output_attentions=True (BERT, GPT-2, Llama), also for sdpa models
(whose output_attentions is empty), with the implementation restored; summary scores by hand; the result
protocol."""

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.errors import ModelError, ParameterError
from finegrain.lens import AttentionPatterns, attention_patterns
from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter
from finegrain.results import result_from_json
from finegrain.testing import bpe_tokenizer, charpiece_tokenizer, sharpen

TEXTS = ["the cat sat on the mat", "the dogs run"]


def _build(family: str, impl: str) -> HFAdapter:
    import transformers as tr

    torch.manual_seed(0)
    if family == "bert":
        tok = charpiece_tokenizer()
        cfg = tr.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, attn_implementation=impl)
        model, task = tr.BertForMaskedLM(cfg), "masked-lm"
    else:
        tok = bpe_tokenizer()
        if family == "gpt2":
            cfg = tr.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                attn_implementation=impl, bos_token_id=0, eos_token_id=0)
            model = tr.GPT2LMHeadModel(cfg)
        else:
            cfg = tr.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 attn_implementation=impl, bos_token_id=0, eos_token_id=0, pad_token_id=0)
            model = tr.LlamaForCausalLM(cfg)
        task = "causal-lm"
    return sharpen(HFAdapter(model, tok, name=f"{family}-{impl}", device="cpu", task=task), std=0.3)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_patterns_equal_eager_output_attentions(family):
    eager, sdpa = _build(family, "eager"), _build(family, "sdpa")
    b = eager.encode(TEXTS)
    with torch.no_grad():
        ref = eager.model(**b.inputs, output_attentions=True).attentions
        empty = sdpa.model(**b.inputs, output_attentions=True).attentions
    assert not empty  # sdpa never forms the weights: this is why patterns need an eager forward
    for ad in (eager, sdpa):
        cache = attention_patterns(ad, TEXTS)
        assert cache.layers == ["layer.1.attn", "layer.2.attn"] and cache.lengths == b.attention_mask.sum(1).tolist()
        for li in range(2):
            n = cache.lengths[1]
            P, R = cache[li], ref[li].numpy()
            np.testing.assert_allclose(P[0], R[0], atol=1e-6)
            np.testing.assert_allclose(P[1, :, :n, :n], R[1, :, :n, :n], atol=1e-6)  # real tokens of the padded row
        assert ad.model.config._attn_implementation == ad.name.split("-")[1]  # restored
    assert not np.allclose(cache[0][0, 0], cache[0][0, 1])  # heads differ (sharpened weights)


def test_scores_by_hand_and_protocol(tmp_path):
    n = 4
    prev = np.zeros((n, n))
    prev[0, 0] = 1
    prev[np.arange(1, n), np.arange(n - 1)] = 1
    uniform = np.full((n, n), 1 / n)
    P = np.stack([np.eye(n), prev, uniform])[None].astype(np.float32)  # [1 sentence, 3 heads, n, n]
    cache = AttentionPatterns(model="m", layers=["layer.1.attn"], tokens=[list("abcd")], lengths=[n], patterns=[P])
    s = cache.scores()
    np.testing.assert_allclose(s["self"][0], [1, 0.25, 0.25])
    np.testing.assert_allclose(s["previous"][0], [0, 1, 0.25])
    np.testing.assert_allclose(s["first"][0], [0.25, 0.5, 0.25])
    np.testing.assert_allclose(s["entropy"][0], [0, 0, np.log(n)], atol=1e-6)
    back = result_from_json(cache.to_json())
    assert isinstance(back, AttentionPatterns) and np.array_equal(back["layer.1"], P)
    assert back.head("layer.1.attn", 1).shape == (n, n)
    with pytest.raises(ParameterError):
        cache.head("layer.1.attn", 3)
    with pytest.raises(ParameterError):
        cache["layer.5"]
    assert cache.plot(tmp_path / "a.png").stat().st_size > 1000
    assert "layer.1.attn head 1" in cache.table() and "<img" in cache._repr_html_()


def test_patterns_under_an_intervention_and_lstm_refused(tiny_gpt2, tmp_path):
    from finegrain.intervene import Zero, intervene

    base = attention_patterns(tiny_gpt2, TEXTS[0])
    with intervene(tiny_gpt2, Zero("layer.1")):  # block 2 now sees a zero residual
        edited = attention_patterns(tiny_gpt2, TEXTS[0])
    np.testing.assert_array_equal(base[0], edited[0])
    assert not np.allclose(base[1], edited[1])
    files = base.save_plots(tmp_path)
    assert [f.name for f in files] == ["attention_layer.1.png", "attention_layer.2.png"]

    lstm = LSTMAdapter.from_modules(nn.Embedding(4, 3), nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 4),
                                    ["<pad>", "a", "b", " "], level="char", device="cpu")
    with pytest.raises(ModelError, match="need a transformer"):
        attention_patterns(lstm, "a b")
