"""One-call token heatmaps (issue 15 item 9): a neuron over sentences of a token-level character store,
as HTML (one span per character, spaces kept, escaped, coloured by the model's own activations), SVG,
PNG and from the command line; and on the real textgenrnn (slow)."""

from __future__ import annotations

import argparse
import html as _html
import importlib.util
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from finegrain.data import Corpus
from finegrain.describe import parse_index_ranges, sentence_activations, token_heatmap, token_separator
from finegrain.errors import LayerError, ParameterError
from finegrain.extraction import extract
from finegrain.viz import value_rgb

SENTS = [["a<b", "c&d", "."], ['"x"', "yz"], ["q"]]
TEXTS = ["a<b c&d .", '"x" yz', "q"]
SPAN = re.compile(r'<span class="fg-tok" title="[^"]*" data-value="([^"]*)" style="background:rgb\((\d+),(\d+),(\d+)\);'
                  r'[^"]*">(.*?)</span>')


def char_lstm():
    """A tiny random character LSTM (weights from a local generator)."""
    from finegrain.models.lstm import LSTMAdapter

    g = torch.Generator().manual_seed(0)
    vocab = ["<pad>", "<s>", " "] + sorted(set("".join(TEXTS)))
    emb, lstm, head = (torch.nn.Embedding(len(vocab), 8), torch.nn.LSTM(8, 6, num_layers=1, batch_first=True),
                       torch.nn.Linear(6, len(vocab)))
    with torch.no_grad():
        for m in (emb, lstm, head):
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
    return LSTMAdapter.from_modules(emb, lstm, head, vocab, level="char", bos="<s>")


@pytest.fixture(scope="module")
def char_store(tmp_path_factory):
    m = char_lstm()
    store = extract(m, Corpus.from_words(SENTS), tmp_path_factory.mktemp("hm") / "c.fgstore", aggregation="token",
                    layers=["lstm.1"], progress=False)
    return m, store


def own_activations(model, words, unit):
    """The model's own activations of ``lstm.1:unit`` at every character (the <s> left out)."""
    b = model.encode([words])
    _, cache = model.run_with_cache(b, ["lstm.1"])
    return cache["lstm.1"][0, 1:, unit].numpy()


def sentence_spans(fragment):
    rows = re.findall(r'<div class="fg-sent"[^>]*>(.*?)</div>', fragment)
    return [SPAN.findall(r) for r in rows], rows


def test_character_heatmap_one_span_per_character_spaces_kept_escaped_coloured(char_store):
    model, store = char_store
    assert token_separator(store) == ""  # the store's rows are characters, spaces included
    frag = token_heatmap(store, "lstm.1:2", sentences=range(3))
    spans, rows = sentence_spans(frag)
    assert len(spans) == 3
    vmax = max(abs(float(s[0])) for ss in spans for s in ss)
    for text, words, ss, row in zip(TEXTS, SENTS, spans, rows):
        assert len(ss) == len(text)  # one span per character, spaces included
        assert "".join(_html.unescape(s[4]) for s in ss) == text  # in order, nothing added between them
        assert "</span> <span" not in row[row.index('class="fg-tok"'):]  # sep="": characters edge to edge
        vals = np.array([float(s[0]) for s in ss])
        np.testing.assert_allclose(vals, own_activations(model, words, 2), atol=1e-5)  # the model's values
        for s, v in zip(ss, vals):  # the colour is the value's on the shared scale
            assert tuple(int(c) for c in s[1:4]) == value_rgb(v, vmax)
    texts = [s[4] for ss in spans for s in ss]
    assert {"&lt;", "&amp;", "&quot;"} <= set(texts) and not {"<", "&", '"'} & set(texts)  # escaped
    assert set(re.findall(r"<(\w+)", frag)) <= {"div", "span"}  # no markup from the text
    assert 'title="&#x27; &#x27;: activation' in frag  # a space's tooltip names it (quoted)
    # stronger activations are more saturated: per sign, the colour's distance from white grows with |value|
    for sign in (1, -1):
        flat = sorted((abs(float(s[0])), 765 - sum(int(c) for c in s[1:4])) for ss in spans for s in ss
                      if np.sign(float(s[0])) == sign)
        assert len(flat) > 2 and all(a[1] <= b[1] for a, b in zip(flat, flat[1:]))


def test_files_sentence_selection_and_errors(char_store, tmp_path):
    _, store = char_store
    page = token_heatmap(store, "lstm.1:0", sentences="0-1", path=tmp_path / "h.html")
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count('class="fg-sent"') == 2
    svg = token_heatmap(store.view(), "lstm.1:0", sentences=[1], path=tmp_path / "h.svg")
    root = ET.fromstring(svg.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    assert len(list(root.iter(f"{ns}rect"))) == len(TEXTS[1])
    assert [t.text for t in root.iter(f"{ns}text")][1:] == list(TEXTS[1])
    png = token_heatmap(store, "lstm.1:0", sentences=0, path=tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ids, toks, vals = sentence_activations(store, "lstm.1:0", [2, 0])
    assert ids == [2, 0] and toks == [list(TEXTS[2]), list(TEXTS[0])] and len(vals[1]) == len(TEXTS[0])
    with pytest.raises(ParameterError, match=r"sentences \[7\] have no rows"):
        token_heatmap(store, "lstm.1:0", sentences=[0, 7])
    with pytest.raises(ParameterError, match="by the extension"):
        token_heatmap(store, "lstm.1:0", path=tmp_path / "h.txt")
    with pytest.raises(LayerError):
        token_heatmap(store, "lstm.9:0")
    assert parse_index_ranges("0-2, 5,1") == [0, 1, 2, 5] and parse_index_ranges(range(3)) == [0, 1, 2]
    for bad in ("3-1", "a", "", "-1"):
        with pytest.raises(ParameterError):
            parse_index_ranges(bad)


def test_word_store_keeps_spaces_between_words(tmp_path):
    """A word-level store of the same model is shown word by word, a space between the words."""
    store = extract(char_lstm(), Corpus.from_words(SENTS), tmp_path / "w.fgstore", aggregation="last",
                    layers=["lstm.1"], progress=False)
    assert token_separator(store) == " "
    spans, rows = sentence_spans(token_heatmap(store, "lstm.1:1", sentences=[0]))
    assert [_html.unescape(s[4]) for s in spans[0]] == SENTS[0]
    assert rows[0][rows[0].index('class="fg-tok"'):].count('</span> <span class="fg-tok"') == 2


def test_cli_heatmap(char_store, tmp_path, capsys):
    from finegrain.describe.cli import register

    _, store = char_store
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "h.html"
    args = parser.parse_args(["heatmap", str(store.path), "lstm.1:3", "--sentences", "0-1", "--out", str(out)])
    assert args.func(args) == 0 and f"wrote {out}" in capsys.readouterr().out
    spans, _ = sentence_spans(out.read_text())
    assert [len(s) for s in spans] == [len(TEXTS[0]), len(TEXTS[1])]
    args = parser.parse_args(["heatmap", str(store.path), "lstm.1:3", "--sentences", "2", "--sep", "space"])
    assert args.func(args) == 0
    assert len(sentence_spans(capsys.readouterr().out)[0][0]) == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("textgenrnn") is None, reason="textgenrnn not installed")
def test_textgenrnn_character_heatmap(tmp_path):
    """The embedded character LSTM: a token-level store of three sentences gives one coloured box per
    character, with the model's own activations."""
    from finegrain.models.textgenrnn import load_textgenrnn

    tg = load_textgenrnn(device="cpu")
    sents = [s.split() for s in ("The cat sat on the mat .", "It was not good at all .", "Hello , world !")]
    store = extract(tg, Corpus.from_words(sents), tmp_path / "tg.fgstore", aggregation="token", layers=["lstm.2"],
                    progress=False)
    assert token_separator(store) == ""
    frag = token_heatmap(store, "lstm.2:7", sentences="0-2")
    spans, _ = sentence_spans(frag)
    for words, ss in zip(sents, spans):
        assert "".join(_html.unescape(s[4]) for s in ss) == " ".join(words)
    b = tg.encode([sents[1]])
    _, cache = tg.run_with_cache(b, ["lstm.2"])
    own = cache["lstm.2"][0, :, 7].numpy()
    vals = np.array([float(s[0]) for s in spans[1]])
    np.testing.assert_allclose(vals, own[len(own) - len(vals):], atol=1e-4)  # its own states, <s> left out
