"""Single-unit sweeps that share the layers below the edit (issue 19): the same values as the unshared
sweep on transformers and LSTMs (textgenrnn's windows included), the lower layers run once, the model is
restored (also after an error and in its training mode), results follow the Result protocol."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.intervene import (
    Agreement,
    AgreementPair,
    LMLoss,
    ModelAblationCurve,
    PerRow,
    SweepResult,
    intervene,
    model_ablation_curve,
    shared_prefix,
    single_unit_sweep,
    sweep_agreement,
)
from finegrain.intervene.scoring import Accuracy, Objective, logits_of, repeat_batch
from finegrain.models.lstm import LSTMAdapter
from finegrain.models.textgenrnn import TextgenrnnModel
from finegrain.testing import tiny_bert, tiny_gpt2

TEXTS = ["the cat sat on the mat", "the dogs run in the park", "a bird sang"]
CHARS = ["<pad>", "<s>", " ", "."] + list("abcdefghijklmnopqrstuvwxyz")


def char_lm(kind: str, layers: int = 2) -> LSTMAdapter:
    g = torch.Generator().manual_seed(1)
    if kind == "lstm":
        parts = nn.Embedding(len(CHARS), 8), nn.LSTM(8, 6, layers, batch_first=True), nn.Linear(6, len(CHARS))
        ad = LSTMAdapter.from_modules(*parts, CHARS, level="char", bos="<s>", device="cpu")
    else:  # textgenrnn's architecture, small: attention over [emb, h1, h2] of 6-character windows
        ad = LSTMAdapter(TextgenrnnModel(len(CHARS), 8, 6, layers, window=6, context=kind), CHARS, level="char",
                         bos="<s>", unk=0, device="cpu")
    with torch.no_grad():
        for p in ad.model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return ad


class Margin(Objective):
    """A continuous classifier score (mean logit margin), so that every unit's ablation shows."""

    name = "margin"

    def __init__(self, adapter, texts):
        self.batch = adapter.encode(texts)

    def row_scores(self, adapter, output):
        logits = logits_of(adapter, output)
        return logits[:, 0] - logits[:, 1]


GPT2 = {}


def gpt2():
    if not GPT2:  # one tiny GPT-2 for the module (its tokenizer takes a while to train)
        GPT2["m"] = tiny_gpt2(layers=3)
    return GPT2["m"]


PAIRS = [AgreementPair("the cat", " is", " are"), AgreementPair("the dogs", " are", " is"),
         AgreementPair("a bird near the cats", " sings", " sing")]


@pytest.mark.parametrize("case", ["gpt2:layer.1", "gpt2:layer.2.mlp", "gpt2:layer.2", "bert:layer.1",
                                  "lstm:lstm.2", "lstm:lstm.2.cell", "window:lstm.2", "stream:lstm.2"])
def test_shared_sweep_equals_unshared(case):
    kind, layer = case.split(":")
    if kind == "gpt2":
        ad = gpt2()
        obj = LMLoss(ad, TEXTS)
    elif kind == "bert":
        ad = tiny_bert("sequence-classification")
        obj = Margin(ad, TEXTS)
    else:
        ad = char_lm(kind)
        obj = Agreement(ad, PAIRS, measure="margin") if kind != "lstm" else LMLoss(ad, TEXTS)
    units = range(8) if kind in ("gpt2", "bert") else None
    shared = single_unit_sweep(ad, layer, obj, units=units, max_rows=9)
    plain = single_unit_sweep(ad, layer, obj, units=units, max_rows=9, share_prefix=False)
    loop = single_unit_sweep(ad, layer, obj, units=units, batched=False)
    assert shared.shared_layers >= 1 and plain.shared_layers == 0
    np.testing.assert_allclose(shared.scores, plain.scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(shared.scores, loop.scores, rtol=1e-5, atol=1e-5)
    assert shared.baseline == pytest.approx(plain.baseline, abs=1e-6)
    assert np.ptp(shared.scores) > 0  # the units matter: a comparison that can fail


def test_lower_layers_run_once_and_the_model_is_restored():
    ad = gpt2()
    calls = []
    handle = ad.blocks[0].register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]) if a else None)
    obj = LMLoss(ad, TEXTS)
    originals = list(ad.blocks)
    res = single_unit_sweep(ad, "layer.2", obj, units=range(12), max_rows=9)
    assert res.forwards == 1 + 4 and res.shared_layers == 2
    assert calls == [len(TEXTS)]  # block 1 ran once, on the batch itself, for all 12 units
    assert list(ad.blocks) == originals
    handle.remove()
    before = ad.score_fn(ad.forward(obj.batch))
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        with shared_prefix(ad, "layer.2", obj.batch):
            raise RuntimeError("boom")
    assert list(ad.blocks) == originals and torch.equal(before, ad.score_fn(ad.forward(obj.batch)))
    lstm = char_lm("window")
    rnn = lstm.model.rnn
    with pytest.raises(RuntimeError, match="boom"):
        with shared_prefix(lstm, "lstm.2", lstm.encode(["ab cd"])):
            raise RuntimeError("boom")
    assert lstm.model.rnn is rnn and not rnn.has_hooks()


def test_shared_prefix_refuses_nothing_silently():
    ad = char_lm("lstm")
    b = ad.encode(["ab cd", "efg"])
    other = ad.encode(["xyz", "q r"])
    with torch.no_grad(), shared_prefix(ad, "lstm.2", b) as p:
        with intervene(ad, PerRow("lstm.2", torch.zeros(2, 1, dtype=torch.long))):
            got = ad.score_fn(ad.forward(other))  # another batch: computed in full, not replayed
    with torch.no_grad(), intervene(ad, PerRow("lstm.2", torch.zeros(2, 1, dtype=torch.long))):
        want = ad.score_fn(ad.forward(other))
    assert torch.equal(got, want) and p.stats == {"shared": 0, "computed": 1}
    with torch.no_grad(), shared_prefix(ad, "lstm.2", b) as p:
        with intervene(ad, PerRow("lstm.2", torch.zeros(4, 1, dtype=torch.long))):
            ad.forward(repeat_batch(b, 2))
    assert p.stats["shared"] == 1


def test_sweep_keeps_training_mode_and_runs_in_eval():
    ad = tiny_bert("sequence-classification")
    for m in ad.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.5
    obj = Accuracy(ad, TEXTS, [0, 1, 1])
    ad.model.train()
    a = single_unit_sweep(ad, "layer.1", obj, units=range(4))
    assert ad.model.training and all(m.training for m in ad.model.modules())
    b = single_unit_sweep(ad, "layer.1", obj, units=range(4))
    assert a.scores == b.scores  # no dropout inside the analysis


def test_shared_sweep_is_faster_on_a_deep_model():
    ad = tiny_bert("sequence-classification", layers=8, hidden=64)
    obj = Margin(ad, TEXTS)
    kw = dict(units=range(16), max_rows=24)
    single_unit_sweep(ad, "layer.7", obj, **kw)  # warm-up
    shared, plain = [], []
    for _ in range(3):  # interleaved, best of 3: a shared machine's load comes in bursts
        shared.append(single_unit_sweep(ad, "layer.7", obj, **kw).seconds)
        plain.append(single_unit_sweep(ad, "layer.7", obj, share_prefix=False, **kw).seconds)
    assert min(shared) < 0.8 * min(plain), (shared, plain)  # 7 of 8 blocks skipped: a loose bound


def test_result_protocol_and_agreement(tmp_path):
    ad = gpt2()
    obj = LMLoss(ad, TEXTS)
    sw = single_unit_sweep(ad, "layer.1", obj, units=range(10))
    back = SweepResult.from_json(sw.to_json())
    assert back.scores == sw.scores and back.top(3) == sw.top(3)
    assert "damage" in sw.table() and sw.plot(tmp_path / "s.png").stat().st_size > 0
    assert "<img" in sw._repr_html_()
    exact = np.asarray(sw.scores) - sw.baseline
    agree = sweep_agreement(sw, exact * 2.0, k=3, method="attribution patching")
    assert agree.pearson == pytest.approx(1.0) and agree.spearman == pytest.approx(1.0) and agree.top_k_overlap == 1
    assert sweep_agreement(sw, -exact, k=3).spearman == pytest.approx(-1.0)
    curve = model_ablation_curve(ad, [f"layer.1:{u}" for u in range(10)], obj, ks=[1, 3], random_repeats=2)
    assert len(curve.spread["random"]) == 2 and curve.random_repeats == 2
    assert ModelAblationCurve.from_json(curve.to_json()).scores == curve.scores
    assert "top" in curve.table() and curve.plot(tmp_path / "c.png").exists()
    with pytest.raises(ValueError, match="2 values"):
        sweep_agreement(sw, [0.0, 1.0])


def test_sweep_speed_measure():
    """The timing helper reports shared / unshared / loop cost per unit (numbers for make bench)."""
    from finegrain.intervene import benchmark_sweep

    ad = gpt2()
    t = time.perf_counter()
    res = benchmark_sweep(ad, "layer.2", LMLoss(ad, TEXTS), n_loop_units=2, units=range(8), repeats=1)
    assert time.perf_counter() - t < 30
    assert res["shared_layers"] == 2 and res["units"] == 8
    assert {"plain_forward_s", "batched_s_per_unit", "unshared_s_per_unit", "loop_s_per_unit"} <= set(res)
