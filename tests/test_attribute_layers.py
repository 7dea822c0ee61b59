"""Layer and neuron methods (issue 15, items 3-5): neuron conductance integrates with Gauss-Legendre
(weights summing to 1) and works on hook points with one vector per example; layer IG / conductance
keep the special-token mass so that the scores plus the delta are the gap; incomplete results are
flagged; the native layer methods agree with Captum's."""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.attribute import (
    ClassTarget,
    CompletenessWarning,
    attribute,
    neuron_attribution,
)
from finegrain.attribute._core import prepare
from finegrain.attribute.layer import layer_conductance, layer_integrated_gradients, neuron_conductance
from finegrain.models.base import Batch, ModelAdapter
from finegrain.testing import sharpen, tiny_bert


class TwoLayerReLU(nn.Module):
    """x [B, 3, 1] -> h = relu(W1 x) [B, 2] (a flat hook point) -> logits = W2 h. Unit 0 of h is
    relu(x0 + x1 + x2): active along the whole path from 0 to x = [0, 70, 30]."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(4, 1)
        self.lin1 = nn.Linear(3, 2, bias=False)
        self.hidden = nn.Identity()
        self.lin2 = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[0.0], [0.0], [70.0], [30.0]]))  # <pad>, a, b, c
            self.lin1.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]]))
            self.lin2.weight.copy_(torch.tensor([[1.0, 0.5], [-1.0, 2.0]]))

    def forward(self, input_ids):
        x = self.emb(input_ids).flatten(1)
        return self.lin2(self.hidden(torch.relu(self.lin1(x))))


class ReLUAdapter(ModelAdapter):
    """A user's own module behind the adapter interface; its embedding output is swapped (checked)."""

    kind, name = "encoder", "two-layer-relu"

    def __init__(self):
        self.model, self.device, self.pad_id = TwoLayerReLU(), torch.device("cpu"), 0
        self.stoi = {"<pad>": 0, "a": 1, "b": 2, "c": 3}

    def layers(self):
        return {"hidden": 2}

    def encode(self, sentences):
        rows = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        ids = torch.tensor([[self.stoi[w] for w in r] for r in rows])
        return Batch({"input_ids": ids}, [list(range(len(r))) for r in rows], [len(r) for r in rows],
                     torch.ones_like(ids), [list(r) for r in rows])

    def forward(self, batch):
        return self.model(batch.inputs["input_ids"])

    def _register(self, layer, fn):
        return self.model.hidden.register_forward_hook(lambda m, a, out: fn(out, None))


@pytest.fixture
def clf():
    return sharpen(tiny_bert("sequence-classification"))


def test_neuron_conductance_is_exact_with_gauss_legendre_on_a_flat_hook_point():
    ad = ReLUAdapter()
    r = attribute(ad, "a b c", ClassTarget(0), method="neuron_conductance", neuron="hidden:0", baseline="zero")
    # d logit_0 / d h_0 = 1 and d h_0 / d x_i = 1 along the whole path: conductance = x_i exactly
    np.testing.assert_allclose(r.word_scores, [0.0, 70.0, 30.0], atol=1e-3)
    assert r.n_steps == 50
    # Captum's default Riemann trapezoid rule has weights summing to (n - 1) / n (and its node at
    # alpha = 0 sits on ReLU's kink): 97 of 100
    import captum.attr as ca

    x = torch.tensor([[0.0, 70.0, 30.0]])
    cap = ca.NeuronConductance(lambda x: ad.model.lin2(ad.model.hidden(torch.relu(ad.model.lin1(x)))),
                               ad.model.hidden).attribute(x, neuron_selector=0, target=0)
    assert float(cap.sum()) < 99.0
    # the flat hook point works for layer methods too: every path crosses h, so conductance is complete
    la = neuron_attribution(ad, "a b c", ClassTarget(0), layer="hidden", baseline="zero")
    assert la.scores.shape == (1, 2) and la.tokens == ["<example>"]  # one text in, one result out
    assert la.scores.sum() == pytest.approx(float(la.f_x - la.f_baseline), rel=1e-4)
    with pytest.raises(ValueError, match="one vector per example"):
        attribute(ad, "a b c", ClassTarget(0), method="neuron_conductance", neuron="hidden:0", position=1)


def _tapped(adapter, layer):
    class Tap(nn.Module):
        def forward(self, x):
            return x.clone()

    tap = Tap()

    @contextlib.contextmanager
    def ctx():
        with adapter.hooks({layer: lambda act, step: tap(act)}):
            yield tap

    return ctx()


def test_native_layer_methods_agree_with_captum(clf):
    import captum.attr as ca

    prep = prepare(clf, [["the", "cat", "sat"], ["big", "dogs"]], ClassTarget(1))
    x = prep.embeds.clone().requires_grad_(True)
    with _tapped(clf, "layer.1") as tap:
        want = ca.LayerIntegratedGradients(prep.forward, tap).attribute(
            x, baselines=prep.base_embeds, additional_forward_args=prep.args(), n_steps=24)
        nc_want = ca.NeuronConductance(prep.forward, tap).attribute(
            x[:1], neuron_selector=(2, 5), baselines=prep.base_embeds[:1], additional_forward_args=prep.args([0]),
            n_steps=24, method="gausslegendre")
        lc_want = ca.LayerConductance(prep.forward, tap).attribute(
            x, baselines=prep.base_embeds, additional_forward_args=prep.args(), n_steps=400)
    got = layer_integrated_gradients(prep, "layer.1", [0, 1], 24, rows=16)
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-4)
    nc = neuron_conductance(prep, "layer.1", 5, [0], 24, rows=16, position=2)
    torch.testing.assert_close(nc, nc_want.detach(), atol=1e-6, rtol=1e-4)
    lc = layer_conductance(prep, "layer.1", [0, 1], 64, rows=32)
    gap = torch.as_tensor(prep.value() - prep.value(prep.base_embeds))
    np.testing.assert_allclose(lc.sum((1, 2)), gap, rtol=1e-2)  # complete: the layer is a cut
    # Captum's conductance is a left Riemann sum on Gauss-Legendre nodes (error ~ 1/n); ours a trapezoid
    # Stieltjes sum (~ 1/n^2): per token they agree to well within the 1% criterion
    torch.testing.assert_close(lc.sum(-1), lc_want.detach().sum(-1), atol=1e-2 * float(gap.abs().max()), rtol=0)


@pytest.mark.parametrize("method", ["layer_ig", "layer_conductance"])
def test_layer_scores_keep_the_special_token_mass(clf, method):
    """MiniLM layer.3 returned 4.012 of a 4.379 gap with a delta of -5.6e-5: the delta must describe the
    scores returned. [CLS]/[SEP] states carry part of the flow; it stays in token_scores (and is
    reported as other_score), so total - delta = f(x) - f(x') for what the user gets."""
    res = attribute(clf, ["the cat sat on the mat", "big dogs"], ClassTarget(1), method=method, layer="layer.2")
    for r in res:
        specials = [s for s, w in zip(r.token_scores, r.token_word_ids) if w is None]
        assert abs(sum(specials)) > 1e-3 * abs(r.gap)  # the mass the old code dropped
        assert r.other_score == pytest.approx(sum(specials), abs=1e-6)
        assert float(r.word_scores.sum()) + r.other_score == pytest.approx(r.total, abs=1e-6)
        assert r.total - r.delta == pytest.approx(r.gap, abs=1e-6)
        assert float(np.sum(r.token_scores)) == pytest.approx(r.total, abs=1e-6)
        assert r.complete and abs(r.delta) <= 0.01 * abs(r.gap)


def test_neuron_attribution_words_plus_rest_is_the_total(clf):
    la = neuron_attribution(clf, ["the cat sat", "big dogs"], ClassTarget(1), layer="layer.1")
    for b in range(2):
        np.testing.assert_allclose(la.word_scores(b).sum(0) + la.other_scores(b), la.scores[b].sum(0), atol=1e-5)
    assert all(la.complete) and all(n is not None for n in la.n_steps)


def test_incomplete_results_are_flagged_everywhere(clf, tmp_path):
    """DeepLift's -10.09 on a gap of 9.7 was shown without a word: flag it (warning, JSON, table, HTML)."""
    with pytest.warns(CompletenessWarning, match="not complete"):
        r = attribute(clf, "the cat sat on the mat", ClassTarget(1), method="deeplift")
    assert abs(r.delta) > 0.01 * abs(r.gap) and r.complete is False
    d = json.loads(r.to_json())
    assert d["complete"] is False and d["relative_delta"] > 0.01
    assert "INCOMPLETE" in r.table() and "INCOMPLETE" in r.html()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        ok = attribute(clf, "the cat sat on the mat", ClassTarget(1), method="ig")
    assert ok.complete and "complete" in ok.table() and "INCOMPLETE" not in ok.table()
    assert attribute(clf, "the cat", ClassTarget(1), method="saliency").complete is None


def test_adaptive_steps_reach_the_stated_delta(clf):
    res = attribute(clf, ["the cat sat on the mat", "big dogs run", "a b"], ClassTarget(1))
    for r in res:
        assert r.n_steps in (16, 32, 64, 128, 256)
        assert abs(r.delta) <= 0.01 * abs(r.gap) + 1e-6
    fixed = attribute(clf, "big dogs run", ClassTarget(1), n_steps=7)
    assert fixed.n_steps == 7
    with pytest.raises(ValueError, match="n_steps"):
        attribute(clf, "big dogs", ClassTarget(1), n_steps=0)
