"""Controlling behaviour (Suau et al. 2020; Bau et al. 2019): a planted concept unit of a character LM is
found by its AP and raises the concept word's probability, random units of the same size do not; an
edit that does nothing is reported as such; AP agrees with scikit-learn's on tied responses."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from finegrain.errors import ParameterError
from finegrain.intervene import (
    ControlResult,
    ExpertUnits,
    Scale,
    Set,
    concept_control,
    concept_sentences,
    concept_words,
    expert_units,
    expert_units_from_texts,
)
from finegrain.models.lstm import LSTMAdapter
from finegrain.neurons import Neuron

VOCAB = ["<pad>", "<s>", " ", ".", "a", "b", "c", "d", "x"]
H = 6


def planted_lm(weight: float = 6.0, seed: int = 0) -> LSTMAdapter:
    """Unit 0 of lstm.1 latches on once the concept word "x" has been read; it adds ``weight`` to the
    logits of "x" and of the word boundaries (space, ".", end of text), so that setting it high raises
    p(" x", then a boundary) (``weight=0``: the unit detects the concept but does not act on the output)."""
    g = torch.Generator().manual_seed(seed)
    emb, lstm, head = nn.Embedding(len(VOCAB), 4), nn.LSTM(4, H, 1, batch_first=True), nn.Linear(H, len(VOCAB))
    with torch.no_grad():
        for p in [*emb.parameters(), *lstm.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        emb.weight[:, 0] = 0.0
        emb.weight[VOCAB.index("x"), 0] = 1.0  # only "x" has the concept feature
        lstm.weight_ih_l0[:, 0] = 0.0
        for gate in range(4):  # unit 0 reads only the concept feature, and only the head reads unit 0
            lstm.weight_ih_l0[gate * H] = 0.0
            lstm.weight_hh_l0[gate * H] = 0.0
        lstm.weight_hh_l0[:, 0] = 0.0
        lstm.bias_ih_l0[[0, H, 3 * H]] = 10.0  # input, forget and output gates of unit 0 open: a latch
        lstm.bias_hh_l0[[0, H, 2 * H, 3 * H]] = 0.0
        lstm.bias_ih_l0[2 * H] = 0.0
        lstm.weight_ih_l0[2 * H, 0] = 3.0  # candidate = tanh(3 * concept)
        head.weight[:, 0] = 0.0
        head.weight[[VOCAB.index(t) for t in ("x", " ", ".", "<s>")], 0] = weight
    return LSTMAdapter.from_modules(emb, lstm, head, VOCAB, level="char", bos="<s>", device="cpu")


def sentences(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts, pos = [], []
    for i in range(n):
        words = [str(rng.choice(list("abcd"))) for _ in range(4)]
        if i % 3 == 0:
            words[rng.integers(4)] = "x"
        texts.append(" ".join(words))
        pos.append("x" in words)
    return texts, np.array(pos)


PROMPTS = ["a b", "c d a", "b"]


def test_planted_concept_unit_is_found_and_steers_while_random_units_do_not(tmp_path):
    ad = planted_lm()
    texts, pos = sentences()
    ex = expert_units_from_texts(ad, texts, pos, layers=["lstm.1"], k=1, concept="x")
    assert ex.neurons == [Neuron("lstm.1", 0)] and ex.ap[0] == pytest.approx(1.0)
    assert ex.values[0] > 0.7  # the latched response: tanh(tanh(3))
    res = concept_control(ad, ex, prompts=PROMPTS, concept_words=["x"], control_words=["a", "b"], n_random=5)
    assert res.word_boundary  # " x" is scored as the word "x"
    assert res.concept_gain > 1.0 and res.concept_gain > res.control_gain + 1.0
    assert len(res.random_concept_gains) == 5 and max(res.random_concept_gains) < 0.5 * res.concept_gain
    assert res.steered is True and res.verdict.startswith("steered")
    # Bau et al. 2019: scaling the same unit acts through the same weight; scaling random units does not
    scaled = concept_control(ad, Set("lstm.1:0", 1.0), prompts=PROMPTS, concept_words=["x"], n_random=5)
    assert scaled.steered is True
    # the result protocol
    back = ControlResult.from_json(res.to_json())
    assert back.random_concept_gains == res.random_concept_gains
    assert back.concept_gain == pytest.approx(res.concept_gain)
    assert "random units of the same size" in res.table()
    assert res.plot(tmp_path / "control.png").stat().st_size > 0
    assert ExpertUnits.from_json(ex.to_json()).neurons == ex.neurons
    assert "<pre>" in ex._repr_html_()


def test_a_unit_that_does_not_act_is_reported_as_not_steering():
    ad = planted_lm(weight=0.0)  # the unit still detects the concept (AP 1) but the output ignores it
    texts, pos = sentences()
    ex = expert_units_from_texts(ad, texts, pos, layers=["lstm.1"], k=1)
    assert ex.neurons == [Neuron("lstm.1", 0)]
    res = concept_control(ad, ex, prompts=PROMPTS, concept_words=["x"], n_random=5)
    assert res.concept_gain == pytest.approx(0.0, abs=1e-5)
    assert res.steered is False and "NOT steered" in res.verdict
    none = concept_control(ad, Scale("lstm.1:0", 3.0), prompts=PROMPTS, concept_words=["x"], n_random=0)
    assert none.steered is None and "NO random control" in none.verdict


def test_expert_ap_handles_ties_as_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    X = np.maximum(rng.normal(size=(300, 8)), 0).astype(np.float32)  # ReLU-like: many tied zeros
    X[:, 3] = np.maximum(X[:, 3] + 1.5 * y - 1.0, 0)
    ex = expert_units(X, y, [f"layer.1:{i}" for i in range(8)], k=8)
    want = {f"layer.1:{i}": average_precision_score(y, X[:, i]) for i in range(8)}
    for n, ap in zip(ex.neurons, ex.ap):
        assert ap == pytest.approx(want[str(n)], abs=1e-12)
    assert ex.neurons[0] == Neuron("layer.1", 3)
    # token rows max-pooled per sentence (Suau et al.): a sentence is positive if any of its tokens is
    sent = np.repeat(np.arange(100), 3)
    tok = expert_units(X, np.repeat(y[:100], 3), [f"layer.1:{i}" for i in range(8)], k=2, sent_ids=sent)
    pooled = np.maximum.reduceat(X, np.arange(0, 300, 3), axis=0)
    assert tok.ap[0] == pytest.approx(max(average_precision_score(y[:100], pooled[:, i]) for i in range(8)))
    assert tok.positive_fraction == pytest.approx(y[:100].mean())
    with pytest.raises(ParameterError, match="positive"):
        expert_units(X, np.zeros(300, bool), [f"layer.1:{i}" for i in range(8)])


def test_concept_material_from_the_lexicon():
    words = concept_words("animal")
    assert {"cat", "dog", "horse", "bird"} <= set(words)
    texts, pos = concept_sentences("animal", n_sentences=60)
    assert len(texts) == 60 and 0 < pos.mean() < 1
    assert all(any(w.lower() in set(concept_words("animal", ("sg", "pl"))) for w in t.split())
               for t, p in zip(texts, pos) if p)
    with pytest.raises(ParameterError, match="classes"):
        concept_words("vehicle")


def test_steer_and_ablate_have_head_options():
    from finegrain.cli import build_parser

    p = build_parser()
    a = p.parse_args(["steer", "--head", "builtin:sentiment", "--text", "a good film", "--set", "layer.3:5=2"])
    assert a.head == "builtin:sentiment" and a.random == 10
    b = p.parse_args(["ablate", "--head", "builtin:sentiment", "--objective", "accuracy", "--sweep", "layer.3"])
    assert b.head == "builtin:sentiment" and b.sweep == "layer.3"


def test_steer_with_concept_words_and_no_prompt_scores_after_neutral_prompts(monkeypatch):
    """`finegrain steer --experts animal` without --prompt failed with "give prompts"."""
    import finegrain.intervene as fi
    from finegrain.cli import main
    from finegrain.intervene import cli as icli
    from finegrain.intervene.control import NEUTRAL_PROMPTS

    seen = {}

    class _Res:
        def table(self):
            return "ok"

    def fake_control(model, units, prompts=(), concept_words=(), **kw):
        seen.update(prompts=list(prompts), words=list(concept_words))
        if concept_words and not prompts:
            raise AssertionError("give prompts")
        return _Res()

    monkeypatch.setattr(icli, "_adapter", lambda args: object())
    monkeypatch.setattr(fi, "concept_control", fake_control)
    assert main(["steer", "--set", "lstm.1:3=2", "--concept-word", "cat"]) == 0
    assert seen == {"prompts": list(NEUTRAL_PROMPTS), "words": ["cat"]}
    assert main(["steer", "--set", "lstm.1:3=2", "--concept-word", "cat", "--prompt", "A"]) == 0
    assert seen["prompts"] == ["A"]
