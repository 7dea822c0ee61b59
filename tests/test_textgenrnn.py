"""The pretrained textgenrnn character LSTM (weights of the installed textgenrnn package, ~2 MB)."""

import importlib.util
import random

import h5py
import numpy as np
import pytest
import torch

from finegrain.models.base import ModelError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("textgenrnn") is None, reason="textgenrnn not installed")

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."
COMMON = {"the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "state", "was", "with", "on"}


@pytest.fixture(scope="module")
def tg():
    from finegrain.models.textgenrnn import load_textgenrnn

    return load_textgenrnn(device="cpu")


def mean_nll(adapter, text: str) -> float:
    """Mean NLL per character of ``text`` after ``<s>`` (every character is predicted)."""
    batch = adapter.encode([text.split(" ")])
    ids = batch.inputs["input_ids"]
    with torch.no_grad():
        logits = adapter.forward(batch).logits[0, :-1]
    return -torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).mean().item()


def shuffled(text: str) -> str:
    chars = list(text)
    random.Random(0).shuffle(chars)
    return "".join(chars)


def test_real_english_is_far_more_likely_than_shuffled(tg):
    real, noise = mean_nll(tg, SENTENCE), mean_nll(tg, shuffled(SENTENCE))
    assert real < 2.0, real
    assert noise > 4.0, noise


def test_cudnn_layout_beats_other_layouts(tg):
    """The documented CuDNN conversion is the one that makes a language model; simpler readings of the
    same arrays (no Fortran-order reshape of input blocks, untransposed recurrent blocks, one bias half)
    do not."""
    from finegrain.models.textgenrnn import _load_model, textgenrnn_files

    weights, _ = textgenrnn_files()
    with h5py.File(weights, "r") as f:
        raw = {r: [f[f"{r}/{r}/{n}:0"][()] for n in ("kernel", "recurrent_kernel", "bias")] for r in ("rnn_1", "rnn_2")}

    def convert(kernel, rec, bias, in_fn, rec_fn, both_biases):
        w_ih = np.hstack([in_fn(k) for k in np.hsplit(kernel, 4)]).T
        w_hh = np.hstack([rec_fn(k) for k in np.hsplit(rec, 4)]).T
        b = bias[:512] + (bias[512:] if both_biases else 0)
        return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (w_ih, w_hh, b)]

    fortran = lambda k: k.T.reshape(k.shape, order="F")  # noqa: E731
    variants = {
        "cudnn": (fortran, np.transpose, True),
        "no_fortran": (lambda k: k, np.transpose, True),
        "rec_untransposed": (fortran, lambda k: k, True),
        "input_bias_only": (fortran, np.transpose, False),
    }
    nll = {}
    for name, spec in variants.items():
        model = _load_model(weights)
        with torch.no_grad():
            for cell, r in zip(model.rnn.cells, ("rnn_1", "rnn_2")):
                w_ih, w_hh, b = convert(*raw[r], *spec)
                cell.weight_ih.copy_(w_ih), cell.weight_hh.copy_(w_hh)
                cell.bias_ih.copy_(b), cell.bias_hh.zero_()
        tg_variant = type(tg)(model, tg.stoi, level="char", bos="<s>", unk=0, device="cpu")
        nll[name] = mean_nll(tg_variant, SENTENCE)
    assert abs(nll["cudnn"] - mean_nll(tg, SENTENCE)) < 1e-4  # the loader does exactly this
    assert all(nll[k] > nll["cudnn"] + 0.5 for k in variants if k != "cudnn"), nll


def test_greedy_generation_is_english_like(tg):
    text = tg.generate("The ", 80, temperature=0, seed=0)
    assert text == tg.generate("The ", 80, temperature=0, seed=1)
    assert sum(c.isalpha() or c == " " for c in text) / len(text) > 0.85
    assert len(set(text.lower().split()) & COMMON) >= 2, text
    sampled = tg.generate("The ", 40, temperature=0.3, seed=0)
    assert sampled == tg.generate("The ", 40, temperature=0.3, seed=0)


def test_encode_characters(tg):
    batch = tg.encode([["ab", "cd"], ["x"]])
    assert batch.tokens[0] == ["<s>", "a", "b", " ", "c", "d"]
    assert batch.word_ids == [[None, 0, 0, None, 1, 1], [None, 0, None, None, None, None]]
    ids = batch.inputs["input_ids"]
    assert ids[0, 0] == tg.stoi["<s>"] and ids[1, 2:].eq(0).all()
    assert tg.encode(["a\u2603b"]).inputs["input_ids"][0, 2] == 0  # unknown character -> 0, as textgenrnn
    assert tg.layers() == {"embedding": 100, "lstm.1": 128, "lstm.1.cell": 128, "lstm.2": 128, "lstm.2.cell": 128}


def test_window_logits_do_not_depend_on_the_batch(tg):
    batch = tg.encode(["hello there", SENTENCE])
    with torch.no_grad():
        both = tg.forward(batch).logits
        alone = tg.forward(tg.encode(["hello there"])).logits
    torch.testing.assert_close(both[0, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_hooked_windows_match_and_edits_propagate(tg):
    batch = tg.encode(["the cat sat on the mat"])
    with torch.no_grad():
        plain = tg.forward(batch).logits
        out, cache = tg.run_with_cache(batch, ["embedding", "lstm.2", "lstm.1.cell"])
        torch.testing.assert_close(out.logits, plain, atol=1e-4, rtol=1e-4)
        assert {k: tuple(v.shape) for k, v in cache.items()} == {
            "embedding": (1, 23, 100),
            "lstm.2": (1, 23, 128),
            "lstm.1.cell": (1, 23, 128),
        }
        with tg.hooks({"lstm.1": lambda a, t: a * 0 if t == 5 else None}):
            edited = tg.forward(batch).logits
        with tg.hooks({"lstm.1": lambda a, t: None}):
            same_path = tg.forward(batch).logits
    assert torch.equal(edited[:, :5], same_path[:, :5])
    assert all(not torch.allclose(edited[:, t], same_path[:, t]) for t in range(5, 23))


def test_sequence_logprob_and_hooks(tg):
    good = tg.sequence_logprob("The cat sat on the", " mat")
    bad = tg.sequence_logprob("The cat sat on the", " xqz")
    assert good.ndim == 0 and good > bad
    with tg.hooks({"lstm.2": lambda a, t: a * 0}):
        ablated = tg.sequence_logprob("The cat sat on the", " mat")
    assert not torch.isclose(ablated, good)


def test_stream_context(tg):
    batch = tg.encode([SENTENCE.split()])
    with torch.no_grad():
        window = tg.forward(batch).logits
        tg.model.context = "stream"
        try:
            stream = tg.forward(batch).logits
        finally:
            tg.model.context = "window"
    assert stream.shape == window.shape
    # the first window ("<s>" after 39 padding steps) is the same computation in both modes
    torch.testing.assert_close(stream[:, 0], window[:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="context"):
        tg.model.context = "sliding"


def test_generation_with_the_carried_state_equals_recomputing(tg):
    """Issue 18: stream mode carries the LSTM state from character to character (window mode runs one
    40-character window per character); the tokens and logits are those of recomputing every step."""
    old = tg.model.context
    try:
        for context in ("stream", "window"):
            tg.model.context = context
            _, cached, logits = tg.generate_tokens("The ", 30)
            _, full, ref = tg.generate_tokens("The ", 30, cache=False)
            assert cached == full
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    finally:
        tg.model.context = old
