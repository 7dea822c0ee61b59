import itertools

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.attribute import (
    AttributionError,
    ClassTarget,
    arch_detect,
    archipelago,
    archipelago_game,
    attribute,
    attribute_tensor,
    find_relu,
    integrated_hessians,
    integrated_hessians_tensor,
    merge_pairs,
    shapley_taylor,
    shapley_taylor_game,
    softplus_substitution,
    sti_total,
)
from finegrain.testing import sharpen


def game_from(f, n):
    """Set function of f at x = 1 with baseline 0: v(S) = f(1_S)."""
    return lambda keep: f(keep.double())


def prod_plus(x):
    return x[:, 0] * x[:, 1] + x[:, 2]


@pytest.fixture
def clf():
    from finegrain.testing import tiny_bert

    return sharpen(tiny_bert("sequence-classification"))


# -- Integrated Hessians ------------------------------------------------------------------------
def test_ih_of_product_is_quarter_everywhere():
    x = torch.tensor([2.0, 3.0], dtype=torch.float64)
    gamma, rows = integrated_hessians_tensor(lambda p: p[:, 0] * p[:, 1], x, steps=8)
    np.testing.assert_allclose(gamma, np.full((2, 2), 6.0 / 4), atol=1e-9)
    ig = attribute_tensor(lambda p: p[:, 0] * p[:, 1], x.unsqueeze(0), method="ig", n_steps=50).attributions[0]
    np.testing.assert_allclose(gamma.sum(1), ig.numpy(), atol=1e-6)  # rows sum to IG (3, 3)
    assert gamma.sum() == pytest.approx(6.0) and rows == 64


def test_ih_smooth_function_rows_sum_to_ig():
    def f(p):
        return torch.tanh(p[:, 0] * p[:, 1] - 0.5 * p[:, 2]) + torch.sin(p[:, 1] * p[:, 2])

    x = torch.tensor([0.7, -1.2, 0.9], dtype=torch.float64)
    gamma, _ = integrated_hessians_tensor(f, x, steps=48)
    ig = attribute_tensor(f, x.unsqueeze(0), method="ig", n_steps=300).attributions[0].numpy()
    np.testing.assert_allclose(gamma.sum(1), ig, atol=3e-3)
    np.testing.assert_allclose(gamma, gamma.T, atol=1e-6)
    assert gamma.sum() == pytest.approx(float(f(x.unsqueeze(0)) - f(torch.zeros(1, 3, dtype=torch.float64))),
                                        abs=3e-3)


def test_ih_tiny_bert_rows_sum_to_ig_and_total_to_gap(clf):
    text = "big dogs run"
    ih = integrated_hessians(clf, text, ClassTarget(1), steps=24)
    gap = ih.f_x - ih.f_baseline
    assert abs(gap) > 1e-2
    assert ih.delta == pytest.approx(ih.matrix.sum() - gap)
    assert abs(ih.delta) < 0.03 * abs(gap)
    ig = attribute(clf, text, ClassTarget(1), method="ig", n_steps=200)
    np.testing.assert_allclose(ih.matrix.sum(1), ig.word_scores, atol=0.03 * abs(gap))
    np.testing.assert_allclose(ih.matrix, ih.matrix.T, atol=0.02 * abs(gap))
    assert ih.n_evaluations == 24 * 24


def test_relu_models_are_refused_and_softplus_substitution_restores():
    from finegrain.testing import tiny_bert

    relu = sharpen(tiny_bert("sequence-classification", hidden_act="relu"))
    assert find_relu(relu.model)
    with pytest.raises(AttributionError, match="softplus_substitution"):
        integrated_hessians(relu, "big dogs", ClassTarget(1))
    before = [type(m) for m in relu.model.modules()]
    with softplus_substitution(relu.model, beta=20):
        assert not any(isinstance(m, nn.ReLU) for m in relu.model.modules())
        ih = integrated_hessians(relu, "big dogs", ClassTarget(1), steps=12)
        assert np.isfinite(ih.matrix).all()
    assert [type(m) for m in relu.model.modules()] == before


# -- Shapley-Taylor ------------------------------------------------------------------------------
def test_stii_product_plus_single():
    idx, vN, v0, evals = shapley_taylor_game(game_from(prod_plus, 3), 3)
    assert idx[0, 0] == pytest.approx(0) and idx[1, 1] == pytest.approx(0) and idx[2, 2] == pytest.approx(1)
    assert idx[0, 1] == pytest.approx(1) and idx[0, 2] == pytest.approx(0) and idx[1, 2] == pytest.approx(0)
    assert evals == 8 and sti_total(idx) == pytest.approx(vN - v0)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_stii_efficiency_on_random_games(n):
    rng = np.random.default_rng(n)
    table = rng.normal(size=2**n)

    def v(keep):
        code = (keep.long() * (1 << torch.arange(n))).sum(1)
        return torch.as_tensor(table[code.numpy()])

    idx, vN, v0, _ = shapley_taylor_game(v, n)
    assert sti_total(idx) == pytest.approx(table[-1] - table[0], abs=1e-9)
    # sampling converges to the exact pair indices
    approx, *_ = shapley_taylor_game(v, n, max_exact=0, n_samples=3000, seed=1)
    np.testing.assert_allclose(approx, idx, atol=0.15)


def test_stii_planted_pair_bonus():
    singles = np.array([0.5, -1.0, 2.0, 0.3, 0.0])

    def v(keep):
        k = keep.double()
        return k @ torch.as_tensor(singles) + 3.0 * k[:, 1] * k[:, 3]

    idx, *_ = shapley_taylor_game(v, 5)
    expect = np.diag(singles)
    expect[1, 3] = expect[3, 1] = 3.0
    np.testing.assert_allclose(idx, expect, atol=1e-9)


def test_stii_tiny_bert_efficiency(clf):
    r = shapley_taylor(clf, "the cat sat on", ClassTarget(1))
    assert abs(r.delta) < 1e-4 and r.n_evaluations == 2**4
    assert sti_total(r.matrix) == pytest.approx(r.f_x - r.f_baseline, abs=1e-4)


# -- Archipelago ---------------------------------------------------------------------------------
def test_archdetect_flags_only_the_product_pair():
    strength, evals = arch_detect(game_from(prod_plus, 3), 3)
    assert strength[0, 1] == pytest.approx(1.0)
    assert strength[0, 2] == pytest.approx(0) and strength[1, 2] == pytest.approx(0)
    assert evals == 2 * (1 + 3 + 3)


def test_archipelago_recovers_planted_interactions():
    # f = 2 x0 x3 + x1 x4 x5 + 0.5 x2 on 6 players
    def v(keep):
        k = keep.double()
        return 2 * k[:, 0] * k[:, 3] + k[:, 1] * k[:, 4] * k[:, 5] + 0.5 * k[:, 2]

    strength, sets, scores, vN, v0, _ = archipelago_game(v, 6, top_k=4)
    assert sorted(map(tuple, sets)) == [(0, 3), (1, 4, 5), (2,)]
    got = dict(zip(map(tuple, sets), scores))
    assert got[(0, 3)] == pytest.approx(2.0) and got[(1, 4, 5)] == pytest.approx(1.0) and got[(2,)] == 0.5
    assert merge_pairs([(0, 1), (1, 2), (4, 5)], 6) == [[0, 1, 2], [3], [4, 5]]


def test_archipelago_tiny_bert(clf):
    r = archipelago(clf, "the cat sat on", ClassTarget(1), top_k=2)
    n = 4
    assert r.n_evaluations == 2 * (1 + n + n * (n - 1) // 2) + len(r.sets) + 2
    assert sorted(i for s in r.sets for i in s) == list(range(n))
    assert all(set(a) & set(b) == set() for a, b in itertools.combinations(r.sets, 2))
