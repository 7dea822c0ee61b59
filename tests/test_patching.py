"""Activation patching and attribution patching: exact restoration, planted circuits (GPT-2 and LSTM),
agreement with intervene's head edit, batching, and the agreement of the first-order estimate."""

import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.errors import ParameterError
from finegrain.intervene import Head, Set, intervene
from finegrain.models.hf import HFAdapter
from finegrain.models.lstm import LSTMAdapter
from finegrain.patching import PatchingResult, PatchMetric, activation_patching, attribution_patching
from finegrain.results import ResultList, result_from_json
from finegrain.testing import bpe_tokenizer, sharpen, tiny_bert

CLEAN, CORRUPT = "the on the the", "the to the the"  # 4 tokens each; they differ at position 1


# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _tokenizer():
    return bpe_tokenizer()  # trained on the fly: once per module


# a 1-layer GPT-2 whose answer flows from position 1 to the last position through heads 0 and 1 only
def planted_gpt2(scale: float = 1.0, lm_scale: float = 5.0, head1: float = 0.5) -> HFAdapter:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    D, H = 8, 4
    cfg = GPT2Config(vocab_size=len(tok), n_embd=D, n_layer=1, n_head=H, n_positions=16, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, attn_implementation="eager",
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    A, B = tok.convert_tokens_to_ids(["Ġon", "Ġto"])
    g = torch.Generator().manual_seed(0)
    r = torch.randn(D - 1, generator=g)
    r = (r - r.mean()) * scale  # the same for every token (LayerNorm has a variance to divide by), mean 0
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f):
            ln.weight.fill_(1.0)
        model.transformer.wte.weight[:, 1:] = r
        model.transformer.wte.weight[A, 0] = 1.0
        model.transformer.wte.weight[B, 0] = -1.0
        attn = model.transformer.h[0].attn
        attn.c_attn.weight[0, 2 * D + 0] = 1.0  # head 0's first value unit reads the feature (Q = K = 0: uniform)
        attn.c_attn.weight[0, 2 * D + 2] = head1  # head 1's first value unit too, more weakly
        attn.c_proj.weight[0, 0] = 1.0  # both write it back into residual dimension 0
        attn.c_proj.weight[2, 0] = 1.0
        model.lm_head.weight[A, 0] = lm_scale
        model.lm_head.weight[B, 0] = -lm_scale
    return HFAdapter(model, tok, name="planted-gpt2", device="cpu", task="causal-lm")


def test_planted_gpt2_patching_finds_exactly_the_circuit():
    ad = planted_gpt2()
    res = activation_patching(ad, CLEAN, CORRUPT, " on", " to", components="resid")
    assert res.m_clean > 0 > res.m_corrupt
    n = res.normalised
    assert res.rows == ["layer.0", "layer.1"]
    np.testing.assert_allclose(n, [[0, 1, 0, 0], [0, 0, 0, 1]], atol=1e-6)  # the token, then the last position
    heads = activation_patching(ad, CLEAN, CORRUPT, " on", " to", components="heads", positions=[1, 3])
    h = heads.normalised
    assert heads.columns == ["1:Ġon/Ġto", "3:Ġthe"]
    assert np.all((h >= -1e-9) & (h <= 1 + 1e-9))  # a monotone planted circuit: effects in [0, 1]
    assert 0.5 < h[0, 1] < 1 and 0 < h[1, 1] < 0.5  # head 0 carries more than head 1 (weight 1 vs 0.5)
    np.testing.assert_allclose(h[2:, 1], 0, atol=1e-12)  # heads 2 and 3 carry nothing
    np.testing.assert_allclose(h[:, 0], 0, atol=1e-12)  # a head's output at the token itself reaches no logit
    mlp = activation_patching(ad, CLEAN, CORRUPT, " on", " to", components="mlp")
    np.testing.assert_allclose(mlp.normalised, 0, atol=1e-12)
    attn = activation_patching(ad, CLEAN, CORRUPT, " on", " to", components="attn")
    np.testing.assert_allclose(attn.normalised, [[0, 0, 0, 1]], atol=1e-6)
    noise = activation_patching(ad, CLEAN, CORRUPT, " on", " to", direction="noise")
    np.testing.assert_allclose(noise.normalised, [[1, 0, 1, 1], [1, 1, 1, 0]], atol=1e-6)  # necessary: drops to 0
    assert res.top(2)[0][2] == pytest.approx(1.0)


def test_last_layer_every_position_restores_the_clean_logit(tiny_gpt2):
    clean, corrupt = "a nurse said that she was tired", "a nurse said that he was tired"
    last = f"layer.{tiny_gpt2.n_layers}"
    res = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", components=[last], positions="all")
    assert res.effects[0][0] == pytest.approx(res.m_clean, abs=1e-6)
    assert res.normalised[0, 0] == pytest.approx(1.0, abs=1e-4)
    # and the corrupted activation everywhere gives the corrupted logit (noising)
    noise = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", components=[last], positions="all",
                                direction="noise")
    assert noise.effects[0][0] == pytest.approx(noise.m_corrupt, abs=1e-6)
    # per position: only the last position matters at the last layer
    each = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", components=[last])
    np.testing.assert_allclose(each.normalised[0, :-1], 0, atol=1e-6)
    assert each.normalised[0, -1] == pytest.approx(1.0, abs=1e-4)


def test_encoder_classifier_patching_restores_exactly():
    ad = sharpen(tiny_bert("sequence-classification", seed=1))
    clean, corrupt = "the cat sat", "the cot sat"  # the charpiece tokenizer: one token per character
    res = activation_patching(ad, clean, corrupt, "LABEL_1", "LABEL_0", components="resid", positions="all")
    assert res.metric.startswith("logit('LABEL_1') - logit('LABEL_0')")
    np.testing.assert_allclose(res.normalised[:, 0], 1.0, atol=1e-4)  # every layer, all positions: the clean run
    each = activation_patching(ad, clean, corrupt, 1, 0, components=["layer.0"])
    diff = [i for i, (a, b) in enumerate(zip(each.tokens_clean, each.tokens_corrupt)) if a != b]
    assert diff == [5]
    assert each.normalised[0, 5] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(np.delete(each.normalised[0], 5), 0, atol=1e-4)  # float32 noise of batching
    # token classification: classes (not vocabulary items) at a given position
    tc = sharpen(tiny_bert("token-classification", num_labels=3))
    tag = activation_patching(tc, clean, corrupt, "LABEL_2", measure="prob", position=5, components=["layer.0"],
                              positions="all")
    b = tc.encode([clean.split()])
    with torch.no_grad():
        assert tag.m_clean == pytest.approx(float(torch.softmax(tc.forward(b).logits[0, 5], -1)[2]), abs=1e-6)
    with pytest.raises(ParameterError, match="give position"):
        activation_patching(tc, clean, corrupt, "LABEL_2")


def test_patching_a_head_equals_intervene_set(tiny_gpt2):
    clean, corrupt = "a nurse said that she was tired", "a nurse said that he was tired"
    res = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", components=[Head("layer.1.attn", 2)],
                              positions=[11, list(range(18))])
    bc, bk = tiny_gpt2.encode([clean.split()]), tiny_gpt2.encode([corrupt.split()])
    with torch.no_grad():
        _, cache = tiny_gpt2.run_with_cache(bc, ["layer.1.attn"])
    _, d = tiny_gpt2.heads("layer.1.attn")
    vals = cache["layer.1.attn"][:, :, 2 * d:3 * d]
    metric = PatchMetric(" the", " on").bind(tiny_gpt2, bk, tiny_gpt2.forward(bk))
    for c, pos in enumerate([[11], None]):
        with torch.no_grad(), intervene(tiny_gpt2, Set(Head("layer.1.attn", 2), vals, positions=pos)):
            want = float(metric(tiny_gpt2.forward(bk).logits)[0])
        assert res.effects[0][c] == pytest.approx(want, abs=1e-6)
    assert res.effects[0][1] != pytest.approx(res.m_corrupt, abs=1e-6)  # the head does something


def test_batched_equals_one_cell_per_forward(tiny_gpt2):
    clean, corrupt = "a nurse said that she was tired", "a nurse said that he was tired"
    kw = dict(components="heads", positions=[0, 11, 16, 17])
    big = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", batch_size=20, **kw)
    one = activation_patching(tiny_gpt2, clean, corrupt, " the", " on", batch_size=1, **kw)
    np.testing.assert_allclose(big.effects, one.effects, atol=1e-6)
    assert one.forwards == 8 * 4 + 2 and big.forwards == 2 + 2  # 32 cells: 20 + 12 per forward


def test_neuron_components_and_result_protocol(tiny_gpt2, tmp_path):
    clean, corrupt = "a nurse said that she was tired", "a nurse said that he was tired"
    res = activation_patching(tiny_gpt2, [clean, clean], [corrupt, corrupt], " the", " on",
                              components=["layer.1.mlp:3", "layer.2:0", "layer.1"], positions=[11, 17],
                              measure="prob")
    assert isinstance(res, ResultList) and len(res) == 2
    r = res[0]
    assert r.rows == ["layer.1.mlp:3", "layer.2:0", "layer.1"] and r.row_units[0] == [3]
    assert r.metric.startswith("prob(' the')")
    np.testing.assert_allclose(r.effects, res[1].effects)
    back = result_from_json(r.to_json())
    assert isinstance(back, PatchingResult) and back.to_dict() == r.to_dict()
    assert json.loads(r.to_json(tmp_path / "p.json"))["type"] == "PatchingResult"
    png = r.plot(tmp_path / "p.png")
    assert png.stat().st_size > 1000
    assert "layer.1.mlp:3" in r.table() and "<img" in r._repr_html_()


def test_bad_inputs_raise_clear_errors(tiny_gpt2):
    with pytest.raises(ParameterError, match="same number of tokens"):
        activation_patching(tiny_gpt2, "the cat sat", "the dogs sat down", " the", " on")
    with pytest.raises(ParameterError, match="not a single token"):
        activation_patching(tiny_gpt2, CLEAN, CORRUPT, " park", " on")
    with pytest.raises(ParameterError, match="direction"):
        activation_patching(tiny_gpt2, CLEAN, CORRUPT, " the", " on", direction="sideways")
    with pytest.raises(ParameterError, match="against"):
        activation_patching(tiny_gpt2, CLEAN, CORRUPT, " the", measure="logit_diff")
    with pytest.raises(ParameterError, match="not a neuron address"):
        activation_patching(tiny_gpt2, CLEAN, CORRUPT, " the", components=["layer.1:x"])
    with pytest.raises(ParameterError, match="no cell components"):
        activation_patching(tiny_gpt2, CLEAN, CORRUPT, " the", components="cell")
    same = activation_patching(tiny_gpt2, CLEAN, CLEAN, " the", " on")
    assert np.isnan(same.normalised).all() and "cannot be normalised" in same.table()


# ---------------------------------------------------------------------------------------------
# LSTM: unit 0 of lstm.1 latches the first character in its *cell*; nothing reads h_t[0] recurrently
VOCAB = ["<pad>", "<s>", " ", "a", "b", "c", "d", "x", "y"]


def planted_lstm() -> LSTMAdapter:
    g = torch.Generator().manual_seed(0)
    Hd = 5
    emb = nn.Embedding(len(VOCAB), 3, padding_idx=0)
    lstm = nn.LSTM(3, Hd, 1, batch_first=True)
    head = nn.Linear(Hd, len(VOCAB))
    with torch.no_grad():
        emb.weight.copy_(torch.randn(emb.weight.shape, generator=g))
        emb.weight[:, 0] = 0.0
        emb.weight[VOCAB.index("a"), 0], emb.weight[VOCAB.index("b"), 0] = 1.0, -1.0
        emb.weight[VOCAB.index("b"), 1:] = emb.weight[VOCAB.index("a"), 1:]
        for p in lstm.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        lstm.weight_ih_l0[:, 0] = 0.0  # only unit 0 sees the feature
        lstm.weight_hh_l0[:, 0] = 0.0  # and no gate reads h[0]: the information lives in c[0]
        for gate in range(4):
            lstm.weight_ih_l0[gate * Hd] = 0.0
            lstm.weight_hh_l0[gate * Hd] = 0.0
        lstm.bias_ih_l0[[0, Hd, 3 * Hd]] = 10.0  # unit 0: input, forget and output gates open
        lstm.bias_hh_l0[[0, Hd, 2 * Hd, 3 * Hd]] = 0.0
        lstm.bias_ih_l0[2 * Hd] = 0.0
        lstm.weight_ih_l0[2 * Hd, 0] = 3.0  # candidate tanh(3 * feature): only at 'a' / 'b'
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
        head.weight[VOCAB.index("x"), 0], head.weight[VOCAB.index("y"), 0] = 5.0, -5.0
    return LSTMAdapter.from_modules(emb, lstm, head, VOCAB, level="char", device="cpu")


def test_lstm_patching_propagates_through_time_and_finds_the_cell():
    ad = planted_lstm()
    clean, corrupt = "a cd", "b cd"
    res = activation_patching(ad, clean, corrupt, "x", "y", components=["embedding", "lstm.1", "lstm.1.cell"])
    n = res.normalised
    assert res.m_clean > 0 > res.m_corrupt
    np.testing.assert_allclose(n[0], [1, 0, 0, 0], atol=1e-6)  # the input character
    np.testing.assert_allclose(n[1], [0, 0, 0, 1], atol=1e-6)  # h at step 0 is read by no one; h at the end is
    np.testing.assert_allclose(n[2], [1, 1, 1, 1], atol=1e-6)  # c carries the feature from step 0 to the end
    units = activation_patching(ad, clean, corrupt, "x", "y", components=[f"lstm.1.cell:{u}" for u in range(5)],
                                positions=[0])
    np.testing.assert_allclose(units.normalised[:, 0], [1, 0, 0, 0, 0], atol=1e-6)  # exactly the planted unit
    every = activation_patching(ad, clean, corrupt, "x", "y", components=["lstm.1"], positions="all")
    assert every.effects[0][0] == pytest.approx(every.m_clean, abs=1e-6)
    # attribution patching through the per-step hooks: exact where the metric is linear in the activation (the
    # head reads h at the last step), an underestimate through the saturated gates and tanh
    both = activation_patching(ad, clean, corrupt, "x", "y", components=["embedding", "lstm.1", "lstm.1.cell"],
                               method="both")
    est = both.normalised_attribution
    assert est[1, 3] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(est[1, :3], 0, atol=1e-9)
    assert 0 < est[0, 0] < 0.5 and 0 < est[2, 0] < 0.9
    assert both.agreement["slope"] < 0.9


# ---------------------------------------------------------------------------------------------
def test_attribution_patching_agrees_where_first_order_is_good():
    # a large constant residual makes both LayerNorms nearly linear in the planted feature
    ad = planted_gpt2(scale=30.0, lm_scale=1.0)
    res = activation_patching(ad, CLEAN, CORRUPT, " on", " to", components="heads", method="both")
    a = res.agreement
    assert a["pearson"] > 0.999 and a["spearman"] > 0.95 and a["max_abs_error"] < 0.01
    assert a["slope"] == pytest.approx(1.0, abs=0.01)
    assert res.attribution is not None and "Pearson" in res.table()
    only = attribution_patching(ad, CLEAN, CORRUPT, " on", " to", components="heads")
    assert only.effects is None and only.forwards == 3
    np.testing.assert_allclose(only.normalised, res.normalised_attribution)
    # hand-check one cell: (a_clean - a_corrupt) . dm/da on the corrupted run
    bc, bk = ad.encode([CLEAN.split()]), ad.encode([CORRUPT.split()])
    with torch.no_grad():
        _, cc = ad.run_with_cache(bc, ["layer.1.attn"])
    grads = {}

    def keep(act, step):
        act.retain_grad()
        grads["a"] = act
        return None

    metric = PatchMetric(" on", " to").bind(ad, bk, ad.forward(bk))
    with ad.hooks({"layer.1.attn": keep}):
        metric(ad.forward(bk).logits)[0].backward()
    delta = cc["layer.1.attn"][0] - grads["a"][0].detach()
    want = float((delta * grads["a"].grad[0])[:, 0:2].sum())
    assert sum(only.attribution[0]) == pytest.approx(want, rel=1e-4, abs=1e-9)  # head 0, all positions


def test_attribution_patching_reports_low_agreement_where_saturated():
    # a probability metric saturated at the corrupted run: the gradient there is ~0, the exact effect is not
    ad = planted_gpt2(lm_scale=40.0)
    res = activation_patching(ad, CLEAN, CORRUPT, " on", measure="prob", components="resid", method="both")
    assert res.m_clean > 0.9 and res.m_corrupt < 1e-6
    assert res.normalised[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert res.agreement["max_abs_error"] > 0.9  # the estimate misses the whole effect
    assert abs(res.normalised_attribution[0, 1]) < 0.01
    assert res.agreement["slope"] < 0.01  # (its correlation stays high: it is blind to scale)
    assert "slope" in res.table()


def test_patch_command_takes_a_classification_head(monkeypatch, capsys):
    """`finegrain patch` had no --head: an encoder with the sentiment head could not be patched from the CLI."""
    import finegrain.attribute as fa
    from finegrain.cli import main

    ad = sharpen(tiny_bert("sequence-classification", seed=1))
    asked = {}

    def fake_head(spec, model, cache_dir=None, device="auto"):
        asked.update(spec=spec, model=model)
        return ad

    monkeypatch.setattr(fa, "head_adapter", fake_head)
    assert main(["patch", "--head", "builtin:sentiment", "--model", "minilm", "--clean", "the cat sat",
                 "--corrupt", "the cot sat", "--target", "LABEL_1", "--against", "LABEL_0", "--components",
                 "resid", "--positions", "all"]) == 0
    assert asked == {"spec": "builtin:sentiment", "model": "minilm"}
    ref = activation_patching(ad, "the cat sat", "the cot sat", "LABEL_1", "LABEL_0", components="resid",
                              positions="all")
    table = ref.table().rsplit("\n", 1)[0]  # all but the timing line
    assert table in capsys.readouterr().out and "layer.0   1.000" in table
