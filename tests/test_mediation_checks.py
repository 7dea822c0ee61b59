"""Mediation on character LMs (issue 15, item 7): continuations end at a word boundary; on a windowed
LSTM (textgenrnn's architecture) a mediator set to its own value changes nothing and the embedding at
every step mediates everything; results carry caveats whenever the plausibility criteria fail."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.errors import ParameterError
from finegrain.intervene import Agreement, AgreementPair, continuation_logprob, continuation_logprobs
from finegrain.mediation import Effects, Mediation, MediationResult
from finegrain.models.lstm import LSTMAdapter
from finegrain.models.textgenrnn import TextgenrnnModel

CHARS = ["<pad>", "<s>", " ", ".", ","] + list("abcdefghijklmnopqrstuvwxyzT")


def char_lm(kind: str = "lstm", scale: float = 1.0, seed: int = 0) -> LSTMAdapter:
    g = torch.Generator().manual_seed(seed)
    if kind == "lstm":
        parts = nn.Embedding(len(CHARS), 8), nn.LSTM(8, 6, 2, batch_first=True), nn.Linear(6, len(CHARS))
        ad = LSTMAdapter.from_modules(*parts, CHARS, level="char", bos="<s>", device="cpu")
    else:  # textgenrnn's network, small: a fresh 6-character window per prediction
        ad = LSTMAdapter(TextgenrnnModel(len(CHARS), 8, 6, 2, window=6, context=kind), CHARS, level="char",
                         bos="<s>", unk=0, device="cpu")
    with torch.no_grad():
        for p in ad.model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return ad


def test_char_continuations_end_at_a_word_boundary():
    ad = char_lm()
    prefix = "The nurse said that"
    ids = [CHARS.index("<s>")] + [CHARS.index(c) for c in prefix + " he"]
    with torch.no_grad():
        logp = torch.log_softmax(ad.model(torch.tensor([ids])).logits[0].double(), -1)
    n = len(prefix) + 1  # bos + prefix: " he" starts at position n
    plain = sum(float(logp[t - 1, ids[t]]) for t in range(n, len(ids)))
    boundary = [CHARS.index(c) for c in (" ", ".", ",", "<s>")]
    ends = float(torch.logsumexp(logp[len(ids) - 1, boundary], 0))
    assert continuation_logprob(ad, prefix, " he", word_boundary=False) == pytest.approx(plain, abs=1e-5)
    assert continuation_logprob(ad, prefix, " he") == pytest.approx(plain + ends, abs=1e-5)  # the default
    # " he" as a word is the part of p(" he...") that ends there: " her" and " help" are not counted
    rest = [i for i in range(len(CHARS)) if i not in boundary]
    assert np.exp(plain) == pytest.approx(np.exp(plain + ends) + float(logp[len(ids) - 1, rest].exp().sum())
                                          * np.exp(plain), rel=1e-6)
    got = continuation_logprobs(ad, [prefix, prefix, "a"], [" he", " her", " b"])  # batched, mixed lengths
    want = [continuation_logprob(ad, p, c) for p, c in [(prefix, " he"), (prefix, " her"), ("a", " b")]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    if "word_boundary" in inspect.signature(ad.sequence_logprob).parameters:  # the adapter's own scorer agrees
        assert float(ad.sequence_logprob(prefix, " he", word_boundary=True)) == pytest.approx(plain + ends, abs=1e-5)
    assert Agreement(ad, [AgreementPair("the cat", " is", " are")]).cb.boundary is not None


def test_word_boundary_is_for_character_models(tiny_gpt2):
    with pytest.raises(ParameterError, match="character"):
        continuation_logprob(tiny_gpt2, "the cat", " sat", word_boundary=True)
    assert continuation_logprob(tiny_gpt2, "the cat", " sat") == continuation_logprob(
        tiny_gpt2, "the cat", " sat", word_boundary=False)


@pytest.mark.parametrize("state", ["h", "hc"])
def test_windowed_mediator_set_to_its_own_value_changes_nothing(state):
    # the set-gender input equals the base input: every NIE and NDE must be exactly 0. Before the fix the
    # mediator was set, in every 40-character window, to its value in the window ending at the prompt
    # (textgenrnn: NIE -0.71 for lstm.2 instead of 0)
    ad = char_lm("window", scale=2.0)
    med = Mediation(ad, positions="last", lstm_state=state).fit(
        ["The {} said that"], ["nurse"], substitutes={"male": "nurse", "female": "nurse"})
    assert med.total_effect() == 0.0
    for layer in ("lstm.2", "lstm.2.cell"):
        e = med.layer_effect(layer)
        assert e.nie[0] == pytest.approx(0.0, abs=1e-9) and e.nde[0] == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(med.neuron_effects("lstm.2", units=range(3)).nie, 0.0, atol=1e-9)


def test_windowed_embedding_at_every_step_mediates_everything():
    ad = char_lm("window", scale=2.0)
    med = Mediation(ad, positions="all").fit(["The {} a"], ["nurse", "cook"])  # "cook" is skipped: 4 letters
    assert [ex.profession for ex in med.examples] == ["nurse"] and med.skipped
    assert abs(med.total_effect()) > 1e-3
    e = med.layer_effect("embedding")
    assert e.nie[0] == pytest.approx(med.total_effect(), rel=1e-4, abs=1e-6)
    assert e.nde[0] == pytest.approx(0.0, abs=1e-6)


def _example(prof, stereo, te):
    anti = "female" if stereo == "male" else "male"
    return {"template": "The {} said that", "profession": prof, "base": f"The {prof} said that",
            "alt": "The woman said that", "stereotypical": stereo, "anti": anti, "y_base": 0.3,
            "y_alt": 0.3 * (1 + te), "te": te}


def test_caveats_name_each_failed_criterion():
    profs = ["nurse", "doctor", "baker", "pilot"]
    checks = [{"template": "The {} said that", "log_ratio": float(np.log(1.08))}]
    bad = MediationResult(-0.1, [_example(p, "male", -0.1) for p in profs],
                          [Effects("lstm.2", "layer", ["all"], [-0.98], [0.02]),
                           Effects("lstm.2", "neuron", [0, 1], [0.01, 8.31], [0.0, 0.0])],
                          gender_checks=checks, lstm_state="h")
    text = " ".join(bad.caveats)
    assert len(bad.caveats) == 4
    assert "barely tracks gender" in text and "1.08" in text
    assert "wrong sign for every prompt" in text
    assert "every one of the 4 professions is 'male'-stereotyped" in text
    assert "2 effect(s) over 5 x |TE|" in text and "lstm.2:1" in text and "83.1 x |TE|" in text
    assert "CAVEATS" in bad.table() and bad.caveats == MediationResult.from_json(bad.to_json()).caveats
    mixed = MediationResult(0.2, [_example("nurse", "female", 0.3), _example("pilot", "male", -0.2),
                                  _example("baker", "male", 0.5)], gender_checks=[{"log_ratio": 2.0}])
    assert len(mixed.caveats) == 1 and "inconsistent across professions: 67% of 3" in mixed.caveats[0]
    good = MediationResult(0.5, [_example("nurse", "female", 0.4), _example("pilot", "male", 0.6)],
                           [Effects("layer.3", "neuron", [0], [0.2], [0.3])], gender_checks=[{"log_ratio": 2.0}])
    assert good.caveats == [] and "CAVEATS" not in good.table()
    strict = MediationResult(0.5, good.examples, good.effects, gender_checks=[{"log_ratio": 2.0}],
                             criteria={"min_gender_ratio": 10.0})
    assert len(strict.caveats) == 1


def test_gender_check_by_hand(tiny_gpt2):
    med = Mediation(tiny_gpt2).fit(["The {} said that", "The {} ran because"], ["nurse", "baker"])
    assert [g["template"] for g in med.gender_checks] == ["The {} said that", "The {} ran because"]
    for g in med.gender_checks:
        lp = {(w, c): continuation_logprob(tiny_gpt2, g["template"].format(w), c)
              for w in ("man", "woman") for c in (" he", " she")}
        want = (lp["man", " he"] - lp["man", " she"]) - (lp["woman", " he"] - lp["woman", " she"])
        assert g["log_ratio"] == pytest.approx(want, abs=1e-5)
    res = med.run(["layer.1"], heads=False)
    assert res.gender_checks == med.gender_checks and isinstance(res.caveats, list)
    assert MediationResult.from_json(res.to_json()).by_kind("neuron")[0].nie == res.by_kind("neuron")[0].nie


@pytest.mark.slow
def test_textgenrnn_mediation_is_exact_and_says_it_is_not_about_gender():
    from finegrain.models import load_model

    tg = load_model("textgenrnn", device="cpu")
    profs = ["nurse", "mechanic", "teacher", "secretary"]
    same = Mediation(tg, lstm_state="h").fit(["The {} said that"], profs[:1],
                                             substitutes={"male": "nurse", "female": "nurse"})
    assert same.layer_effect("lstm.2").nie[0] == pytest.approx(0.0, abs=1e-9)  # was -0.71 before the fix
    res = Mediation(tg).fit(["The {} said that"], profs).result()
    assert any("barely tracks gender" in c for c in res.caveats)
    assert np.exp(res.gender_checks[0]["log_ratio"]) < 1.5
