"""Attribution of a generated continuation (issue 18, item 5): greedy generation with the model's cache
(equal to transformers' own greedy generate and to decoding without a cache), every generated token
attributed to the prompt and to the tokens before it (rows complete against the model's own forward, a
planted dependency found where it was planted), on GPT-2, LSTM LMs, textgenrnn's architecture and T5;
the result on the Result protocol, its pictures, HTML and the command line."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.attribute import GenerationAttribution, attribute_generation, generate_greedy
from finegrain.errors import ParameterError
from finegrain.models.lstm import HookedLSTMModel, LSTMAdapter, LSTMOutput, UnrolledLSTM
from finegrain.results import ResultList, result_from_json
from finegrain.testing import LSTM_CHARS as CHARS
from finegrain.testing import sharpen, tiny_bert, tiny_gpt2, tiny_lstm_lm, tiny_textgenrnn

PNG = b"\x89PNG\r\n\x1a\n"




class LagModel(HookedLSTMModel):
    """A planted causal LM: the logits at position p are 12 x one-hot(shift(x[p - lag])), so the token
    that follows position p depends on the input token ``lag`` positions before p and on nothing else."""

    task = "lm"

    def __init__(self, lag: int):
        super().__init__()
        V = len(CHARS)
        self.lag = lag
        self.embedding = nn.Embedding(V, V)
        self.rnn = UnrolledLSTM(V, 1)  # hook points of the adapter; the planted model does not read it
        shift = torch.zeros(V, V)
        for i in range(V):
            shift[i, 5 + (i - 5 + 3) % 26 if i >= 5 else 5] = 12.0  # letter -> the letter 3 later
        with torch.no_grad():
            self.embedding.weight.copy_(torch.eye(V))
        self.register_buffer("shift", shift)

    def forward(self, input_ids, attention_mask=None, inputs_embeds=None):
        e = self.embed(input_ids, inputs_embeds=inputs_embeds)
        lagged = torch.cat([torch.zeros_like(e[:, : self.lag]), e[:, : e.shape[1] - self.lag]], 1)
        return LSTMOutput(lagged @ self.shift)


def planted(lag: int) -> LSTMAdapter:
    return LSTMAdapter(LagModel(lag), CHARS, level="char", bos="<s>", unk=0, pad_index=0, name=f"lag-{lag}",
                       device="cpu")


@pytest.fixture(scope="module")
def gpt2():
    return sharpen(tiny_gpt2(seed=1), std=0.35, seed=2)


def _baseline_logp(adapter, ids: list[int], special: list[bool], target: int, pad: int) -> float:
    """log p(target | every non-special position replaced by the pad token), by hand."""
    base = [i if s else pad for i, s in zip(ids, special)]
    with torch.no_grad():
        logits = adapter.model(torch.tensor([base])).logits[0, -1].float()
    return float(torch.log_softmax(logits, -1)[target])


# -- generation ---------------------------------------------------------------------------------
def test_gpt2_greedy_equals_transformers_generate_with_and_without_cache(gpt2):
    for prompt in ("the cat sat on", "a nurse said that"):
        g = generate_greedy(gpt2, prompt, 8)
        ids = torch.tensor([g.prompt_ids])
        with torch.no_grad():
            ref = gpt2.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                      pad_token_id=gpt2.tokenizer.pad_token_id)
        assert g.generated_ids == ref[0, ids.shape[1] :].tolist()
        assert g.cached and g.text == gpt2.tokenizer.decode(g.generated_ids, skip_special_tokens=True)
        u = generate_greedy(gpt2, prompt, 8, cache=False)
        assert u.generated_ids == g.generated_ids and not u.cached
        np.testing.assert_allclose(u.logprobs, g.logprobs, atol=1e-5)
    assert len(set(generate_greedy(gpt2, "the cat sat on", 8).generated_ids)) > 1  # not a constant model


def test_lstm_generation_cached_equals_uncached_and_stops_at_bos():
    for ad in (tiny_lstm_lm(), tiny_textgenrnn("window"), tiny_textgenrnn("stream")):
        g, u = generate_greedy(ad, "the cat", 8), generate_greedy(ad, "the cat", 8, cache=False)
        assert g.generated_ids == u.generated_ids and (len(g.generated_ids) == 8 or g.stop == "eos")
        np.testing.assert_allclose(g.logprobs, u.logprobs, atol=1e-5)
        assert g.prompt_ids == ad.prompt_ids("the cat") and g.special == [True] + [False] * 7
        assert g.text == ad.generate("the cat", 8, temperature=0)
    ad = tiny_lstm_lm()
    with torch.no_grad():  # make <s> (end of text) the certain next token: generation stops after it
        ad.model.head.bias[1] = 1e3
    g = generate_greedy(ad, "ab", 5)
    assert g.generated_ids == [1] and g.stop == "eos" and ad.generate("ab", 5, temperature=0) == ""


# -- attribution ------------------------------------------------------------------------------------
def test_gpt2_rows_are_complete_against_the_models_own_forward(gpt2):
    r = attribute_generation(gpt2, "the cat sat on", 5, score="log-probability")
    g = generate_greedy(gpt2, "the cat sat on", 5)
    P, n = g.n_prompt, 5
    assert isinstance(r, GenerationAttribution) and r.matrix.shape == (n, P + n)
    assert r.tokens[P:] == g.generated_tokens and r.text == g.text
    pad = gpt2.tokenizer.pad_token_id
    for t in range(n):
        L = P + t
        assert np.isfinite(r.matrix[t, :L]).all() and np.isnan(r.matrix[t, L:]).all()  # the masked upper triangle
        assert r.f_x[t] == pytest.approx(g.logprobs[t], abs=1e-4)  # the generation's own log p
        want_b = _baseline_logp(gpt2, g.ids[:L], g.special + [False] * t, g.generated_ids[t], pad)
        assert r.f_baseline[t] == pytest.approx(want_b, abs=1e-4)  # every position replaced, generated ones too
        gap = r.f_x[t] - r.f_baseline[t]
        assert abs(gap) > 0.1
        assert np.nansum(r.matrix[t]) == pytest.approx(gap, abs=0.01 * abs(gap))  # completeness per row
        assert r.delta[t] == pytest.approx(np.nansum(r.matrix[t]) - gap, abs=1e-6)
    assert all(r.complete) and all(s in (16, 32, 64, 128, 256) for s in r.n_steps)
    assert np.abs(np.nan_to_num(r.matrix[1:, P:])).max() > 1e-4  # earlier generated tokens are attributed too
    p = attribute_generation(gpt2, "the cat sat on", 2)
    np.testing.assert_allclose(p.f_x, np.exp(g.logprobs[:2]), rtol=1e-4)  # default score: probability, as inseq


@pytest.mark.parametrize("lag", [0, 5])
@pytest.mark.parametrize("method", ["ig", "saliency", "input_x_gradient"])
def test_planted_dependency_is_found_in_its_row(lag, method):
    """Generated token t is planted to depend on one input token only, ``lag`` positions before the one
    it follows: prompt token t + 1 (lag 5, a 7-position prompt), or the token just before it (lag 0: the
    prompt's last character for t = 0, then the token generated before it)."""
    ad = planted(lag)
    r = attribute_generation(ad, "abcdef", 5, method=method, n_steps=32) if method == "ig" else \
        attribute_generation(ad, "abcdef", 5, method=method)
    P = r.n_prompt
    assert P == 7 and r.text == ("defgh" if lag == 5 else "iloru")
    for t in range(5):
        k = P - 1 + t - lag  # the position the planted model reads
        row = r.matrix[t, : P + t]
        assert abs(row[k]) > 1e-3, (t, row)
        others = np.delete(row, k)
        assert np.abs(others).max() < 1e-6 * abs(row[k]) + 1e-9, (t, row)
        if method == "ig":
            assert row[k] == pytest.approx(r.f_x[t] - r.f_baseline[t], rel=1e-3)


def test_lstm_and_textgenrnn_rows_are_complete_and_read_only_their_window():
    for ad in (tiny_lstm_lm(), tiny_textgenrnn("window"), tiny_textgenrnn("stream")):
        r = attribute_generation(ad, "the cat", 4, score="log-probability")
        gen = generate_greedy(ad, "the cat", 4)
        np.testing.assert_allclose(r.f_x, gen.logprobs, atol=1e-4)
        assert all(r.complete), (ad.name, r.delta, r.gap)
        assert (r.matrix[:, 0] == 0).all()  # <s> is kept in the baseline: no attribution
        if getattr(ad.model, "context", None) == "window":
            # a prediction reads the last 6 characters only: older ones get exactly nothing
            for t in range(4):
                L = r.n_prompt + t
                assert (r.matrix[t, : L - 6] == 0).all() and np.abs(r.matrix[t, L - 6 : L]).max() > 0


def test_layer_and_perturbation_methods_give_rows_too(gpt2):
    lc = attribute_generation(gpt2, "the cat sat", 2, method="layer_conductance", layer="layer.1")
    assert all(lc.complete) and np.nansum(lc.matrix, 1) == pytest.approx(lc.gap, rel=0.01)  # the layer is a cut
    fa = attribute_generation(gpt2, "the cat sat", 2, method="feature_ablation")
    g = generate_greedy(gpt2, "the cat sat", 2)
    with torch.no_grad():  # occluding the prompt's last token: the drop of p(first generated token)
        ids = list(g.prompt_ids)
        ids[-1] = gpt2.tokenizer.pad_token_id
        p = torch.softmax(gpt2.model(torch.tensor([ids])).logits[0, -1], -1)[g.generated_ids[0]]
    assert fa.matrix[0, g.n_prompt - 1] == pytest.approx(fa.f_x[0] - float(p), abs=1e-5)


def test_t5_source_and_target_prefix_are_attributed():
    from finegrain.testing_seq2seq import tiny_t5

    t5 = tiny_t5(seed=3)
    g = generate_greedy(t5, "the cat", 4)
    src = torch.tensor([g.prompt_ids[: g.n_source]])
    with torch.no_grad():
        ref = t5.model.generate(input_ids=src, attention_mask=torch.ones_like(src), max_new_tokens=4, do_sample=False,
                                num_beams=1)
    assert g.ids[g.n_source :] == ref[0].tolist() and len(g.generated_ids) == 4  # decoder start, then the tokens
    assert generate_greedy(t5, "the cat", 4, cache=False).generated_ids == g.generated_ids
    r = attribute_generation(t5, "the cat", 4, score="log-probability")
    S, P = g.n_source, g.n_prompt
    assert P == S + 1 and r.special[S] and r.special[S - 1]  # decoder start and the source's </s> are kept
    np.testing.assert_allclose(r.f_x, g.logprobs, atol=1e-4)
    assert all(r.complete)
    assert np.abs(r.matrix[:, : S - 1]).max() > 0 and np.abs(r.matrix[2:, P : P + 1]).max() > 0
    with pytest.raises(ParameterError, match="one side"):
        attribute_generation(t5, "the cat", 2, method="layer_ig", layer="dec.layer.1")


def test_result_protocol_pictures_html_and_lists(gpt2, tmp_path):
    res = attribute_generation(gpt2, ["the <b>cat</b>", "a dog"], 3, method="saliency")
    assert isinstance(res, ResultList) and len(res) == 2 and res[0].delta is None and res[0].complete == [None] * 3
    r = attribute_generation(gpt2, "the <b>cat</b>", 3)
    back = GenerationAttribution.from_json(r.to_json())
    np.testing.assert_array_equal(np.isnan(back.matrix), np.isnan(r.matrix))
    np.testing.assert_allclose(np.nan_to_num(back.matrix), np.nan_to_num(r.matrix))
    assert back.tokens == r.tokens and back.descriptions[0].label == r.descriptions[0].label
    d = json.loads(r.to_json())
    assert d["complete"] == [True] * 3 and d["matrix"][0][-1] is None
    again = result_from_json(res.to_json(tmp_path / "all.json"))
    assert isinstance(again, ResultList) and isinstance(again[1], GenerationAttribution)
    table = r.table()
    assert "probability" in table and "complete" in table and "f(x)" in table
    assert r.plot(tmp_path / "m.png").read_bytes()[:8] == PNG
    html = r.html()
    assert "&lt;b&gt;" in html and "<b>cat" not in html and html.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;" in r._repr_html_() and "<b>cat" not in r._repr_html_()


def test_bad_arguments_raise_clear_errors(gpt2):
    with pytest.raises(ParameterError, match="score"):
        attribute_generation(gpt2, "the cat", 2, score="odds")
    with pytest.raises(ParameterError, match="unknown attribution method"):
        attribute_generation(gpt2, "the cat", 2, method="magic")
    with pytest.raises(ParameterError, match="max_new_tokens"):
        generate_greedy(gpt2, "the cat", 0)
    with pytest.raises(ParameterError, match="cannot generate"):
        generate_greedy(tiny_bert(), "the cat", 2)


def test_cli_generate_prints_the_matrix_and_writes_files(gpt2, tmp_path, capsys):
    from finegrain.cli import main

    d = tmp_path / "gpt2"
    gpt2.model.save_pretrained(d)
    gpt2.tokenizer.save_pretrained(d)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["attribute", "--model", str(d), "--task", "causal-lm", "--generate", "3", "--text", "the cat sat",
                   "--method", "input_x_gradient", "--out", f"{out}.json", "--html", f"{out}.html", "--png",
                   f"{out}.png"])
    assert rc == 0
    text = capsys.readouterr().out
    g = generate_greedy(gpt2, "the cat sat", 3)
    assert "input_x_gradient attribution of a generated continuation" in text and repr(g.text) in text
    assert json.loads((tmp_path / "out.json").read_text())[0]["type"] == "GenerationAttribution"
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG and "fg-generation" in (tmp_path / "out.html").read_text()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("textgenrnn") is None, reason="textgenrnn not installed")
def test_real_textgenrnn_generation_attribution():
    from finegrain.models.textgenrnn import load_textgenrnn

    tg = load_textgenrnn(device="cpu")
    r = attribute_generation(tg, "the cat sat on", 2)
    assert r.text == tg.generate("the cat sat on", 2, temperature=0) == "e "
    np.testing.assert_allclose(np.log(r.f_x), generate_greedy(tg, "the cat sat on", 2).logprobs, atol=1e-4)
    assert all(r.complete) and r.f_x[0] == pytest.approx(0.420, abs=1e-3)  # p('e' | "the cat sat on")
