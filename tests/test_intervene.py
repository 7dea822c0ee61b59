"""Interventions, ablation and control: edits are exact, removed afterwards, and find planted units."""

import numpy as np
import pytest
import torch
from torch import nn

from finegrain.intervene import (
    Accuracy,
    Agreement,
    AgreementPair,
    Head,
    LMLoss,
    Mean,
    Resample,
    Scale,
    Set,
    Steer,
    Zero,
    agreement_accuracy,
    concept_control,
    continuation_logprob,
    continuation_logprobs,
    expert_units,
    generate,
    intervene,
    mean_values,
    model_ablation_curve,
    single_unit_sweep,
    word_positions,
)
from finegrain.models.base import ModelError
from finegrain.models.lstm import LSTMAdapter
from finegrain.neurons import Neuron

TEXTS = ["the cat sat on the mat", "the dogs run in the park"]


def logits(adapter, batch):
    with torch.no_grad():
        return adapter.score_fn(adapter.forward(batch))


def cache(adapter, batch, layer):
    with torch.no_grad():
        return adapter.run_with_cache(batch, [layer])[1][layer]


# ---------------------------------------------------------------------------------------------
def test_bit_identical_after_exit_and_after_error(tiny_gpt2):
    b = tiny_gpt2.encode(TEXTS)
    before = logits(tiny_gpt2, b)
    edits = [Zero("layer.1:3"), Scale(["layer.2.mlp:5", "layer.2.mlp:7"], 3.0), Set("layer.1.attn", 0.5),
             Steer(layer="layer.2", vector=torch.ones(32), alpha=2.0)]
    with intervene(tiny_gpt2, edits):
        inside = logits(tiny_gpt2, b)
    assert not torch.equal(before, inside)
    assert torch.equal(before, logits(tiny_gpt2, b))
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(tiny_gpt2, edits):
            logits(tiny_gpt2, b)
            raise RuntimeError("boom")
    assert torch.equal(before, logits(tiny_gpt2, b))


def test_zero_ablating_nothing_is_exact(tiny_gpt2):
    b = tiny_gpt2.encode(TEXTS)
    before = logits(tiny_gpt2, b)
    with intervene(tiny_gpt2, [Zero([]), Zero("layer.1", positions=[[], []])]):
        assert torch.equal(before, logits(tiny_gpt2, b))


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_bert"])
def test_zero_layer_only_at_chosen_positions(fixture, request):
    adapter = request.getfixturevalue(fixture)
    b = adapter.encode(TEXTS)
    orig = cache(adapter, b, "layer.1")
    with intervene(adapter, Zero("layer.1", positions=[1, 2])):
        edited = cache(adapter, b, "layer.1")
    assert torch.all(edited[:, [1, 2]] == 0)
    keep = [t for t in range(orig.shape[1]) if t not in (1, 2)]
    # the hooked layer's other positions are computed before the edit: untouched
    assert torch.equal(edited[:, keep], orig[:, keep])
    assert not torch.equal(cache(adapter, b, "layer.2"), orig)  # sanity: different layer


def test_unit_edits_values(tiny_gpt2):
    b = tiny_gpt2.encode(TEXTS)
    orig = cache(tiny_gpt2, b, "layer.1")
    v = torch.randn(32)
    with intervene(tiny_gpt2, Steer(layer="layer.1", vector=v, alpha=0.5, positions=[0])):
        st = cache(tiny_gpt2, b, "layer.1")
    torch.testing.assert_close(st[:, 0], orig[:, 0] + 0.5 * v)
    assert torch.equal(st[:, 1:], orig[:, 1:])
    with intervene(tiny_gpt2, [Set(["layer.1:4", "layer.1:9"], torch.tensor([1.5, -2.0])),
                               Scale("layer.1:0", -3.0)]):
        c = cache(tiny_gpt2, b, "layer.1")
    assert torch.all(c[..., 4] == 1.5) and torch.all(c[..., 9] == -2.0)
    torch.testing.assert_close(c[..., 0], -3.0 * orig[..., 0])
    others = [u for u in range(32) if u not in (0, 4, 9)]
    assert torch.equal(c[..., others], orig[..., others])


def test_head_edit_and_word_positions(tiny_bert):
    b = tiny_bert.encode([["ab", "cde", "f"], ["gh", "i"]])
    # charpiece: [CLS] a b c d e f [SEP]; word 1 = tokens 3..5 in row 0, word 1 = token 3 in row 1
    pos = word_positions(b, 1)
    assert pos == [[3, 4, 5], [3]]
    orig = cache(tiny_bert, b, "layer.1.attn")
    with intervene(tiny_bert, Zero(Head("layer.1.attn", 1), positions=pos)):
        c = cache(tiny_bert, b, "layer.1.attn")
    assert torch.all(c[0, 3:6, 8:16] == 0) and torch.all(c[1, 3, 8:16] == 0)
    assert torch.equal(c[0, :3], orig[0, :3]) and torch.equal(c[1, 4:], orig[1, 4:])
    assert torch.equal(c[..., :8], orig[..., :8])
    with pytest.raises(ModelError, match="heads"):
        with intervene(tiny_bert, Zero(Head("layer.1.attn", 9))):
            pass


def test_mean_values_from_texts_and_store(tiny_gpt2, tmp_path):
    ref = tiny_gpt2.encode(TEXTS)
    acts = cache(tiny_gpt2, ref, "layer.1")
    m = ref.attention_mask.bool()
    want = acts[m][:, [2, 7]].mean(0)
    got = mean_values(tiny_gpt2, [Neuron("layer.1", 2), Neuron("layer.1", 7)], TEXTS)
    torch.testing.assert_close(torch.as_tensor(got), want)
    b = tiny_gpt2.encode(["a nurse said that she was tired"])
    with intervene(tiny_gpt2, Mean(["layer.1:2", "layer.1:7"], TEXTS)):
        c = cache(tiny_gpt2, b, "layer.1")
    torch.testing.assert_close(c[0, :, [2, 7]], want.expand(c.shape[1], 2))

    from finegrain.store import StoreWriter

    X = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
    w = StoreWriter(tmp_path / "s.fgstore", {"layer.1": 32}, 6, dtype="float32")
    w.write({"layer.1": X}, np.arange(6), np.zeros(6), ["w"] * 6)
    store = w.commit()
    with intervene(tiny_gpt2, Mean("layer.1:5", store)):
        c = cache(tiny_gpt2, b, "layer.1")
    torch.testing.assert_close(c[0, :, 5], torch.full((c.shape[1],), float(X[:, 5].mean())))


def test_resample_aligned_positions(tiny_gpt2):
    tgt = tiny_gpt2.encode(["the cat sat on the mat today"])
    src = tiny_gpt2.encode(["the dogs run"])
    s = cache(tiny_gpt2, src, "layer.1")
    orig = cache(tiny_gpt2, tgt, "layer.1")
    with intervene(tiny_gpt2, Resample(["layer.1:1", "layer.1:3"], src)):
        c = cache(tiny_gpt2, tgt, "layer.1")
    n = s.shape[1]
    assert n < c.shape[1]
    assert torch.equal(c[0, :n, [1, 3]], s[0, :, [1, 3]])
    assert torch.equal(c[0, n:, [1, 3]], orig[0, n:, [1, 3]])  # no source token there: unchanged
    assert torch.equal(c[..., 0], orig[..., 0])


# ---------------------------------------------------------------------------------------------
# LSTM: a char LM whose hidden unit 0 of lstm.1 latches the subject's number (planted weights)
VOCAB = ["<pad>", "<s>", " ", "a", "b", "c", "d", "x", "y"]
H = 6


def planted_parts(task="lm", seed=0):
    with torch.random.fork_rng():  # seeded initialisation without changing the global RNG
        torch.manual_seed(seed)
        return _planted_parts(task)


def _planted_parts(task):
    emb = nn.Embedding(len(VOCAB), 4, padding_idx=0)
    lstm = nn.LSTM(4, H, 1, batch_first=True)
    with torch.no_grad():
        emb.weight[:, 0] = 0.0
        emb.weight[VOCAB.index("a"), 0] = 1.0  # singular subject
        emb.weight[VOCAB.index("b"), 0] = -1.0  # plural subject
        emb.weight[VOCAB.index("b"), 1:] = emb.weight[VOCAB.index("a"), 1:]  # otherwise identical
        lstm.weight_ih_l0[:, 0] = 0.0  # only unit 0 sees the number feature
        for gate in range(4):
            lstm.weight_ih_l0[gate * H] = 0.0
            lstm.weight_hh_l0[gate * H] = 0.0
        lstm.bias_ih_l0[[0, H, 3 * H]] = 10.0  # input, forget, output gates of unit 0 open
        lstm.bias_hh_l0[[0, H, 3 * H, 2 * H]] = 0.0
        lstm.bias_ih_l0[2 * H] = 0.0
        lstm.weight_ih_l0[2 * H, 0] = 3.0  # candidate = tanh(3 * number)
    out = len(VOCAB) if task == "lm" else 2
    head = nn.Linear(H, out)
    with torch.no_grad():
        head.weight.normal_(0, 0.5)
        head.bias.zero_()
        if task == "lm":
            head.weight[VOCAB.index("x"), 0] = 5.0
            head.weight[VOCAB.index("y"), 0] = -5.0
        else:
            head.weight[:, 0] = torch.tensor([5.0, -5.0])
    return emb, lstm, head


def lstm_adapter(task="lm"):
    return LSTMAdapter.from_modules(*planted_parts(task), VOCAB, task="lm" if task == "lm" else "classification",
                                    level="char", device="cpu")


def noise(rng, n=3):
    return "".join(rng.choice(list("cd"), size=n))


def lstm_pairs(n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = noise(rng)
        out.append(AgreementPair("a " + s, "x", "y"))
        out.append(AgreementPair("b " + s, "y", "x"))
    return out


def test_lstm_edit_propagates_through_time():
    ad = lstm_adapter()
    b = ad.encode(["a cd", "b dc"])
    with torch.no_grad():
        _, orig = ad.run_with_cache(b, ["lstm.1", "lstm.1.cell"])
        before = ad.forward(b).logits
        with intervene(ad, Set("lstm.1:2", 0.9, positions=[2])):
            _, c = ad.run_with_cache(b, ["lstm.1", "lstm.1.cell"])
            after = ad.forward(b).logits
    h, h0 = c["lstm.1"], orig["lstm.1"]
    assert torch.all(h[:, 2, 2] == 0.9)
    assert torch.equal(h[:, :2], h0[:, :2])  # earlier steps untouched
    assert torch.equal(h[:, 2, [0, 1, 3, 4, 5]], h0[:, 2, [0, 1, 3, 4, 5]])
    assert not torch.allclose(h[:, 3], h0[:, 3])  # the edit reached step 3 through the recurrence
    assert torch.equal(c["lstm.1.cell"][:, :3], orig["lstm.1.cell"][:, :3])
    with torch.no_grad():
        assert torch.equal(before, ad.forward(b).logits)
    assert not torch.equal(before, after)


def test_continuation_logprob_gpt2_by_hand(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    prefix, cont = "the cat sat on the", " mat"
    ids = tok(prefix + cont)["input_ids"]
    n_pre = len(tok(prefix)["input_ids"])
    assert ids[:n_pre] == tok(prefix)["input_ids"]  # boundary falls on a token boundary here
    with torch.no_grad():
        lp = torch.log_softmax(tiny_gpt2.model(input_ids=torch.tensor([ids])).logits[0], -1)
    want = sum(float(lp[t - 1, ids[t]]) for t in range(n_pre, len(ids)))
    assert continuation_logprob(tiny_gpt2, prefix, cont) == pytest.approx(want, abs=1e-5)
    # batched with padding gives the same numbers
    got = continuation_logprobs(tiny_gpt2, [prefix, "the dogs"], [cont, " run in the park"])
    assert got[0] == pytest.approx(want, abs=1e-5)


def test_agreement_accuracy_planted_lstm_and_gpt2(tiny_gpt2):
    ad = lstm_adapter()
    pairs = lstm_pairs()
    assert agreement_accuracy(ad, pairs) == 1.0
    with intervene(ad, Zero("lstm.1:0")):
        assert agreement_accuracy(ad, pairs) == pytest.approx(0.5)  # number is gone: chance
    with intervene(ad, Zero("lstm.1:3")):
        assert agreement_accuracy(ad, pairs) == 1.0
    gp = [AgreementPair("the cat", " sat", " run"), AgreementPair("the dogs", " run", " sat")]
    m = continuation_logprobs(tiny_gpt2, ["the cat", "the dogs"], [" sat", " run"]) - continuation_logprobs(
        tiny_gpt2, ["the cat", "the dogs"], [" run", " sat"])
    assert agreement_accuracy(tiny_gpt2, gp) == pytest.approx(float((m > 0).mean()))


def test_sweep_finds_planted_number_unit_lstm():
    ad = lstm_adapter()
    obj = Agreement(ad, lstm_pairs(), measure="margin")
    res = single_unit_sweep(ad, "lstm.1", obj)
    assert res.top(1)[0][0] == Neuron("lstm.1", 0)
    acc = Agreement(ad, lstm_pairs())
    res2 = single_unit_sweep(ad, "lstm.1", acc, units=[0, 4])
    assert res2.baseline == 1.0 and res2.scores[0] == pytest.approx(0.5) and res2.scores[1] >= 0.9


def test_batched_sweep_matches_loop_and_finds_classifier_unit(tiny_gpt2, tmp_path):
    obj = LMLoss(tiny_gpt2, TEXTS)
    fast = single_unit_sweep(tiny_gpt2, "layer.1.mlp", obj, units=range(12), max_rows=8)
    slow = single_unit_sweep(tiny_gpt2, "layer.1.mlp", obj, units=range(12), batched=False)
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-5)
    assert fast.forwards < slow.forwards
    ad = lstm_adapter("cls")
    rng = np.random.default_rng(1)
    texts = [s + " " + noise(rng) for s in "ab" * 8]
    labels = [0 if t[0] == "a" else 1 for t in texts]
    acc = Accuracy(ad, texts, labels)
    assert acc(ad) == 1.0
    res = single_unit_sweep(ad, "lstm.1", acc)
    assert res.top(1)[0][0] == Neuron("lstm.1", 0) and res.scores[0] <= 0.75
    res.plot(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    # top of a ranking hurts more than its bottom (Dalvi et al. 2019)
    ranking = [Neuron("lstm.1", u) for u in range(H)]
    curve = model_ablation_curve(ad, ranking, acc, ks=[1, 2], random_repeats=2)
    assert curve.scores["top"][0] < curve.scores["bottom"][0]
    curve.plot(tmp_path / "curve.png")
    assert "top" in curve.to_csv() and (tmp_path / "curve.png").exists()


def test_setting_concept_unit_flips_classifier():
    ad = lstm_adapter("cls")
    texts = ["a cd", "a dd", "a c", "b cd"]
    res = concept_control(ad, Set("lstm.1:0", -1.0), texts=texts)
    assert res.predictions_before == [0, 0, 0, 1]
    assert res.predictions_after == [1, 1, 1, 1]
    assert res.flip_rate == 0.75


def test_expert_units_planted():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    X = rng.normal(size=(200, 10)).astype(np.float32)
    X[:, 6] += 4.0 * y
    ex = expert_units(X, y, [f"layer.1:{i}" for i in range(10)], k=2)
    assert ex.neurons[0] == Neuron("layer.1", 6) and ex.ap[0] > 0.95
    assert ex.values[0] == pytest.approx(float(np.median(X[y, 6])))


def test_generate_matches_hf_greedy_and_edits_change_it(tiny_gpt2):
    ids = tiny_gpt2.tokenizer("the cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = tiny_gpt2.model.generate(ids, max_new_tokens=6, do_sample=False,
                                       pad_token_id=tiny_gpt2.tokenizer.eos_token_id)
    assert generate(tiny_gpt2, "the cat", 6) == tiny_gpt2.tokenizer.decode(ref[0, ids.shape[1]:])
    v = torch.zeros(32)
    v[0] = 50.0
    steered = generate(tiny_gpt2, "the cat", 6, edits=Steer(layer="layer.2", vector=v))
    assert steered != generate(tiny_gpt2, "the cat", 6)
    ad = lstm_adapter()
    assert generate(ad, "a c", 1) == "x"
    assert generate(ad, "a c", 1, edits=Set("lstm.1:0", -1.0)) == "y"
