"""Logit lens and direct logit attribution: the lens at the last layer is the model's output, DLA sums to
the logit (GPT-2 LayerNorm and Llama RMSNorm), and models where either would be wrong are refused."""

import numpy as np
import pytest
import torch

from finegrain.cli import main
from finegrain.errors import ModelError
from finegrain.lens import DLAResult, LogitLensResult, direct_logit_attribution, logit_lens
from finegrain.models.hf import HFAdapter
from finegrain.results import ResultList, result_from_json
from finegrain.testing import bpe_tokenizer, sharpen, tiny_bert

TEXT = "a nurse said that she was tired"


def _noisy(adapter, seed=0, std=0.3):
    """Random norms and biases too, so that the constant term and the frozen scale are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if "ln" in name or "norm" in name or name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * std)
            else:
                p.mul_(1 + 5 * torch.rand(p.shape, generator=g))
    return adapter


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return HFAdapter(LlamaForCausalLM(cfg), tok, name="tiny-llama", device="cpu", task="causal-lm")


def test_logit_lens_last_layer_is_the_models_output(tiny_gpt2):
    ad = _noisy(tiny_gpt2)
    res = logit_lens(ad, TEXT, target=" the", k=3)
    assert isinstance(res, LogitLensResult) and res.layers == ["layer.0", "layer.1", "layer.2"]
    b = ad.encode([TEXT.split()])
    with torch.no_grad():
        probs = torch.softmax(ad.forward(b).logits[0].double(), -1)
    p, ids = probs.topk(3, -1)
    assert res.top_ids[-1] == ids.tolist()
    np.testing.assert_allclose(res.top_probs[-1], p.numpy(), atol=1e-6)
    tid = ad.token_id(" the")
    np.testing.assert_allclose(res.target_probs[-1], probs[:, tid].numpy(), atol=1e-6)
    want_rank = (probs > probs[:, tid:tid + 1]).sum(-1) + 1
    assert res.target_ranks[-1] == want_rank.tolist()
    assert res.final_max_abs_diff < 1e-5 and res.norm == "LayerNorm"
    # an intermediate layer is read through ln_f and the head too (not the identity)
    _, cache = ad.run_with_cache(b, ["layer.1"])
    with torch.no_grad():
        l1 = ad.model.lm_head(ad.model.transformer.ln_f(cache["layer.1"]))[0]
    assert res.top_ids[1] == torch.softmax(l1.double(), -1).topk(3, -1)[1].tolist()


def test_logit_lens_refuses_a_wrong_final_norm(tiny_gpt2, monkeypatch):
    ad = _noisy(tiny_gpt2)
    monkeypatch.setattr(ad, "final_norm", lambda: None)  # as if ln_f were not found
    with pytest.raises(ModelError, match="differs from the model's own output"):
        logit_lens(ad, TEXT)


def test_logit_lens_masked_lm_and_lists(tmp_path):
    ad = tiny_bert("masked-lm")
    res = logit_lens(ad, ["the cat sat", "a dog"], target="c", position=2)
    assert isinstance(res, ResultList) and len(res) == 2
    assert res[0].norm == "none" and res[0].final_max_abs_diff < 1e-5 and res[0].position == 2
    back = result_from_json(res[0].to_json())
    assert back.to_dict() == res[0].to_dict()
    assert res[0].plot(tmp_path / "lens.png").stat().st_size > 1000
    assert "rank" in res[0].table()


def test_dla_sums_to_the_logit_gpt2(tiny_gpt2, tmp_path):
    ad = _noisy(tiny_gpt2)
    res = direct_logit_attribution(ad, TEXT, " the", against=" on")
    assert isinstance(res, DLAResult)
    assert res.components == ["embed", "layer.1.attn", "layer.1.mlp", "layer.2.attn", "layer.2.mlp"]
    b = ad.encode([TEXT.split()])
    with torch.no_grad():
        lg = ad.forward(b).logits[0, -1].double()
    want = float(lg[ad.token_id(" the")] - lg[ad.token_id(" on")])
    assert sum(res.values) + res.constant == pytest.approx(want, abs=1e-4)
    assert res.logit == pytest.approx(want, abs=1e-6)
    for i in range(2):  # heads + the output projection's bias = the block's attention term
        assert sum(res.heads[i]) + res.attn_bias[i] == pytest.approx(res.values[1 + 2 * i], abs=1e-8)
    assert abs(res.constant) > 1e-3  # the noisy ln_f bias makes the constant term non-trivial
    single = direct_logit_attribution(ad, TEXT, " the", position=3)
    with torch.no_grad():
        assert single.total == pytest.approx(float(ad.forward(b).logits[0, 3, ad.token_id(" the")]), abs=1e-4)
    assert result_from_json(res.to_json()).to_dict() == res.to_dict()
    assert res.plot(tmp_path / "dla.png").stat().st_size > 1000 and "constant" in res.table()


def test_dla_sums_to_the_logit_llama_rmsnorm():
    ad = _noisy(tiny_llama())
    res = direct_logit_attribution(ad, TEXT, " the")
    b = ad.encode([TEXT.split()])
    with torch.no_grad():
        want = float(ad.forward(b).logits[0, -1, ad.token_id(" the")])
    assert res.norm == "LlamaRMSNorm" and res.total == pytest.approx(want, abs=1e-4)
    assert len(res.heads[0]) == 4
    assert logit_lens(ad, TEXT).final_max_abs_diff < 1e-5


def test_dla_refuses_encoders(monkeypatch):
    bert = sharpen(tiny_bert("masked-lm"))
    with pytest.raises(ModelError, match="not a single linear unembedding"):
        direct_logit_attribution(bert, "the cat", "c", position=1)
    # even given a linear unembedding, BERT's post-norm blocks do not add up to its last layer
    dec = bert.model.cls.predictions.decoder
    monkeypatch.setattr(bert, "unembedding", lambda: (dec.weight, dec.bias))
    with pytest.raises(ModelError, match="pre-norm residual blocks"):
        direct_logit_attribution(bert, "the cat", "c", position=1)
    with pytest.raises(ModelError, match="no head with logits"):
        logit_lens(tiny_bert(), "the cat")


def test_cli_lens_dla_attention(tmp_path, capsys):
    from finegrain.testing import tiny_gpt2

    d = tmp_path / "gpt2"
    m = tiny_gpt2()
    m.model.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    out = tmp_path / "out"
    assert main(["lens", "--model", str(d), "--text", TEXT, "--target", " the", "--out", str(out)]) == 0
    assert "logit lens" in capsys.readouterr().out and (out / "lens.png").exists() and (out / "lens.json").exists()
    assert main(["dla", "--model", str(d), "--text", TEXT, "--target", " the", "--against", " on",
                 "--out", str(out)]) == 0
    assert "vs the model's logit" in capsys.readouterr().out and (out / "dla.png").exists()
    assert main(["attention", "--model", str(d), "--task", "causal-lm", "--text", TEXT, "--text", "the cat",
                 "--out", str(out)]) == 0
    assert "previous" in capsys.readouterr().out
    assert (out / "attention.json").exists() and (out / "attention_layer.2.png").exists()
    assert main(["patch", "--model", str(d), "--clean", "a nurse said that she was tired",
                 "--corrupt", "a nurse said that he was tired", "--target", " the", "--against", " on",
                 "--components", "resid,heads", "--positions", "all", "--method", "both", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "activation patching" in printed and "Pearson" in printed
    assert (out / "patching_resid.png").exists() and (out / "patching_heads.json").exists()
    assert main(["lens", "--model", str(d), "--text", TEXT, "--target", " park"]) == 2
    assert "not a single token" in capsys.readouterr().err
