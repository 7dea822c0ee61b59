"""Self-contained HTML for the report: inline CSS/JS, images as data URIs, data as embedded JSON.

Every string that comes from the user's data (words, label names, which come from file names, label
values, file, model, layer and head names) is escaped wherever it lands: :func:`html.escape` in text and
attributes, the page's ``esc()`` in HTML the script builds, and ``\\u`` escapes of ``<``, ``>``, ``&``,
U+2028 and U+2029 in JSON inside ``<script>`` (so no ``</script>`` or ``<!--`` in the data can end or
swallow the script). In plots, ``$`` is text, never matplotlib mathtext.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

import matplotlib

from finegrain.viz import heatmap_html, png_data_uri
from finegrain.viz import plots as P

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#e3e6ec;--accent:#2456c9;--bg:#fafbfc}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c7cede}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:8px 28px;z-index:5}
nav a{margin-right:16px;color:var(--accent);text-decoration:none;font-weight:500}
main{max-width:1180px;margin:0 auto;padding:8px 28px 60px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:22px 0}
h2{margin-top:0;font-size:20px}h3{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0}
td,th{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px;background:#fff}
.muted{color:var(--muted)}.formula{font-family:ui-monospace,monospace;background:#f3f5f8;padding:1px 5px;
border-radius:4px}.pill{display:inline-block;background:#eef2fb;color:var(--accent);border-radius:10px;
padding:0 8px;margin:1px;font-size:12.5px;text-decoration:none}
img.plot{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
.err{background:#fff4f2;border-color:#f1c4bb}pre{white-space:pre-wrap;font-size:12px}
#nb-controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:10px}
#nb-controls select,#nb-controls input,#nb-controls button{font:inherit;padding:3px 8px}
#nb-hist rect{fill:#2456c9}.tok{padding:1px 2px;border-radius:3px;margin:0 1px;display:inline-block}
.tok.focus{outline:2px solid #1d2330}
"""

JS = r"""
(function(){
const DATA = JSON.parse(document.getElementById('nb-data').textContent);
const layerSel = document.getElementById('nb-layer'), unitIn = document.getElementById('nb-unit');
const out = document.getElementById('nb-view');
for (const [name, size] of Object.entries(DATA.layers)) {
  const o = document.createElement('option'); o.value = name; o.textContent = name + ' (' + size + ')';
  layerSel.appendChild(o);
}
function color(v, vmax){
  const t = Math.min(1, Math.abs(v) / (vmax || 1));
  const c = v >= 0 ? [214, 39, 40] : [31, 119, 180];
  const m = x => Math.round(255 - t * (255 - x));
  return 'rgb(' + m(c[0]) + ',' + m(c[1]) + ',' + m(c[2]) + ')';
}
// every value from the data goes through esc() before it is part of HTML (text or attribute value)
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
function esc(s){ return String(s).replace(/[&<>"']/g, c => ESC[c]); }
function hist(h, edges){
  const W = 320, Hh = 90, n = h.length, mx = Math.max(1, ...h);
  let s = '<svg id="nb-hist" width="' + W + '" height="' + (Hh + 18) + '" role="img" aria-label="histogram">';
  h.forEach((c, i) => { const bh = Math.round(c / mx * Hh);
    s += '<rect x="' + (i * W / n) + '" y="' + (Hh - bh) + '" width="' + (W / n - 1) + '" height="' + bh + '"></rect>'; });
  s += '<text x="0" y="' + (Hh + 14) + '" font-size="11">' + esc(edges[0]) + '</text>';
  s += '<text x="' + W + '" y="' + (Hh + 14) + '" font-size="11" text-anchor="end">' + esc(edges[1]) + '</text></svg>';
  return s;
}
function show(addr){
  const d = DATA.neurons[addr];
  if (!d) { out.innerHTML = '<p class="muted">No data for ' + esc(addr) + '</p>'; return; }
  const cut = addr.lastIndexOf(':'), layer = addr.slice(0, cut), unit = addr.slice(cut + 1);
  layerSel.value = layer; unitIn.value = unit; unitIn.max = DATA.layers[layer] - 1;
  let vmax = 0; d.top.forEach(t => t.v.forEach(v => vmax = Math.max(vmax, Math.abs(v))));
  let h = '<h3 id="nb-title">Neuron ' + esc(addr) + '</h3>';
  if (d.formula) h += '<p>Compositional explanation: <span class="formula">' + esc(d.formula) +
      '</span> (IoU ' + esc(Number(d.iou).toFixed(3)) + ')</p>';
  if (PROPS[addr]) h += '<p>Top-ranked for: ' + PROPS[addr].map(p => '<a class="pill" href="#prop-' + esc(p) + '">' + esc(p) + '</a>').join(' ') + '</p>';
  h += '<table><tr><th>mean</th><th>std</th><th>min</th><th>max</th></tr><tr><td class="num">' + esc(d.mean) +
       '</td><td class="num">' + esc(d.std) + '</td><td class="num">' + esc(d.min) + '</td><td class="num">' + esc(d.max) + '</td></tr></table>';
  h += hist(d.hist, d.edges);
  h += '<h3>Top-activating words in context</h3><ol id="nb-top">';
  d.top.forEach(t => {
    h += '<li><b>' + esc(t.w) + '</b> <span class="muted">(' + esc(t.a) + ')</span><br>';
    t.s.forEach((w, i) => { const v = Number(t.v[i]) || 0;
      h += '<span class="tok' + (i === t.p ? ' focus' : '') + '" title="' + esc(v) + '" style="background:' + color(v, vmax) + '">' + esc(w) + '</span>'; });
    h += '</li>';
  });
  out.innerHTML = h + '</ol>';
  if (location.hash !== '#n=' + addr) history.replaceState(null, '', '#n=' + addr);
}
function current(){ return layerSel.value + ':' + (parseInt(unitIn.value || '0', 10)); }
layerSel.addEventListener('change', () => show(current()));
unitIn.addEventListener('change', () => show(current()));
document.getElementById('nb-prev').addEventListener('click', () => { unitIn.value = Math.max(0, +unitIn.value - 1); show(current()); });
document.getElementById('nb-next').addEventListener('click', () => { unitIn.value = Math.min(DATA.layers[layerSel.value] - 1, +unitIn.value + 1); show(current()); });
document.querySelectorAll('a[data-neuron]').forEach(a => a.addEventListener('click', e => {
  show(a.dataset.neuron); document.getElementById('browser').scrollIntoView(); e.preventDefault(); }));
const PROPS = JSON.parse(document.getElementById('nb-props').textContent);
const m = location.hash.match(/^#n=(.+)$/);
let first = DATA.start || Object.keys(DATA.neurons)[0];
if (m) { try { first = decodeURIComponent(m[1]); } catch (e) { /* a malformed link: the default neuron */ } }
show(first);
})();
"""


def _e(x) -> str:
    # lone surrogates (possible in Python strings, not in UTF-8) would make the page unwritable
    return html.escape(str(x).encode("utf-8", "replace").decode("utf-8"), quote=True)


def _plot(fn, *args, **kwargs) -> str:
    # user strings (labels, layer names) end up in titles, legends and ticks: "$" is text, not mathtext
    with tempfile.TemporaryDirectory() as d, matplotlib.rc_context({"text.parse_math": False}):
        path = fn(*args, path=Path(d) / "plot.png", **kwargs)
        return f'<img class="plot" alt="{_e(kwargs.get("title", "plot"))}" src="{png_data_uri(path)}">'


def _nlink(n: str) -> str:
    return f'<a class="pill" href="#n={_e(n)}" data-neuron="{_e(n)}">{_e(n)}</a>'


def _table(header: list[str], rows: list[list], num_from: int = 1) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = ""
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            if isinstance(c, float):
                cells.append(f'<td class="num">{c:.3f}</td>')
            elif isinstance(c, _Raw):
                cells.append(f"<td>{c}</td>")
            else:
                cells.append(f'<td{" class=num" if i >= num_from and isinstance(c, int) else ""}>{_e(c)}</td>')
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{h}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _summary(model: dict, corpus: dict) -> str:
    sizes = model["layers"]
    rows = [[name, size] for name, size in sizes.items()]
    labels = "".join(
        f"<h3>{_e(p)}</h3><p>" + " ".join(f'<span class="pill">{_e(k)}: {v}</span>' for k, v in c.items()) + "</p>"
        for p, c in corpus["labels"].items()
    )
    ex = "".join(f"<li>{_e(s)}</li>" for s in corpus["examples"])
    return f"""<section id="summary"><h2>Model and corpus</h2><div class="grid">
<div><p><b>{_e(model['name'])}</b> ({_e(model['kind'])}), {model['parameters']:,} parameters, device
{_e(model['device'])}. Hook points analysed below use the finegrain neuron address
<span class="formula">layer:unit</span>.</p>{_table(['layer', 'units'], rows)}</div>
<div><p>Corpus <b>{_e(corpus['name'])}</b>: {corpus['sentences']:,} sentences, {corpus['words']:,} words.</p>
<ul>{ex}</ul>{labels}</div></div></section>"""


def _probing(probing: dict) -> str:
    if not probing:
        return ""
    acc = {p: r["layer_acc"] for p, r in probing.items()}
    ctrl = {p: r["control_acc"] for p, r in probing.items()}
    sel = {p: r["selectivity"] for p, r in probing.items()}
    parts = [
        '<section id="probing"><h2>Layer-wise probing and selectivity</h2>',
        "<p>An elastic-net linear probe (Dalvi et al. 2019) per layer and property; the control task "
        "(Hewitt &amp; Liang 2019) gives every word type a random label from the same distribution, "
        "and selectivity = accuracy &minus; control accuracy. High accuracy with low selectivity means "
        "the probe memorises word types rather than reading the property.</p>",
        '<div class="grid">',
        _plot(P.plot_layer_accuracy, acc, control=ctrl, title="Probe accuracy (solid) and control (dashed)"),
        _plot(P.plot_selectivity, sel, title="Selectivity per layer"),
        "</div>",
    ]
    for prop, r in probing.items():
        layers = list(r["layer_acc"])
        rows = [[lay, r["layer_acc"][lay], r["control_acc"].get(lay, float("nan")), r["selectivity"].get(lay, float("nan"))]
                for lay in layers]
        if r.get("all_acc") is not None:
            rows.append(["all layers", r["all_acc"], float("nan"), float("nan")])
        abl = r["ablation"]
        curves = {}
        for sel_name in ("top", "random", "bottom"):
            curves[sel_name] = {int(k): float(v) for k, v in zip(abl["ks"], abl["curves"]["retrain"][sel_name])}
        zero = {f"{s} (others at {abl.get('fill', 'mean')})": {int(k): float(v) for k, v in zip(abl["ks"], abl["curves"]["keep"][s])}
                for s in ("top", "random", "bottom")}
        per_class = "".join(
            f"<tr><td>{_e(c)}</td><td>{' '.join(_nlink(n) for n in ns)}</td></tr>" for c, ns in r["per_class_top"].items()
        )
        parts.append(f"""<h3 id="prop-{_e(prop)}">{_e(prop)}</h3>
<p>Best layer <b>{_e(r['best_layer'])}</b>; majority baseline {r['majority']:.3f}; probe on all layers
{r['full_acc']:.3f}. Top neurons (Dalvi et al. ranking over all layers):
{' '.join(_nlink(n) for n in r['ranking'][:10])}. Probeless ranking (Antverg &amp; Belinkov 2022) top:
{' '.join(_nlink(n) for n in r['probeless_top'][:5])}.
<a href="#neurons-{_e(prop)}">Descriptions of the top neurons &darr;</a></p>
<div class="grid"><div>{_table(['layer', 'accuracy', 'control', 'selectivity'], rows)}
<table><tr><th>class</th><th>top neurons</th></tr>{per_class}</table></div>
<div>{_plot(P.plot_accuracy_vs_neurons, {**curves, **zero}, full=r['full_acc'],
             title=f"{prop}: ablation, keeping top/random/bottom neurons")}
{_plot(P.plot_layer_distribution, r['ranking_layers'], layer_order=layers,
       title=f"{prop}: top 5% neurons per layer")}</div></div>""")
    parts.append("</section>")
    return "\n".join(parts)


def _neurons(neurons: dict) -> str:
    if not neurons.get("neurons"):
        return ""
    parts = ['<section id="neurons"><h2>Top neurons per property</h2>',
             "<p>For each property, the highest-ranked neurons with their best compositional explanation "
             "(Mu &amp; Andreas 2020: beam search over AND / OR / AND NOT of word and label concepts, "
             "scored by IoU with the neuron's top-1% activation mask) and their top-activating sentences "
             "(Karpathy et al. 2015 heatmaps: red positive, blue negative).</p>"]
    for prop, ns in neurons["by_property"].items():
        parts.append(f'<h3 id="neurons-{_e(prop)}">{_e(prop)} <a class="pill" href="#prop-{_e(prop)}">probing</a></h3>'
                     '<div class="grid">')
        for n in ns:
            d = neurons["neurons"][n]
            top = d["top"][:5]
            hm = heatmap_html([t["sentence"] for t in top], [t["sentence_activations"] or [0.0] * len(t["sentence"])
                                                            for t in top],
                              highlight=[t["word_pos"] if t["word_pos"] >= 0 else None for t in top], legend=False)
            formula = (f'<span class="formula">{_e(d["formula"])}</span> IoU {d["iou"]:.3f}'
                       if d.get("formula") else '<span class="muted">no formula (too few active words)</span>')
            st = d["stats"]
            parts.append(f"""<div class="card"><b>{_nlink(n)}</b> {formula}<br>
<span class="muted">mean {st['mean']:.3f}, std {st['std']:.3f}, max {st['max']:.3f}</span>{hm}</div>""")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _similarity(sim: dict | None) -> str:
    if not sim:
        return ""
    img = _plot(P.plot_matrix, sim["values"], row_labels=sim["layers"], col_labels=sim["layers"],
                title=f"{sim['method']} between layers", vmin=0, vmax=1)
    return f"""<section id="similarity"><h2>Representation similarity between layers</h2>
<p>Linear CKA (Kornblith et al. 2019, as used by Wu et al. 2020) of every pair of layers, computed in one
streaming pass over the store.</p>{img}</section>"""


def _concepts(con: dict | None) -> str:
    if not con:
        return ""
    rows = []
    for c in con["clusters"]:
        words = ", ".join(w if isinstance(w, str) else w[0] for w in c.get("words", [])[:10])
        al = c.get("alignment", {})
        aligned = "; ".join(f"{k}={v.get('majority')} ({v.get('purity', 0):.2f})" for k, v in al.items()
                            if isinstance(v, dict) and v.get("purity", 0) >= 0.5)
        rows.append([c.get("id"), c.get("size"), words, aligned or "-"])
    return f"""<section id="concepts"><h2>Latent concepts in {_e(con['layer'])}</h2>
<p>k-means clusters of the layer's word representations (Dalvi et al. 2022); each cluster is listed with its
most frequent words and the labels it aligns with (majority label and purity &ge; 0.5).</p>
{_table(['cluster', 'tokens', 'words', 'aligned labels (purity)'], rows)}</section>"""


def _errors(errors: dict) -> str:
    if not errors:
        return ""
    items = "".join(f"<li><b>{_e(k)}</b><pre>{_e(v)}</pre></li>" for k, v in errors.items())
    return f'<section id="notes" class="err"><h2>Sections not produced</h2><ul>{items}</ul></section>'


def render(title, model, corpus, probing, neurons, browser, extras, errors, timings, version, total_s) -> str:
    """The whole page."""
    props_of: dict[str, list[str]] = {}
    for prop, ns in neurons.get("by_property", {}).items():
        for n in ns:
            props_of.setdefault(n, []).append(prop)
    start = next(iter(props_of), None)
    data = dict(browser or {"layers": {}, "neurons": {}})
    data["start"] = start
    extra_html = ""
    nav_extra = ""
    if extras.get("similarity"):
        extra_html += _similarity(extras["similarity"])
        nav_extra += '<a href="#similarity">Similarity</a>'
    if extras.get("concepts"):
        extra_html += _concepts(extras["concepts"])
        nav_extra += '<a href="#concepts">Latent concepts</a>'
    if extras.get("attribution"):
        extra_html += extras["attribution"]["html"]
        nav_extra += '<a href="#attribution">Attribution</a>'
    if extras.get("explain"):
        extra_html += extras["explain"]["html"]
        nav_extra += '<a href="#explain">Concepts</a>'
    if extras.get("mediation"):
        extra_html += extras["mediation"]["html"]
        nav_extra += '<a href="#mediation">Mediation</a>'
    timing_rows = [[k, round(v, 1)] for k, v in timings.items()]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>
<style>{CSS}</style></head><body>
<header><h1>{_e(title)}</h1><p>Fine-grained interpretation: what neurons encode, which cause predictions.
Generated by finegrain {_e(version)} in {total_s:.0f} s.</p></header>
<nav><a href="#summary">Summary</a><a href="#probing">Probing</a><a href="#neurons">Top neurons</a>{nav_extra}
<a href="#browser">Neuron browser</a></nav><main>
{_summary(model, corpus)}
{_probing(probing)}
{_neurons(neurons)}
{extra_html}
<section id="browser"><h2>Neuron browser</h2>
<div id="nb-controls"><label>layer <select id="nb-layer"></select></label>
<label>unit <input id="nb-unit" type="number" min="0" value="0" style="width:90px"></label>
<button id="nb-prev" type="button">&larr; prev</button><button id="nb-next" type="button">next &rarr;</button></div>
<div id="nb-view"></div></section>
{_errors(errors)}
<section id="timings"><h2>Run</h2>{_table(['step', 'seconds'], timing_rows)}</section>
</main>
<script type="application/json" id="nb-data">{_json(data)}</script>
<script type="application/json" id="nb-props">{_json(props_of)}</script>
<script>{JS}</script></body></html>"""


_JSON_IN_SCRIPT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                                 "\u2029": "\\u2029"})


def _json(x) -> str:
    """JSON for a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes (so neither ``</script>``
    nor ``<!--`` from the data can end or swallow the script), and U+2028/9 too (line terminators in
    older JavaScript). The escapes only ever occur inside JSON strings, which JSON.parse restores."""
    text = json.dumps(x, separators=(",", ":"), ensure_ascii=True)
    return text.translate(_JSON_IN_SCRIPT)
