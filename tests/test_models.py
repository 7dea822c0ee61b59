import pytest
import torch

from finegrain.models import ModelError, load_model
from finegrain.testing import charpiece_tokenizer, tiny_bert, tiny_gpt2


def test_layers_and_sizes(tiny_bert):
    sizes = tiny_bert.layers()
    assert list(sizes)[:4] == ["layer.0", "layer.1", "layer.1.mlp", "layer.1.attn"]
    assert sizes["layer.2.mlp"] == 64 and sizes["layer.2.attn"] == 32
    assert tiny_bert.heads("layer.1.attn") == (4, 8)
    with pytest.raises(ModelError, match="unknown layer 'layer.9'"):
        tiny_bert.check_layer("layer.9")


@pytest.mark.parametrize("factory", [tiny_bert, tiny_gpt2])
def test_cache_equals_hidden_states(factory):
    m = factory()
    b = m.encode(["the cat sat", "a dog"])
    out, cache = m.run_with_cache(b, m.hidden_layers())
    with torch.no_grad():
        ref = m.model(**b.inputs, output_hidden_states=True).hidden_states
    # decoders apply a final norm to the last HF hidden state; our layer.L is the raw block output
    n = len(ref) - (1 if m.kind == "decoder" else 0)
    for i in range(n):
        torch.testing.assert_close(cache[f"layer.{i}"], ref[i])


def test_mlp_and_attn_hooks_are_the_projection_inputs(tiny_bert):
    b = tiny_bert.encode(["hello world"])
    blk = tiny_bert.model.encoder.layer[0]
    seen = {}
    h1 = blk.intermediate.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", o))
    h2 = blk.attention.self.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o[0]))
    try:
        _, cache = tiny_bert.run_with_cache(b, ["layer.1.mlp", "layer.1.attn"])
    finally:
        h1.remove()
        h2.remove()
    torch.testing.assert_close(cache["layer.1.mlp"], seen["mlp"])
    torch.testing.assert_close(cache["layer.1.attn"], seen["attn"].reshape(cache["layer.1.attn"].shape))


def test_edit_hook_changes_output_and_is_removed(tiny_bert):
    b = tiny_bert.encode(["hello world"])
    with torch.no_grad():
        before = tiny_bert.forward(b).last_hidden_state.clone()
        with tiny_bert.hooks({"layer.1": lambda a, s: torch.zeros_like(a)}):
            edited = tiny_bert.forward(b).last_hidden_state
        after = tiny_bert.forward(b).last_hidden_state
    assert not torch.allclose(before, edited)
    assert torch.equal(before, after)


def test_hooks_removed_on_error(tiny_bert):
    with pytest.raises(RuntimeError):
        with tiny_bert.hooks({"layer.1": lambda a, s: a * 0}):
            raise RuntimeError("boom")
    assert not tiny_bert.model.encoder.layer[0]._forward_hooks


def test_offline_unknown_model_has_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="finegrain never downloads"):
        load_model("some-org/not-a-cached-model")
    with pytest.raises(ModelError, match="unknown task"):
        load_model("minilm", task="translation")


def test_charpiece_counts_subwords():
    tok = charpiece_tokenizer()
    assert tok.tokenize("abc de") == ["a", "##b", "##c", "d", "##e"]


@pytest.mark.slow
def test_minilm_is_embedded_and_offline(minilm):
    assert minilm.kind == "encoder" and minilm.n_layers == 6
    assert minilm.layers()["layer.6"] == 384 and minilm.layers()["layer.6.mlp"] == 1536
    b = minilm.encode(["The quick brown fox ."])
    out = minilm.forward(b)
    emb = out.last_hidden_state.mean(1)
    assert emb.shape == (1, 384) and torch.isfinite(emb).all()


@pytest.mark.slow
def test_minilm_eager_attentions():
    m = load_model("minilm", attn_implementation="eager", device="cpu")
    out = m.model(**m.encode(["hello there"]).inputs, output_attentions=True)
    assert len(out.attentions) == 6 and out.attentions[0].shape[1] == 12


# -- oneDNN linear kernels ----------------------------------------------------------------------
def test_onednn_linears_match_f_linear_and_restore_forward(tiny_bert, monkeypatch):
    from finegrain.models import kernels

    if not kernels.onednn_usable():
        pytest.skip("oneDNN's packed linear is not available in this torch build")
    hf = tiny_bert.model.eval()
    batch = tiny_bert.encode([["the", "cats", "sat"], ["a", "dog", "barked", "loudly", "today"]])
    linears = [m for m in hf.modules() if type(m) is torch.nn.Linear]
    with torch.inference_mode():
        ref = tiny_bert.run_with_cache(batch, ["layer.1", "layer.1.mlp"])[1]
        with kernels.onednn_linears(hf):
            assert all("forward" in m.__dict__ for m in linears)
            got = tiny_bert.run_with_cache(batch, ["layer.1", "layer.1.mlp"])[1]  # hooks still fire
    assert not any("forward" in m.__dict__ for m in linears)  # restored
    for lay in ref:
        torch.testing.assert_close(got[lay], ref[lay], rtol=1e-4, atol=1e-5)

    lin = linears[0]
    x = torch.randn(4, lin.in_features)
    with kernels.onednn_linears(hf), torch.no_grad():
        lin.weight.mul_(2)  # edited inside the block: its packed copy is stale, so F.linear serves it
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-4, atol=1e-5)
        with kernels.onednn_linears(hf):  # nested: the outer block's layers stay as they are
            assert lin.forward.args[0] is lin and lin.forward.args[1].is_mkldnn  # packed, within budget
    monkeypatch.setattr(kernels, "PACK_BUDGET_BYTES", 0)  # over budget: the weights are used in place
    with kernels.onednn_linears(hf), torch.no_grad():
        assert lin.forward.args[1] is not None and not lin.forward.args[1].is_mkldnn
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-4, atol=1e-5)
    with kernels.onednn_linears(hf):
        xg = x.clone().requires_grad_()
        lin(xg).sum().backward()  # needs a gradient: F.linear, so autograd works
    torch.testing.assert_close(xg.grad, lin.weight.sum(0).expand(4, -1))
    with pytest.raises(ValueError), kernels.onednn_linears(hf):
        raise ValueError("boom")
    assert not any("forward" in m.__dict__ for m in linears)  # restored on error too
