import json

import numpy as np
import pytest
import torch

from finegrain.attribute import (
    AttributionError,
    ClassTarget,
    ContinuationTarget,
    MaskedTokenTarget,
    NeuronTarget,
    NextTokenTarget,
    SimilarityTarget,
    TargetError,
    attribute,
    attribute_tensor,
    html_heatmap,
    neuron_attribution,
)
from finegrain.attribute._core import prepare
from finegrain.errors import ParameterError
from finegrain.models.base import ModelError
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.testing import sharpen

TEXTS = ["the cat sat on the mat", "big dogs run"]




@pytest.fixture
def clf():
    from finegrain.testing import tiny_bert

    return sharpen(tiny_bert("sequence-classification"))


# -- Captum on analytic functions (the checks) --------------------------------------------
def test_ig_relu_example_and_saliency_vs_ig():
    def f(x):
        return torch.relu(torch.relu(x[:, 0]) - 1 - torch.relu(x[:, 1]))

    r = attribute_tensor(f, torch.tensor([[3.0, 1.0]]), method="ig", n_steps=500)
    assert r.attributions[0].tolist() == pytest.approx([1.5, -0.5], abs=1e-2)

    def g(x):
        return 1 - torch.relu(1 - x[:, 0])

    x = torch.tensor([[2.0]])
    assert float(attribute_tensor(g, x, method="ig", n_steps=200).attributions[0, 0]) == pytest.approx(1.0, abs=1e-2)
    assert float(attribute_tensor(g, x, method="saliency").attributions[0, 0]) == 0.0


def test_exact_shapley_values_captum_multilayer_model():
    from captum.testing.helpers.basic_models import BasicModel_MultiLayer

    net = BasicModel_MultiLayer()
    r = attribute_tensor(lambda x: net(x)[:, 0], torch.tensor([[20.0, 50.0, 30.0]]), method="shapley_exact",
                         feature_mask=torch.tensor([[0, 1, 2]]))
    assert r.attributions[0].tolist() == pytest.approx([76.66666, 196.66666, 116.66666], abs=1e-3)
    assert r.n_evaluations == 1 + 3 * 2 * 3  # Captum: 1 + permutations x features (perturbations_per_eval=1)


# -- adapter-level ---------------------------------------------------------------------------
def test_ig_completeness_and_delta_is_the_gap(clf):
    res = attribute(clf, TEXTS, ClassTarget(1), method="ig", n_steps=100)
    for r in res:
        gap = r.f_x - r.f_baseline
        assert abs(gap) > 1e-2
        assert abs(r.total - gap) < 0.01 * abs(gap) + 1e-4
        assert r.delta == pytest.approx(r.total - gap, abs=1e-4)
        assert r.n_evaluations >= 100


def test_batching_equals_one_at_a_time(clf):
    both = attribute(clf, TEXTS, ClassTarget(0), method="ig", n_steps=32, batch_size=2)
    for t, r in zip(TEXTS, both):
        assert r.words == t.split()  # length-sorted internally, returned in input order
        one = attribute(clf, t, ClassTarget(0), method="ig", n_steps=32)
        np.testing.assert_allclose(one.word_scores, r.word_scores, atol=1e-4)
        assert one.f_x == pytest.approx(r.f_x, abs=1e-5)


def test_per_example_targets_follow_their_examples_through_batches(clf, tiny_gpt2):
    """A target given one value per example scores each example's own value, whatever the batches: calls
    sort by length (the shortest text last here), cut into batches smaller than the call, or go one by one."""
    from finegrain.attribute import sufficiency

    texts = ["the cat sat on the mat today", "big dogs run", "a bird sang in the tall old tree", "no"]
    classes = [1, 0, 0, 1]
    for batch_size in (2, 16):
        both = attribute(clf, texts, ClassTarget(classes), method="ig", n_steps=8, batch_size=batch_size)
        layer = neuron_attribution(clf, texts, ClassTarget(classes), method="grad_x_act", batch_size=batch_size)
        for t, c, r, la in zip(texts, classes, both, layer):
            one = attribute(clf, t, ClassTarget(c), method="ig", n_steps=8)
            assert r.f_x == pytest.approx(one.f_x, abs=1e-5) and r.words == t.split()
            assert la.f_x == pytest.approx(one.f_x, abs=1e-5)
    suff = sufficiency(clf, texts, ClassTarget(classes), both)  # the per-example loop, one example at a time
    assert np.isfinite(suff)
    nxt = attribute(tiny_gpt2, texts[:2], NextTokenTarget(["the", "a"], prob=False, log=True), n_steps=4,
                    batch_size=1)
    for t, tok, r in zip(texts[:2], ["the", "a"], nxt):
        assert r.f_x == pytest.approx(attribute(tiny_gpt2, t, NextTokenTarget(tok, prob=False, log=True),
                                                n_steps=4).f_x, abs=1e-5)
    with pytest.raises(TargetError, match="got 3 values for 4 examples"):
        attribute(clf, texts, ClassTarget(classes[:3]), method="ig", n_steps=4, batch_size=2)


def test_tokens_per_forward_bounds_the_forwards_not_the_result(clf):
    """Memory of IG is the activations of one forward: the token budget caps rows x padded length of
    every forward (never below one step of every example) and leaves the attributions unchanged."""
    seen = []
    def record(module, args, kwargs, out):
        if kwargs.get("inputs_embeds") is not None:  # the attribution forwards
            seen.append(tuple(kwargs["inputs_embeds"].shape[:2]))

    hook = clf.model.register_forward_hook(record, with_kwargs=True)
    try:
        big = attribute(clf, TEXTS, ClassTarget(1), method="ig", n_steps=24, batch_size=2, tokens_per_forward=None,
                        internal_batch_size=None)
        seen.clear()
        small = attribute(clf, TEXTS, ClassTarget(1), method="ig", n_steps=24, batch_size=2, tokens_per_forward=40)
    finally:
        hook.remove()
    T = max(t for _, t in seen)
    assert max(r * t for r, t in seen) <= max(40, 2 * T)
    assert max(r for r, _ in seen) < 2 * 24  # the unbounded call ran all 48 rows at once
    for a, b in zip(big, small):
        np.testing.assert_allclose(a.word_scores, b.word_scores, atol=1e-5)
        assert a.delta == pytest.approx(b.delta, abs=1e-5)


def test_baseline_keeps_special_tokens(tiny_bert):
    prep = prepare(tiny_bert, [t.split() for t in TEXTS], ClassTarget(0) if False else NeuronTarget("layer.1:0"))
    ids, base = prep.batch.inputs["input_ids"], prep.base_ids
    tok = tiny_bert.tokenizer
    for b in range(2):
        for t in range(ids.shape[1]):
            if int(ids[b, t]) in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id):
                assert base[b, t] == ids[b, t]
            else:
                assert base[b, t] == tok.pad_token_id
    assert ids[0, 0] == tok.cls_token_id and prep.attributable[0].sum() == len("thecatsatonthemat")


def test_mask_baseline_and_masked_target_keep_mask(tiny_bert):
    from finegrain.testing import tiny_bert as tb

    mlm = sharpen(tb("masked-lm"))
    tgt = MaskedTokenTarget("a")
    prep = prepare(mlm, [["the", "[MASK]", "sat"]], tgt, baseline="unk")
    m = mlm.tokenizer.mask_token_id
    pos = (prep.batch.inputs["input_ids"][0] == m).nonzero()[0, 0]
    assert prep.base_ids[0, pos] == m and not prep.attributable[0, pos]
    assert (prep.base_ids[0][prep.attributable[0]] == mlm.tokenizer.unk_token_id).all()
    r = attribute(mlm, "the [MASK] sat", tgt, n_steps=64)
    assert r.word_scores[1] == 0.0 and abs(r.delta) < 0.05 * abs(r.f_x - r.f_baseline) + 1e-4


def test_subwords_sum_to_words(clf):
    r = attribute(clf, "the elephant sat", ClassTarget(1), method="input_x_gradient")
    counts = [sum(1 for w in r.token_word_ids if w == i) for i in range(3)]
    assert counts == [3, 8, 3]  # charpiece: one token per character
    for i in range(3):
        assert r.word_scores[i] == pytest.approx(sum(s for s, w in zip(r.token_scores, r.token_word_ids) if w == i))
    assert r.token_scores[0] == 0.0 and r.token_scores[-1] == 0.0  # [CLS], [SEP]


def test_feature_ablation_costs_n_plus_one(clf):
    r = attribute(clf, "one two three four five", ClassTarget(1), method="feature_ablation", perturbations_per_eval=1)
    assert r.n_evaluations == 5 + 1
    # leave-one-out by hand
    full = r.f_x
    for i in range(5):
        words = "one two three four five".split()
        prep = prepare(clf, [words], ClassTarget(1))
        keep = torch.ones(1, 5, dtype=torch.bool)
        keep[0, i] = False
        assert r.word_scores[i] == pytest.approx(full - float(prep.game(0)(keep)[0]), abs=1e-4)
    res = attribute(clf, TEXTS, ClassTarget(1), method="feature_ablation", perturbations_per_eval=3)
    assert [x.n_evaluations for x in res] == [7, 7]  # features are shared across the batch: max words + 1


def test_neuron_conductance_sums_to_layer_conductance(clf):
    text, unit, pos = "the cat sat", 5, 2
    lc = neuron_attribution(clf, text, ClassTarget(1), layer="layer.1", method="conductance", n_steps=200)
    nc = attribute(clf, text, ClassTarget(1), method="neuron_conductance", neuron=Neuron("layer.1", unit),
                   position=pos, n_steps=200)
    total = float(nc.token_scores.sum())
    assert total == pytest.approx(float(lc.scores[pos, unit]), rel=0.05, abs=1e-4)


def test_layer_conductance_completeness_and_index(clf):
    la = neuron_attribution(clf, TEXTS, ClassTarget(1), layer="layer.1", method="conductance", n_steps=100)
    scores, index = la.scores, la.index  # a list of texts: one result per text, and the batch view
    assert len(la) == 2 and scores.shape[0] == 2 and scores.shape[2] == 32 and isinstance(index, NeuronIndex)
    assert index.neuron(7) == Neuron("layer.1", 7)
    gap = la.f_x - la.f_baseline
    np.testing.assert_allclose(scores.sum((1, 2)), gap, rtol=0.02, atol=1e-4)
    assert la.word_scores(1).shape == (3, 32)
    g = neuron_attribution(clf, TEXTS, ClassTarget(1), layer="layer.2.mlp", method="grad_x_act")
    assert g.scores.shape[2] == 64 and g.delta is None
    li = neuron_attribution(clf, TEXTS[1], ClassTarget(1), layer="layer.2", method="layer_ig", n_steps=100)
    assert li.scores.sum() == pytest.approx(float(li.f_x - li.f_baseline), rel=0.02, abs=1e-4)


def test_gpt2_next_token_and_continuation(tiny_gpt2):
    sharpen(tiny_gpt2, std=0.3)
    r = attribute(tiny_gpt2, "the cat sat on", NextTokenTarget("the", prob=False, log=True), n_steps=100)
    assert abs(r.delta) < 0.02 * abs(r.f_x - r.f_baseline) + 1e-4
    c = attribute(tiny_gpt2, ["the cat", "a nurse said"], ContinuationTarget("sat on the mat"), n_steps=100)
    assert c[0].words == ["the", "cat"] and len(c[1].word_scores) == 3
    for r in c:
        assert r.f_x < 0  # a log-probability
        assert abs(r.delta) < 0.02 * abs(r.f_x - r.f_baseline) + 1e-3


def test_similarity_and_neuron_targets(tiny_bert):
    sharpen(tiny_bert)
    s = attribute(tiny_bert, "the cat sat", SimilarityTarget("a dog ran"), n_steps=64)
    assert -1 <= s.f_x <= 1 and abs(s.delta) < 0.05 * abs(s.f_x - s.f_baseline) + 1e-4
    n = attribute(tiny_bert, TEXTS, NeuronTarget("layer.1:3"), n_steps=64)
    assert all(abs(r.delta) < 0.05 * abs(r.f_x - r.f_baseline) + 1e-4 for r in n)


def test_bad_targets_and_layers_raise(clf, tiny_bert):
    with pytest.raises(TargetError, match="out of range"):
        attribute(clf, "the cat", ClassTarget(5))
    with pytest.raises(ModelError, match="unknown layer"):
        attribute(clf, "the cat", ClassTarget(1), method="layer_conductance", layer="layer.9")
    with pytest.raises(ModelError, match="unknown layer"):
        neuron_attribution(clf, "the cat", ClassTarget(1), layer="nope")
    with pytest.raises(AttributionError, match="out of range"):
        attribute(clf, "the cat", ClassTarget(1), method="neuron_conductance", neuron="layer.1:99")
    with pytest.raises(ParameterError, match="unknown attribution method"):  # an argument, not the model
        attribute(clf, "the cat", ClassTarget(1), method="magic")
    with pytest.raises(TargetError, match="no \\[MASK\\]"):
        from finegrain.testing import tiny_bert as tb

        attribute(tb("masked-lm"), "the cat", MaskedTokenTarget())
    with pytest.raises(TargetError, match="word=<index>"):
        from finegrain.testing import tiny_bert as tb

        attribute(tb("token-classification"), "the cat", ClassTarget(0))


@pytest.mark.parametrize("method", ["saliency", "deeplift", "deeplift_shap", "gradient_shap", "kernel_shap",
                                    "shapley", "occlusion", "layer_ig", "layer_conductance"])
def test_every_method_runs(clf, method):
    res = attribute(clf, TEXTS, ClassTarget(1), method=method, n_steps=16, n_samples=8, n_baselines=3)
    assert len(res) == 2 and all(np.isfinite(r.word_scores).all() and r.n_evaluations > 0 for r in res)
    if method in ("deeplift", "layer_ig", "layer_conductance"):
        assert all(r.delta is not None for r in res)


def test_token_classification_word_target():
    from finegrain.testing import tiny_bert as tb

    tc = sharpen(tb("token-classification", num_labels=3))
    r = attribute(tc, "the cat sat", ClassTarget(2, word=1), n_steps=64)
    assert abs(r.delta) < 0.05 * abs(r.f_x - r.f_baseline) + 1e-4


def test_outputs_json_html_and_cli(clf, tmp_path, monkeypatch, capsys):
    r = attribute(clf, "the cat sat", ClassTarget(1), n_steps=16)
    d = json.loads(r.to_json())
    assert d["words"] == ["the", "cat", "sat"] and len(d["word_scores"]) == 3
    assert "<span" in html_heatmap([r]) and "delta" in r.table()
    import argparse

    from finegrain.attribute import cli

    monkeypatch.setattr(cli, "_adapter", lambda args: clf)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["attribute", "--text", "the cat sat", "--method", "ig", "--steps", "16",
                              "--target", "class:1", "--json", str(tmp_path / "a.json"), "--html",
                              str(tmp_path / "a.html")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "evaluations=" in out and "f(x')=" in out
    assert (tmp_path / "a.html").exists() and json.loads((tmp_path / "a.json").read_text())[0]["method"] == "ig"
    args = parser.parse_args(["attribute", "--text", "the cat sat", "--interactions", "stii", "--target", "class:1",
                              "--png", str(tmp_path / "m.png")])
    assert args.func(args) == 0 and (tmp_path / "m.png").exists()


@pytest.mark.slow
def test_minilm_head_accuracy_and_ig_delta(tmp_path):
    from finegrain.attribute import load_head, train_head

    ad = train_head("minilm", "builtin:sentiment", save=tmp_path / "h.pt")
    assert ad.head_info["accuracy"] > 0.8
    r = attribute(ad, ["the movie was wonderful and moving", "a dull , painful film"], ClassTarget(1))
    for x in r:
        assert abs(x.delta) < 0.01 * abs(x.f_x - x.f_baseline)
    assert r[0].f_x > r[1].f_x
    again = load_head(tmp_path / "h.pt", "minilm")
    b = again.encode([["a", "great", "show"]])
    with torch.no_grad():
        np.testing.assert_allclose(again.forward(b).logits.numpy(), ad.forward(b).logits.numpy(), atol=1e-5)


@pytest.mark.slow
def test_minilm_similarity_ig(minilm):
    r = attribute(minilm, "a man is playing a guitar", SimilarityTarget("someone plays music"))
    assert abs(r.delta) < 0.01 * abs(r.f_x - r.f_baseline)
