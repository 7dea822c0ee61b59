import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from finegrain.viz import (
    fig_to_data_uri,
    heatmap_html,
    heatmap_multi_html,
    heatmap_svg,
    plot_accuracy_vs_neurons,
    plot_activation_histogram,
    plot_layer_accuracy,
    plot_layer_distribution,
    plot_matrix,
    plot_selectivity,
    png_data_uri,
    save_html,
    value_rgb,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RGB = re.compile(r"background:rgb\((\d+),(\d+),(\d+)\)")


def test_heatmap_escapes_every_word():
    words = [["<script>alert(1)</script>", "a&b", '"quoted"', "plain"], ["x<y"]]
    html = heatmap_html(words, [[1.0, -0.5, 0.0, 0.3], [2.0]], title="<b>t</b>")
    assert "<script>" not in html and "<b>t</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for w in ["a&amp;b", "&quot;quoted&quot;", "plain", "x&lt;y", "&lt;b&gt;t&lt;/b&gt;"]:
        assert w in html
    assert html.count('class="fg-tok"') == 5
    assert 'title="plain: activation = 0.3"' in html  # tooltip with the value


def test_heatmap_colour_monotone_in_value():
    vals = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    html = heatmap_html([f"w{i}" for i in range(6)], vals, vmax=1.0, legend=False)
    rgbs = [tuple(map(int, m)) for m in RGB.findall(html)]
    assert len(rgbs) == 6 and rgbs[0] == (255, 255, 255)
    greens = [g for _, g, _ in rgbs]
    assert all(a > b for a, b in zip(greens, greens[1:]))  # whiter -> redder
    neg = [value_rgb(-v, 1.0) for v in vals]
    reds = [r for r, _, _ in neg]
    assert all(a > b for a, b in zip(reds, reds[1:]))  # whiter -> bluer
    assert all(b > r for r, _, b in neg[1:])  # negatives are blue, positives red
    assert all(r > b for r, _, b in rgbs[1:])
    assert value_rgb(5.0, 1.0) == value_rgb(1.0, 1.0)  # saturates beyond vmax
    assert value_rgb(float("nan"), 1.0) != (255, 255, 255)


def test_heatmap_shared_scale_and_errors():
    html = heatmap_html([["a"], ["b"]], [[1.0], [4.0]], captions=["s1", "s2"], highlight=[0, None])
    a, b = (tuple(map(int, m)) for m in RGB.findall(html)[:2])
    assert a[1] > b[1]  # 1.0 is paler than 4.0 on the shared scale
    assert "outline" in html
    with pytest.raises(ValueError, match="sentence 0: 2 words but 1 values"):
        heatmap_html([["a", "b"]], [[1.0]])
    with pytest.raises(ValueError, match="vmax"):
        heatmap_html(["a"], [1.0], vmax=0)


def test_multi_and_svg_are_well_formed(tmp_path):
    multi = heatmap_multi_html(["the", "<dogs>"], {"layer.1:3": [0.1, 1.0], "layer.2:7": [-1, 0.5]})
    assert multi.count("<tr>") == 3 and "&lt;dogs&gt;" in multi and "layer.2:7" in multi
    svg = heatmap_svg([["the", "<dogs>", "bark"] * 20], [list(np.linspace(-1, 1, 60))], title="n & m", width=300)
    root = ET.fromstring(svg)  # parses: escaping is right
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "<dogs>" in texts and "n & m" in texts
    ys = {float(r.get("y")) for r in root.iter("{http://www.w3.org/2000/svg}rect")}
    assert len(ys) > 1  # wrapped onto several lines
    page = save_html(multi, tmp_path / "h.html")
    assert page.read_text().startswith("<!DOCTYPE html>")


def _png(p):
    assert p.exists() and p.suffix == ".png"
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    return p


def test_plots_write_png(tmp_path):
    layers = [f"layer.{i}" for i in range(5)]
    acc = {la: 0.6 + 0.05 * i for i, la in enumerate(layers)}
    ctl = {la: 0.5 + 0.02 * i for i, la in enumerate(layers)}
    _png(plot_layer_accuracy(acc, tmp_path / "acc.png", control=ctl, majority=0.4))
    _png(plot_layer_accuracy({"pos": acc, "number": ctl}, tmp_path / "acc2", control={"pos": ctl}))
    p = plot_accuracy_vs_neurons(
        {"top": {10: 0.8, 50: 0.9, 100: 0.95}, "random": ([10, 50, 100], [0.5, 0.7, 0.85], [0.05, 0.04, 0.02]),
         "bottom": {"n": [10, 50, 100], "acc": [0.3, 0.5, 0.7]}},
        tmp_path / "curves.png", full=0.96, svg=True,
    )
    _png(p)
    assert p.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    _png(plot_layer_distribution(["layer.1:3", "layer.1:4", "layer.3:0"], tmp_path / "dist.png",
                                 layer_order=layers))
    _png(plot_layer_distribution({"pos": {"layer.1": 3}, "number": ["layer.2:1"]}, tmp_path / "dist2.png",
                                 normalize=True))
    _png(plot_selectivity({"pos": {la: 0.1 for la in layers}, "tense": {la: -0.02 for la in layers}},
                          tmp_path / "sel.png"))
    rng = np.random.default_rng(0)
    _png(plot_activation_histogram(rng.normal(size=500), tmp_path / "hist.png", threshold=2.0))
    _png(plot_activation_histogram({"a": rng.normal(size=100), "b": (np.array([1, 3, 2]), np.arange(4.0))},
                                   tmp_path / "hist2.png", threshold={"a": 1.0}, log_y=True))
    _png(plot_activation_histogram({"hist_counts": [1, 2, 3], "hist_edges": [0, 1, 2, 3]}, tmp_path / "h3.png"))
    _png(plot_matrix(rng.random((4, 4)), tmp_path / "cka.png", row_labels=layers[:4], col_labels=layers[:4],
                     title="CKA"))
    _png(plot_matrix(rng.normal(size=(3, 20)), tmp_path / "med.png", center=0.0, colorbar_label="effect"))
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]  # temp files renamed away
    with pytest.raises(ValueError, match="2-D"):
        plot_matrix(np.zeros(3), tmp_path / "bad.png")


def test_data_uris(tmp_path):
    p = plot_selectivity({"layer.1": 0.1, "layer.2": 0.3}, tmp_path / "layer.3")
    assert p.name == "layer.3.png"
    uri = png_data_uri(p)
    assert uri.startswith("data:image/png;base64,") and len(uri) > 1000
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    assert fig_to_data_uri(fig).startswith("data:image/png;base64,iVBOR")
    assert fig_to_data_uri(fig, "svg").startswith("data:image/svg+xml;base64,")


# -- character heatmaps: sep="" ------------------------------------------------------------------
def test_character_heatmap_html_has_no_separator_and_keeps_spaces():
    chars = list("ab <c")
    vals = [0.1, -0.2, 0.0, 0.5, 1.0]
    out = heatmap_html(chars, vals, sep="", legend=False)
    spans = re.findall(r'<span class="fg-tok"[^>]*>(.*?)</span>', out)
    assert spans == ["a", "b", " ", "&lt;", "c"]
    assert "</span><span" in out and "</span> <span" not in out and "padding:1px 0" in out
    words = heatmap_html(["ab", "c"], [1.0, 2.0], legend=False)  # the default keeps a space between words
    assert "</span> <span" in words and "padding:1px 3px" in words
    with pytest.raises(ValueError, match="sep"):
        heatmap_html(chars, vals, sep=None)


def test_character_svg_is_edge_to_edge_and_wraps_between_words():
    from finegrain.viz.heatmap import token_layout

    text = "alpha beta gamma delta epsilon zeta eta theta"
    chars = list(text)
    svg = heatmap_svg([chars], [list(np.linspace(-1, 1, len(chars)))], sep="", width=120, font_size=10)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    rects = list(root.iter(f"{ns}rect"))
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert len(rects) == len(chars) and "".join(texts) == text
    lines: dict[float, list[int]] = {}
    for i, r in enumerate(rects):
        lines.setdefault(float(r.get("y")), []).append(i)
    assert len(lines) > 2
    for idx in lines.values():
        for a, b in zip(idx, idx[1:]):  # edge to edge within a line
            ra, rb = rects[a], rects[b]
            assert float(ra.get("x")) + float(ra.get("width")) == pytest.approx(float(rb.get("x")), abs=0.11)
        first = idx[0]
        assert first == 0 or chars[first - 1] == " "  # lines start at a word, never inside one
    places, n_lines = token_layout([chars, ["x"]], 12, sep="")
    assert n_lines == max(p[0] for p in places[0]) + 2 and places[1][0][:2] == (n_lines - 1, 0.0)
    assert all(w == 1.0 for _, _, w in places[0])
