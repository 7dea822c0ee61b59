import numpy as np
import pytest
import torch
from torch import nn

from finegrain.attribute import (
    ClassTarget,
    attribute,
    evaluate_methods,
    faithfulness,
    format_table,
    infidelity,
    sensitivity,
)
from finegrain.models.base import ModelAdapter
from finegrain.models.hf import HFAdapter
from finegrain.testing import sharpen


class BagOfChars(nn.Module):
    """Linear bag-of-tokens classifier: logit_1 = sum of per-token weights (pad weighs 0)."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, 1)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(vocab, 1, generator=g))
            self.emb.weight[0] = 0.0  # [PAD]

    def forward(self, input_ids, attention_mask, **kw):
        s = (self.emb(input_ids).squeeze(-1) * attention_mask).sum(1)
        return torch.stack([-s, s], 1)


class BowAdapter(ModelAdapter):
    """A plain PyTorch model behind the adapter interface (not a transformers model)."""

    kind = "encoder"
    name = "bow"

    def __init__(self):
        from finegrain.testing import charpiece_tokenizer

        self.tokenizer = charpiece_tokenizer()
        self.model = BagOfChars(len(self.tokenizer))
        self.device = torch.device("cpu")
        self.max_length = 128

    def layers(self):
        return {"embedding": 1}

    def encode(self, sentences):
        return HFAdapter.encode(self, sentences)

    def forward(self, batch):
        return self.model(**batch.inputs)

    def _register(self, layer, fn):
        return self.model.emb.register_forward_hook(lambda m, a, o: fn(o, None))


SENTS = ["the quick brown fox jumps over lazy dogs", "a cat sat on the warm mat today",
         "seven small birds sing loudly at dawn", "nobody expected the final score here"]


def oracle(adapter, text):
    """True word contributions of the linear model (baseline pad has weight 0)."""
    tok = adapter.tokenizer
    w = adapter.model.emb.weight[:, 0].detach()
    return np.array([float(sum(w[i] for i in tok(word, add_special_tokens=False)["input_ids"]))
                     for word in text.split()])


def test_ig_on_linear_model_is_the_oracle_via_generic_adapter():
    ad = BowAdapter()
    r = attribute(ad, SENTS[0], ClassTarget(1), n_steps=8)
    np.testing.assert_allclose(r.word_scores, oracle(ad, SENTS[0]), atol=1e-5)
    assert abs(r.delta) < 1e-5


def test_oracle_beats_random_on_comprehensiveness_and_sufficiency():
    ad = BowAdapter()
    rng = np.random.default_rng(0)
    orc = [oracle(ad, s) for s in SENTS]
    rnd = [rng.normal(size=len(s.split())) for s in SENTS]
    fo = faithfulness(ad, SENTS, ClassTarget(1), orc)
    fr = faithfulness(ad, SENTS, ClassTarget(1), rnd)
    assert fo.aopc_comprehensiveness > fr.aopc_comprehensiveness
    assert fo.aopc_sufficiency < fr.aopc_sufficiency
    assert fo.deletion.mean() < fr.deletion.mean() and fo.insertion.mean() > fr.insertion.mean()
    # exact value for a linear model: removing the top-k words removes exactly their contributions
    n = len(orc[0])
    top = np.sort(orc[0])[::-1]
    ks = [max(1, int(np.ceil(p / 100 * n))) for p in (1, 5, 10, 20, 50)]
    np.testing.assert_allclose(fo.comprehensiveness[0], [top[:k].sum() for k in ks], atol=1e-5)
    np.testing.assert_allclose(fo.sufficiency[0], [top[k:].sum() for k in ks], atol=1e-5)


def test_leave_one_out_beats_random_on_tiny_bert():
    from finegrain.testing import tiny_bert

    clf = sharpen(tiny_bert("sequence-classification"))
    loo = attribute(clf, SENTS, ClassTarget(1), method="feature_ablation")
    rng = np.random.default_rng(0)
    rnd = [rng.normal(size=len(s.split())) for s in SENTS]
    assert (faithfulness(clf, SENTS, ClassTarget(1), loo).aopc_comprehensiveness
            > faithfulness(clf, SENTS, ClassTarget(1), rnd).aopc_comprehensiveness)


def test_captum_metrics_and_table():
    ad = BowAdapter()
    inf = infidelity(ad, SENTS[:2], ClassTarget(1), "ig", n_perturb=4, n_steps=8)
    sen = sensitivity(ad, SENTS[:2], ClassTarget(1), "ig", n_perturb=3, n_steps=8)
    assert inf.shape == (2,) and np.isfinite(inf).all() and (inf >= 0).all()
    assert sen.shape == (2,) and np.isfinite(sen).all() and (sen >= 0).all()
    rows = evaluate_methods(ad, SENTS[:2], ClassTarget(1), methods=["ig", "saliency"], n_steps=8)
    assert [r["method"] for r in rows] == ["ig", "saliency"]
    assert rows[0]["comprehensiveness"] >= rows[1]["comprehensiveness"] - 1e-9
    assert "comprehensiveness" in format_table(rows)


def test_wrong_number_of_scores_raises():
    ad = BowAdapter()
    with pytest.raises(ValueError, match="word scores"):
        faithfulness(ad, SENTS[:1], ClassTarget(1), [np.zeros(3)])
