"""Causal mediation (Vig et al. 2020): TE by hand, NIE = TE / NDE = 0 for a full mediator, NIE = 0
for a constant mediator, batched per-neuron NIE equal to a single intervention."""

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.data.generate import gender_continuations
from finegrain.intervene import Set, continuation_logprob, intervene
from finegrain.mediation import Mediation, mediation_analysis
from finegrain.models.lstm import LSTMAdapter
from finegrain.neurons import Neuron

FALLBACK_CONTINUATIONS = gender_continuations()

PROFS = ["nurse", "doctor", "baker", "pilot", "cat", "dog"]
TEMPLATES = ["The {} said that"]


def y(adapter, prefix, anti, stereo):
    return np.exp(continuation_logprob(adapter, prefix, anti) - continuation_logprob(adapter, prefix, stereo))


def test_total_effect_by_hand(tiny_gpt2):
    med = Mediation(tiny_gpt2).fit(TEMPLATES, ["nurse", "doctor"])
    for ex in med.examples:
        he = continuation_logprob(tiny_gpt2, ex.base, " he")
        she = continuation_logprob(tiny_gpt2, ex.base, " she")
        stereo, anti = ("male", "female") if he >= she else ("female", "male")
        assert ex.stereotypical == stereo
        assert ex.alt == TEMPLATES[0].format({"male": "man", "female": "woman"}[anti])
        c = FALLBACK_CONTINUATIONS
        te = y(tiny_gpt2, ex.alt, c[anti], c[stereo]) / y(tiny_gpt2, ex.base, c[anti], c[stereo]) - 1
        assert ex.te == pytest.approx(te, rel=1e-4, abs=1e-7)
    assert med.total_effect() == pytest.approx(np.mean([ex.te for ex in med.examples]))


def test_full_mediator_nie_equals_te_and_nde_zero(tiny_gpt2):
    # the LM head reads only the last residual layer: at every position it mediates everything
    med = Mediation(tiny_gpt2, positions="all").fit(TEMPLATES, PROFS)
    assert med.examples and med.skipped  # unequal token counts are skipped, not misaligned
    eff = med.layer_effect("layer.2")
    assert eff.nie[0] == pytest.approx(med.total_effect(), rel=1e-4, abs=1e-7)
    assert eff.nde[0] == pytest.approx(0.0, abs=1e-6)
    assert med.total_effect() != 0


def test_constant_mediator_has_no_indirect_effect(tiny_gpt2):
    med = Mediation(tiny_gpt2, positions="last").fit(TEMPLATES, PROFS[:2])
    # same token count, so the last token (" that") and its position embedding are the same in
    # both inputs: a constant mediator
    assert np.allclose(med.neuron_effects("layer.0", units=range(8)).nie, 0.0)
    # a neuron forced constant by an edit carries no effect either
    with intervene(tiny_gpt2, Set("layer.1:3", 0.5)):
        forced = Mediation(tiny_gpt2, positions="last").fit(TEMPLATES, PROFS[:3])
        assert forced.neuron_effects("layer.1", units=[3]).nie[0] == pytest.approx(0.0, abs=1e-12)


def test_batched_neuron_nie_matches_single_intervention(tiny_gpt2):
    med = Mediation(tiny_gpt2, positions="last", max_rows=6).fit(TEMPLATES, ["nurse"])
    ex = med.examples[0]
    eff = med.neuron_effects("layer.1")
    cn = FALLBACK_CONTINUATIONS
    a, s = cn[ex.anti], cn[ex.stereotypical]
    alt = tiny_gpt2.encode([ex.alt.split()])
    base = tiny_gpt2.encode([ex.base.split()])
    with torch.no_grad():
        _, c = tiny_gpt2.run_with_cache(alt, ["layer.1"])
    last_b = base.inputs["input_ids"].shape[1] - 1
    for u in (5, 17):
        with intervene(tiny_gpt2, Set(f"layer.1:{u}", c["layer.1"][0, -1, u], positions=[last_b])):
            want = y(tiny_gpt2, ex.base, a, s) / np.exp(ex.log_y_base) - 1
        assert eff.nie[u] == pytest.approx(want, rel=1e-3, abs=1e-6)
        held = Set(f"layer.1:{u}", cache_last(tiny_gpt2, base, u), positions=[len(alt.tokens[0]) - 1])
        with intervene(tiny_gpt2, held):
            want_nde = y(tiny_gpt2, ex.alt, a, s) / np.exp(ex.log_y_base) - 1
        assert eff.nde[u] == pytest.approx(want_nde, rel=1e-3, abs=1e-6)


def cache_last(adapter, batch, u):
    with torch.no_grad():
        return adapter.run_with_cache(batch, ["layer.1"])[1]["layer.1"][0, -1, u]


def test_heads_selection_tables_and_heatmaps(tiny_gpt2, tmp_path):
    res = mediation_analysis(tiny_gpt2, templates=TEMPLATES, professions=PROFS[:2], layers=["layer.1", "layer.2"],
                             select_k=2, select_method="greedy")
    heads = res.by_kind("head")
    assert [e.layer for e in heads] == ["layer.1.attn", "layer.2.attn"] and len(heads[0].nie) == 4
    sel = res.selections[0]
    assert len(sel["neurons"]) == 2 and sel["nie_curve"][0] == pytest.approx(max(res.by_kind("neuron")[0].nie))
    rows = res.to_csv(tmp_path / "e.csv").splitlines()
    assert len(rows) == 1 + 2 * 32 + 2 + 2 * 4
    assert res.heatmap(tmp_path / "n.png") and (tmp_path / "n.png").stat().st_size > 0
    res.heatmap(tmp_path / "h.png", kind="head")
    assert '"te"' in res.to_json()


def char_lstm(seed=0, scale=1.0):
    """A random 2-layer character LSTM LM (``scale`` multiplies its LSTM weights)."""
    vocab = ["<pad>", "<s>", " "] + list("abcdefghijklmnopqrstuvwxyzT")
    with torch.random.fork_rng():  # seeded initialisation without changing the global RNG
        torch.manual_seed(seed)
        parts = (nn.Embedding(len(vocab), 8, padding_idx=0), nn.LSTM(8, 6, 2, batch_first=True),
                 nn.Linear(6, len(vocab)))
    with torch.no_grad():
        for p in parts[1].parameters():
            p.mul_(scale)
    return LSTMAdapter.from_modules(*parts, vocab, level="char", bos="<s>", device="cpu")


def test_char_lstm_through_sequence_logprob():
    ad = char_lstm(scale=3.0)
    # a random LSTM soon forgets: a short template keeps a total effect to mediate
    med = Mediation(ad, positions="last").fit(["The {} a"], ["nurse", "cook"])
    ex = med.examples[0]
    assert abs(ex.te) > 1e-3
    he, she = (continuation_logprob(ad, ex.base, c) for c in (" he", " she"))
    assert ex.stereotypical == ("male" if he >= she else "female")
    eff = med.neuron_effects("lstm.2")
    assert len(eff.nie) == 6 and np.isfinite(eff.nie).all()
    assert np.allclose(med.neuron_effects("embedding", units=range(3)).nie, 0.0)  # same last char
    # the whole top state (h and c of both layers) at the last prompt step mediates everything
    last_alt, last_base = len(ex.alt), len(ex.base)  # bos + characters: the last prompt step
    edits = []
    for lay in ("lstm.1", "lstm.1.cell", "lstm.2", "lstm.2.cell"):
        with torch.no_grad():
            src = ad.run_with_cache(ad.encode([ex.alt]), [lay])[1][lay][0, last_alt]
        edits.append(Set(lay, src, positions=[last_base]))
    cn = FALLBACK_CONTINUATIONS
    with intervene(ad, edits):
        nie = y(ad, ex.base, cn[ex.anti], cn[ex.stereotypical]) / np.exp(ex.log_y_base) - 1
    assert nie == pytest.approx(ex.te, rel=1e-4, abs=1e-6)
    assert Neuron("lstm.2", eff.top(1)[0][0]).layer == "lstm.2"
