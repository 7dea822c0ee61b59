"""The result contract for the attribute package (issue 17) and Captum-style visualisation records
(issue 18, item 6): list in -> ResultList out, JSON round trips, pictures, escaped HTML, no global
random state, models handed back as they were, trained heads with named classes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from finegrain.attribute import (
    Attribution,
    ClassTarget,
    FaithfulnessList,
    Interaction,
    LayerAttribution,
    LayerAttributionList,
    archipelago,
    attribute,
    compare_methods,
    evaluate_methods,
    faithfulness,
    head_adapter,
    integrated_hessians,
    interactions,
    neuron_attribution,
    records_html,
    shapley_taylor,
    train_head,
    visualization_records,
)
from finegrain.results import ResultList, result_from_json
from finegrain.testing import sharpen, tiny_bert

TEXTS = ["the cat sat", "big dogs run"]


@pytest.fixture(scope="module")
def clf():
    ad = sharpen(tiny_bert("sequence-classification"))
    ad.model.config.id2label = {0: "negative", 1: "positive"}
    return ad


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_in_list_out_and_json_round_trips(clf, tmp_path):
    one = attribute(clf, "the cat sat", ClassTarget(1), n_steps=8)
    many = attribute(clf, TEXTS, ClassTarget(1), n_steps=8)
    assert isinstance(one, Attribution) and isinstance(many, ResultList) and len(many) == 2
    back = Attribution.from_json(one.to_json())
    np.testing.assert_allclose(back.word_scores, one.word_scores)
    assert back.description == one.description and back.n_steps == 8 and back.complete == one.complete
    again = result_from_json(many.to_json(tmp_path / "m.json"))
    assert isinstance(again, ResultList) and [a.words for a in again] == [a.words for a in many]
    for fn in (shapley_taylor, archipelago):
        assert isinstance(fn(clf, "the cat sat", ClassTarget(1)), Interaction)
        assert isinstance(fn(clf, TEXTS, ClassTarget(1)), ResultList)
    inter = interactions(clf, TEXTS, ClassTarget(1), method="stii")
    assert isinstance(inter, ResultList)
    i0 = Interaction.from_json(inter[0].to_json())
    np.testing.assert_allclose(i0.matrix, inter[0].matrix)
    assert i0.description.label == "positive" and inter[0].complete
    la = neuron_attribution(clf, TEXTS, ClassTarget(1), layer="layer.1", n_steps=8)
    lb = result_from_json(la.to_json())  # a list of texts: one LayerAttribution each, saved as one list
    assert isinstance(lb, LayerAttributionList) and isinstance(lb[1], LayerAttribution)
    np.testing.assert_allclose(lb.scores, la.scores)
    assert lb.index == la.index and lb.descriptions[0].label == "positive"
    one = LayerAttribution.from_json(la[1].to_json())
    np.testing.assert_allclose(one.scores, la[1].scores) and one.index == la.index


def test_pictures_and_notebook_html(clf, tmp_path):
    r = attribute(clf, ["the <b>cat</b> sat", "big dogs"], ClassTarget(1), n_steps=8, true_labels=["positive", None])
    assert _png(r[0].plot(tmp_path / "a.png"))
    html = r[0]._repr_html_()
    assert "&lt;b&gt;cat&lt;/b&gt;" in html and "<b>cat</b>" not in html
    assert _png(shapley_taylor(clf, "the cat sat", ClassTarget(1)).plot(tmp_path / "i.png"))
    assert _png(neuron_attribution(clf, "the cat", ClassTarget(1), layer="layer.1", n_steps=8).plot(tmp_path / "l"))
    fa = faithfulness(clf, TEXTS, ClassTarget(1), attribute(clf, TEXTS, ClassTarget(1), method="saliency"))
    assert _png(fa.plot(tmp_path / "f.png")) and "comprehensiveness" in fa.table()
    em = evaluate_methods(clf, TEXTS, ClassTarget(1), methods=("ig", "saliency"), n_steps=8)
    assert em[0]["method"] == "ig" and [row["method"] for row in em] == ["ig", "saliency"]
    assert _png(em.plot(tmp_path / "e.png")) and "incomplete" in em.table()
    cm = compare_methods(clf, TEXTS, ClassTarget(1), methods=("ig", "saliency"), n_steps=8)
    assert set(cm) == {"ig", "saliency"} and "saliency" in cm.table() and _png(cm.plot(tmp_path / "c.png"))


def test_visualization_records_as_captum(clf):
    res = attribute(clf, ["the cat sat", "big <i>dogs</i>"], "pred", n_steps=8, true_labels=["positive", "x<y"])
    recs = visualization_records(res)
    with torch.no_grad():
        p = torch.softmax(clf.forward(clf.encode([["the", "cat", "sat"]])).logits[0], -1)
    top = int(p.argmax())
    r0 = recs[0]
    assert r0.true_label == "positive" and r0.predicted_label == ["negative", "positive"][top]
    assert r0.predicted_probability == pytest.approx(float(p[top]), rel=1e-5)
    assert r0.target_label == r0.predicted_label and r0.total == pytest.approx(res[0].total)
    html = records_html(recs)
    for head in ("True Label", "Predicted Label", "Attribution Label", "Attribution Score", "Word Importance"):
        assert head in html
    assert "x&lt;y" in html and "&lt;i&gt;dogs&lt;/i&gt;" in html and "<i>" not in html
    table = recs.table()
    assert "true=positive" in table and f"predicted='{r0.predicted_label}'" in table


def test_no_global_random_state_and_reproducible(clf):
    torch.manual_seed(123)
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = attribute(clf, "the cat sat on", ClassTarget(1), method="shapley", n_samples=5, seed=1)
        b = attribute(clf, "the cat sat on", ClassTarget(1), method="shapley", n_samples=5, seed=1)
        g = attribute(clf, "the cat sat on", ClassTarget(1), method="gradient_shap", n_samples=5, seed=1)
    assert torch.equal(torch.get_rng_state(), state) and np.array_equal(np.random.get_state()[1], np_state)
    np.testing.assert_allclose(a.word_scores, b.word_scores)
    assert np.isfinite(g.word_scores).all()


def test_model_is_handed_back_in_its_training_mode(clf):
    clf.model.train()
    flags = [p.requires_grad for p in clf.model.parameters()]
    attribute(clf, "the cat", ClassTarget(1), n_steps=4)
    neuron_attribution(clf, "the cat", ClassTarget(1), layer="layer.1", n_steps=4)
    shapley_taylor(clf, "the cat", ClassTarget(1))
    assert clf.model.training and all(m.training for m in clf.model.modules())
    assert [p.requires_grad for p in clf.model.parameters()] == flags
    clf.model.eval()


def test_trained_head_names_its_classes_and_caches(tmp_path):
    base = tiny_bert()
    state = torch.get_rng_state()
    head = train_head(base, "builtin:sentiment", epochs=20)
    assert torch.equal(torch.get_rng_state(), state)
    again = train_head(base, "builtin:sentiment", epochs=20)
    torch.testing.assert_close(head.model.head.weight, again.model.head.weight)
    r = attribute(head, "a great film", "pred", n_steps=8)
    assert r.description.label in ("negative", "positive") and r.description.category == "class"
    cached = head_adapter("builtin:sentiment", base, cache_dir=tmp_path / "heads")
    assert list((tmp_path / "heads").glob("*.pt"))
    with pytest.raises(ValueError, match="unknown head"):
        head_adapter("builtin:nothing", base)
    assert cached.head_info["labels"] == ["negative", "positive"]


def test_layer_and_faithfulness_results_are_one_per_text(clf):
    """Leftover of the rework: neuron_attribution and faithfulness returned one result for a whole batch.
    Now list in -> list out, one in -> one out, and the dataset-level numbers stay on the list."""
    la = neuron_attribution(clf, TEXTS, ClassTarget(1), layer="layer.1", n_steps=8)
    assert isinstance(la, LayerAttributionList) and len(la) == 2
    for b, text in enumerate(TEXTS):
        one = neuron_attribution(clf, text, ClassTarget(1), layer="layer.1", n_steps=8)
        assert isinstance(one, LayerAttribution) and one.words == text.split()
        np.testing.assert_allclose(one.scores, la[b].scores, atol=1e-5)
        np.testing.assert_allclose(la.scores[b, : one.scores.shape[0]], one.scores, atol=1e-5)
        # float32, padded batch vs alone: 1.1e-6 apart on some CPUs' kernels, as the scores' 1e-5 above
        assert one.f_x == pytest.approx(float(la.f_x[b]), abs=1e-5) and one.complete == la.complete[b]
        scores, index = one
        assert scores.shape == (len(one.tokens), 32) and index == la.index
        np.testing.assert_allclose(one.word_scores().sum(0) + one.other_scores(), one.scores.sum(0), atol=1e-5)
    atts = attribute(clf, TEXTS, ClassTarget(1), method="saliency")
    fa = faithfulness(clf, TEXTS, ClassTarget(1), atts)
    assert isinstance(fa, FaithfulnessList) and len(fa) == 2
    singles = [faithfulness(clf, t, ClassTarget(1), a) for t, a in zip(TEXTS, atts)]
    assert all(type(f).__name__ == "Faithfulness" for f in singles)
    assert faithfulness(clf, TEXTS[0], ClassTarget(1), atts[0].word_scores).aopc_comprehensiveness == pytest.approx(
        singles[0].aopc_comprehensiveness)
    np.testing.assert_allclose(fa.comprehensiveness, [f.comprehensiveness for f in singles], atol=1e-6)
    # the dataset-level AOPC is the mean over examples and bins, as before
    assert fa.aopc_comprehensiveness == pytest.approx(np.mean([f.comprehensiveness for f in singles]), abs=1e-6)
    assert fa.summary()["deletion_auc"] == pytest.approx(np.mean([f.deletion for f in singles]), abs=1e-6)
    assert len(singles[0].deletion_curve) == len(TEXTS[0].split()) + 1
    assert singles[0].deletion_curve[0] == pytest.approx(singles[0].f_x, abs=1e-5)  # nothing removed yet
    back = result_from_json(fa.to_json())
    assert isinstance(back, FaithfulnessList) and back.aopc_sufficiency == pytest.approx(fa.aopc_sufficiency)


def test_interactions_record_steps_and_samples(clf):
    ih = integrated_hessians(clf, "big dogs", ClassTarget(1), steps=6)
    assert ih.n_steps == 6 and ih.n_evaluations == 36 and "steps=6 (6x6 grid)" in ih.table()
    exact = shapley_taylor(clf, "big dogs run", ClassTarget(1))
    assert exact.exact and exact.n_samples is None and exact.n_evaluations == 2**3 and "exact" in exact.table()
    sampled = shapley_taylor(clf, "big dogs run", ClassTarget(1), max_exact=2, n_samples=7)
    assert sampled.exact is False and sampled.n_samples == 7 and "sampled: 7 orderings" in sampled.table()
    arch = archipelago(clf, "big dogs run", ClassTarget(1))
    assert arch.n_evaluations == 2 * (1 + 3 + 3) + len(arch.sets) + 2 and arch.n_steps is None
    assert Interaction.from_json(sampled.to_json()).n_samples == 7
