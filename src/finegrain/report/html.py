"""Self-contained HTML for the report: inline CSS/JS, images as data URIs, data as embedded JSON.

Every string that comes from the user's data (words, label names, which come from file names, label
values, file, model, layer and head names) is escaped wherever it lands: :func:`html.escape` in text and
attributes (:func:`esc`; :func:`table` escapes every cell that is not an
:class:`~finegrain.results.HtmlFragment` finegrain built), the page's ``esc()`` in HTML the script
builds, and ``\\u`` escapes of ``<``, ``>``, ``&``, U+2028 and U+2029 in JSON inside ``<script>`` (so no
``</script>`` or ``<!--`` in the data can end or swallow the script). In plots, ``$`` is text, never
matplotlib mathtext (:func:`figure`).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

from finegrain.results import HtmlFragment
from finegrain.viz import heatmap_html, png_data_uri

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
.caveat{background:#fff8e6;border-left:4px solid #e0a400;padding:6px 10px;margin:8px 0}
.warn{background:#fff1ef;border-left:4px solid #c0392b;padding:6px 10px;margin:8px 0}
.ok{color:#1e7d32;font-weight:600}.bad{color:#b2182b;font-weight:600}
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


# -- building blocks (shared by build.py and sections.py) ------------------------------------------
def esc(x) -> str:
    """A user string as HTML text or attribute value (lone surrogates, possible in Python strings but not in
    UTF-8, would make the page unwritable: they become U+FFFD)."""
    return html.escape(str(x).encode("utf-8", "replace").decode("utf-8"), quote=True)


_e = esc  # the name the escaping tests know


def fmt(v, spec: str = ".3f", none: str = "n/a") -> str:
    """A number for a page: ``none`` for missing or non-finite values."""
    if v is None or isinstance(v, bool):
        return none if v is None else str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return esc(v)
    return none if not math.isfinite(x) else format(x, spec)


def interval(d: Mapping | None, spec: str = "+.3f") -> str:
    """``{"diff", "low", "high"}`` (a paired-bootstrap comparison) as ``+0.038 [+0.021, +0.054]``."""
    if not d:
        return "n/a"
    return f"{fmt(d.get('diff'), spec)} [{fmt(d.get('low'), spec)}, {fmt(d.get('high'), spec)}]"


def yes_no(v, yes: str = "yes", no: str = "NO") -> HtmlFragment:
    if v is None:
        return HtmlFragment('<span class="muted">n/a</span>')
    return HtmlFragment(f'<span class="ok">{esc(yes)}</span>' if v else f'<span class="bad">{esc(no)}</span>')


def table(header: Sequence, rows: Sequence[Sequence], num_from: int = 1) -> str:
    """A table: floats right-aligned to 3 decimals, ``None`` as n/a, :class:`HtmlFragment` cells as they are
    (finegrain's own markup), every other cell escaped."""
    h = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            if isinstance(c, HtmlFragment):
                cells.append(f"<td>{c}</td>")
            elif isinstance(c, float):
                cells.append(f'<td class="num">{fmt(c)}</td>')
            elif c is None:
                cells.append('<td class="num muted">n/a</td>')
            else:
                num = i >= num_from and isinstance(c, int) and not isinstance(c, bool)
                cells.append(f'<td{" class=num" if num else ""}>{esc(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


_table = table


def neuron_link(n) -> HtmlFragment:
    """A pill that opens neuron ``n`` in the neuron browser."""
    return HtmlFragment(f'<a class="pill" href="#n={esc(n)}" data-neuron="{esc(n)}">{esc(n)}</a>')


_nlink = neuron_link


def links(ns: Sequence) -> HtmlFragment:
    return HtmlFragment(" ".join(neuron_link(n) for n in ns))


def note(text: str, kind: str = "caveat", title: str | None = None) -> str:
    """A visible box: ``caveat`` (read before the numbers), ``warn`` (a result that does not hold), ``muted``."""
    head = f"<b>{esc(title)}:</b> " if title else ""
    return f'<p class="{esc(kind)}">{head}{esc(text)}</p>'


def figure(draw: Callable[[Path], object], path: str | os.PathLike, alt: str = "plot") -> str:
    """``draw(path)`` (e.g. a result's ``plot``) under a matplotlib context in which ``$`` is text, not
    mathtext (user strings end up in titles, legends and ticks), as an ``<img>`` with the PNG inlined."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"text.parse_math": False}):
        written = draw(path)
    return f'<img class="plot" alt="{esc(alt)}" src="{png_data_uri(written or path)}">'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>'


def stub(sid: str, title: str, reason: str) -> str:
    """The place of a section that could not be produced, with the reason in sight."""
    return section(sid, title, note(reason, "warn", "Not produced"))


# -- the sections drawn from report data -----------------------------------------------------------
def _corpus_block(corpus: Mapping) -> str:
    labels = "".join(
        f"<h3>{esc(p)}</h3><p>" + " ".join(f'<span class="pill">{esc(k)}: {esc(v)}</span>' for k, v in c.items())
        + "</p>" for p, c in corpus.get("labels", {}).items())
    ex = "".join(f"<li>{esc(s)}</li>" for s in corpus.get("examples", []))
    notes = "".join(note(t, "caveat") for t in corpus.get("notes", []))
    kind = f" ({esc(corpus['kind'])} labels)" if corpus.get("kind") else ""
    return (f"<div><p>Corpus <b>{esc(corpus['name'])}</b>{kind}: {int(corpus['sentences']):,} sentences, "
            f"{int(corpus['words']):,} words.</p>{notes}<ul>{ex}</ul>{labels}</div>")


def _outliers(model: Mapping) -> str:
    od = model.get("outliers")
    if od is None:
        return ""
    units = od.get("units", [])
    text = ("<p><b>Outlier (&ldquo;rogue&rdquo;) dimensions</b> (Timkey &amp; van Schijndel 2021): units whose "
            f"std or mean |activation| is over {fmt(od.get('factor'), 'g')}&times; the median of their layer "
            f"({int(od.get('n_rows', 0)):,} rows of {esc(od.get('store', 'the store'))}). ")
    if not units:
        text += "None found.</p>"
    else:
        text += (f"{len(units)} found. Probe-weight and probeless rankings below are computed on "
                 "<b>standardised activations</b> (each unit divided by its training standard deviation), so "
                 "these units gain nothing from their scale.</p>")
    rows = [[neuron_link(u["neuron"]), u["statistic"], float(u["value"]), float(u["median"]),
             HtmlFragment(f"{fmt(u['ratio'], '.1f')}&times;")] for u in units[:12]]
    return text + (table(["neuron", "statistic", "value", "layer median", "ratio"], rows) if rows else "")


def _summary(model: Mapping, corpus) -> str:
    sizes = model["layers"]
    rows = [[name, size] for name, size in sizes.items()]
    corpora = [corpus] if isinstance(corpus, Mapping) else list(corpus)
    notes = "".join(note(t, "caveat") for t in model.get("notes", []))
    return f"""<section id="summary"><h2>Model and corpus</h2><div class="grid">
<div><p><b>{esc(model['name'])}</b> ({esc(model['kind'])}), {int(model['parameters']):,} parameters, device
{esc(model['device'])}. Hook points analysed below use the finegrain neuron address
<span class="formula">layer:unit</span>.</p>{notes}{table(['layer', 'units'], rows)}{_outliers(model)}</div>
{''.join(_corpus_block(c) for c in corpora)}</div></section>"""


def _layer_rows(r: Mapping) -> list[dict]:
    """The per-layer rows of a probing entry (older entries carry only the accuracy dictionaries)."""
    if r.get("rows"):
        return list(r["rows"])
    return [{"layer": lay, "test_acc": acc, "control_acc": r.get("control_acc", {}).get(lay),
             "selectivity": r.get("selectivity", {}).get(lay)} for lay, acc in r.get("layer_acc", {}).items()]


def _above(row: Mapping) -> HtmlFragment:
    above = row.get("above_baseline")
    if above is None:
        return yes_no(None)
    if above:
        return yes_no(True)
    vw, vm = row.get("vs_word_type") or {}, row.get("vs_majority") or {}
    which = "word type" if vw and vw.get("low", 1) <= 0 else "majority" if vm and vm.get("low", 1) <= 0 else "baseline"
    return yes_no(False, no=f"NO (not above {which})")


def _ablation_block(prop: str, abl: Mapping) -> str:
    ks = list(abl.get("ks", []))
    parts = []
    for mode, cur in abl.get("curves", {}).items():
        rows = [[k, *(float(cur[s][i]) for s in ("top", "random", "bottom"))] for i, k in enumerate(ks)]
        expected = "bottom > random > top" if mode == "remove" else "top > random > bottom"
        verdict = ""
        if "ordered" in abl:
            ok = abl["ordered"].get(mode)
            fails = abl.get("order_failures", {}).get(mode, [])
            if ok and not fails:
                verdict = f'<p><span class="ok">{esc(expected)} holds</span> at every k.</p>'
            else:
                where = "; ".join(fails) if fails else "no single k reverses it beyond noise"
                verdict = note(f"{prop}, {mode}: the mean accuracies are {'' if ok else 'not '}{expected}; "
                               f"reversed at {where}", "warn", "Order fails")
        parts.append(f"<h4>{esc(mode)}</h4>{table(['k', 'top', 'random', 'bottom'], rows)}{verdict}")
    return "".join(parts)


def _probing_entry(prop: str, r: Mapping) -> str:
    rows = []
    for row in _layer_rows(r):
        rows.append([row["layer"], row.get("n_neurons"), row.get("test_acc"), row.get("test_macro_f1"),
                     row.get("control_acc"), row.get("selectivity"), interval(row.get("vs_majority")),
                     interval(row.get("vs_word_type")), row.get("n_epochs"), yes_no(row.get("converged")),
                     _above(row)])
    base = r.get("baselines") or {"majority": r.get("majority")}
    base_txt = ", ".join(f"{esc(k.replace('_', ' '))} {fmt(v, '.4f')}" for k, v in base.items())
    src = f" &mdash; {esc(r['corpus'])}, {esc(r['labels'])} labels" if r.get("corpus") else ""
    best = r.get("best_layer")
    reason = r.get("best_layer_reason")
    if best:
        head = f"<p>Best layer <b>{esc(best)}</b>" + (f" ({esc(reason)})" if reason else "") + ".</p>"
    else:
        head = note(reason or "no layer's probe is above its baselines", "warn", "No layer is called best")
    warn = ""
    if r.get("all_above") is False:
        warn = note(r.get("all_reason") or "the all-layers probe does not beat its baselines", "warn",
                    "The ranking, ablation and neuron descriptions of this property rest on a probe that is not "
                    "above its baselines")
    figs = "".join(r.get("figures", {}).values())
    ranking = r.get("ranking", [])
    probeless = r.get("probeless_top", [])
    per_class = "".join(f"<tr><td>{esc(c)}</td><td>{links(ns)}</td></tr>" for c, ns in r.get("per_class_top", {}).items())
    all_acc = r.get("all_acc", r.get("full_acc"))
    conv = "" if not any(row.get("converged") is False for row in _layer_rows(r)) else note(
        "some probes stopped at the maximum number of epochs before their dev loss stopped improving (raise "
        "epochs)", "warn", "Not converged")
    return f"""<h3 id="prop-{esc(prop)}">{esc(prop)}{src}</h3>{head}{warn}{conv}
<p>Baselines (test accuracy): {base_txt}; control task per layer in the table (selectivity = accuracy &minus;
control). &Delta; columns: the probe's accuracy minus the baseline's on the same test words, with a 95%
paired-bootstrap interval over test sentences; <i>above baselines</i> needs both intervals above zero.
Probe on all layers: {fmt(all_acc, '.4f')}.</p>
{table(['layer', 'neurons', 'test acc', 'macro-F1', 'control', 'selectivity', 'Δ majority [95% CI]',
        'Δ word type [95% CI]', 'epochs', 'converged', 'above baselines'], rows)}
<p>Top neurons (Dalvi et al. 2019 ranking of the all-layers probe, standardised weights): {links(ranking[:10])}.
Probeless ranking (Antverg &amp; Belinkov 2022, standardised) top: {links(probeless[:5])}.
<a href="#neurons-{esc(prop)}">Descriptions of the top neurons &darr;</a></p>
<div class="grid"><div><table><tr><th>class</th><th>top neurons</th></tr>{per_class}</table>
<h4>Probe-side ablation (others at their {esc(r.get('ablation', {}).get('fill', 'mean'))})</h4>
{_ablation_block(prop, r.get('ablation', {}))}</div><div>{figs}</div></div>"""


def _probing(probing: Mapping) -> str:
    if not probing:
        return ""
    checks = []
    for prop, r in probing.items():
        abl = r.get("ablation", {})
        if "ordered" not in abl:
            continue
        bad = [m for m in abl["ordered"] if not abl["ordered"][m] or abl.get("order_failures", {}).get(m)]
        checks.append(f"<li>{esc(prop)}: " + (f'<span class="ok">holds</span> ({esc(", ".join(abl["ordered"]))})'
                                              if not bad else f'<span class="bad">FAILS</span> in {esc(", ".join(bad))}')
                      + "</li>")
    check = f"<p>Ablation order check (top &gt; random &gt; bottom):</p><ul>{''.join(checks)}</ul>" if checks else ""
    parts = ['<section id="probing"><h2>Layer-wise probing with baselines</h2>',
             "<p>One linear probe (elastic-net softmax regression, Dalvi et al. 2019; trained until its dev loss "
             "stops improving) per layer and property, beside the majority-class and word-type baselines (each "
             "test word's most frequent training label) and the control task of Hewitt &amp; Liang (2019), "
             "which gives every word type a random label from the same distribution and is probed with the "
             "identical probe. High accuracy with low selectivity means the probe memorises word types rather "
             "than reading the property. A layer is only called best when its probe is above both baselines.</p>",
             check]
    parts += [_probing_entry(p, r) for p, r in probing.items()]
    parts.append("</section>")
    return "\n".join(parts)


def _formula_block(d: Mapping) -> str:
    if not d.get("formula"):
        return '<span class="muted">no formula (too few active words)</span>'
    ex = d.get("explanation") or {}
    head = f'<span class="formula">{esc(d["formula"])}</span> IoU {fmt(d.get("iou"))}'
    if not ex:
        return head
    head += (f" (precision {fmt(ex.get('precision'))}, recall {fmt(ex.get('recall'))}; "
             f"{esc(ex.get('threshold_text', ''))})")
    lists = []
    for key, title in (("matched", "matched (on, formula holds)"), ("missed", "missed (on, formula fails)"),
                       ("false_alarms", "false alarms (formula holds, off)")):
        items = "".join(f"<li>{fmt(e.get('activation'), '+.3f')} {esc(e.get('context', ''))}</li>"
                        for e in ex.get(key, [])[:3])
        if items:
            lists.append(f'<div class="muted" style="font-size:12.5px">{esc(title)}:<ul>{items}</ul></div>')
    return head + "".join(lists)


def _neurons(neurons: Mapping) -> str:
    if not neurons.get("neurons"):
        return ""
    parts = ['<section id="neurons"><h2>Top neurons per property</h2>',
             "<p>For each property, the highest-ranked neurons with their best compositional explanation "
             "(Mu &amp; Andreas 2020: beam search over AND / OR / AND NOT of concepts &mdash; every word above a "
             "minimum count, every label value, lexicon categories, shapes, affixes &mdash; scored by IoU with "
             "the neuron's top activation mask; the threshold is shown beside the IoU), the formula's matched, "
             "missed and false-alarm examples, and the neuron's top-activating sentences (Karpathy et al. 2015 "
             "heatmaps: red positive, blue negative).</p>"]
    keys = neurons.get("keys", {})
    for prop, ns in neurons["by_property"].items():
        parts.append(f'<h3 id="neurons-{esc(prop)}">{esc(prop)} <a class="pill" href="#prop-{esc(prop)}">probing</a>'
                     "</h3>")
        warn = neurons.get("warnings", {}).get(prop)
        if warn:
            parts.append(note(warn, "warn"))
        parts.append('<div class="grid">')
        for n, key in zip(ns, keys.get(prop, ns)):
            d = neurons["neurons"].get(key)
            if d is None:
                continue
            top = d["top"][:5]
            hm = heatmap_html([t["sentence"] for t in top],
                              [t["sentence_activations"] or [0.0] * len(t["sentence"]) for t in top],
                              highlight=[t["word_pos"] if t["word_pos"] >= 0 else None for t in top], legend=False)
            st = d["stats"]
            parts.append(f"""<div class="card"><b>{neuron_link(n)}</b> {_formula_block(d)}<br>
<span class="muted">mean {fmt(st['mean'])}, std {fmt(st['std'])}, max {fmt(st['max'])}</span>{hm}</div>""")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _errors(errors: Mapping) -> str:
    if not errors:
        return ""
    items = "".join(f"<li><b>{esc(k)}</b><pre>{esc(v)}</pre></li>" for k, v in errors.items())
    return f'<section id="notes" class="err"><h2>Sections not produced</h2><ul>{items}</ul></section>'


def _timings(timings: Mapping, peak_rss=None) -> str:
    """The run's steps; ``peak_rss``: MB, or ``{"main": MB, "second": MB}`` for a report run in two processes."""
    two = any(isinstance(v, Mapping) and v.get("process") for v in timings.values())
    rows = []
    for k, v in timings.items():
        where = [("second" if v.get("process") == "second" else "main") if isinstance(v, Mapping) else ""] if two else []
        if isinstance(v, Mapping):
            rows.append([k, *where, fmt(v.get("wall"), ".1f"), fmt(v.get("cpu"), ".1f"), fmt(v.get("rss_mb"), ".0f"),
                         "reused" if v.get("reused") else ""])
        else:
            rows.append([k, *where, fmt(v, ".1f"), "n/a", "n/a", ""])
    if isinstance(peak_rss, Mapping):
        peak = (f"<p>Peak resident memory {fmt(peak_rss.get('main'), '.0f')} MB (main process), "
                f"{fmt(peak_rss.get('second'), '.0f')} MB (second process).</p>")
    else:
        peak = f"<p>Peak resident memory {fmt(peak_rss, '.0f')} MB.</p>" if peak_rss else ""
    lanes = ("<p>Two processes: the main corpus's extraction and probing here, the sections on the sentiment "
             "head and the language model, the gold corpus's probing, similarity and latent concepts in a second "
             "process at the same time, each on one thread while both ran; the steps' wall times overlap, and "
             "the total is the report's wall time.</p>" if two else "")
    head = ["step", *(["process"] if two else []), "wall s", "CPU s", "peak RSS MB", ""]
    return (f'<section id="timings"><h2>Run</h2><p>Per step: wall-clock seconds, CPU seconds of the process that '
            f"ran it (all its threads), and that process's peak resident memory so far.</p>{lanes}{peak}"
            f"{table(head, rows)}</section>")


# -- the page ---------------------------------------------------------------------------------------
NAV = {"similarity": "Similarity", "concepts": "Latent concepts", "attribution": "Attribution",
       "patching": "Patching", "attention": "Attention", "sweep": "Unit sweep", "explain": "Concepts",
       "generation": "Generation", "mediation": "Mediation", "steering": "Steering"}


def render(title, model, corpus, probing, neurons, browser, extras, errors, timings, version, total_s,
           peak_rss: float | None = None) -> str:
    """The whole page. ``corpus``: one corpus summary or a list of them; ``extras``: ``{name: {"html": ...,
    "title": nav label}}`` in page order (fragments finegrain built, their data escaped)."""
    props_of: dict[str, list[str]] = {}
    for prop, ns in neurons.get("by_property", {}).items():
        for n in ns:
            props_of.setdefault(n, []).append(prop)
    start = next(iter(props_of), None)
    data = dict(browser or {"layers": {}, "neurons": {}})
    data["start"] = start
    extra_html, nav_extra = "", ""
    for name, ex in (extras or {}).items():
        if not ex or not ex.get("html"):
            continue
        extra_html += ex["html"]
        sid = ex.get("id", name)
        nav_extra += f'<a href="#{esc(sid)}">{esc(ex.get("title") or NAV.get(name, name))}</a>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)}</title>
<style>{CSS}</style></head><body>
<header><h1>{esc(title)}</h1><p>Fine-grained interpretation: what neurons encode, which cause predictions.
Generated by finegrain {esc(version)} in {fmt(total_s, '.0f')} s.</p></header>
<nav><a href="#summary">Summary</a><a href="#probing">Probing</a><a href="#neurons">Top neurons</a>{nav_extra}
<a href="#browser">Neuron browser</a><a href="#timings">Run</a></nav><main>
{_summary(model, corpus)}
{_probing(probing)}
{_neurons(neurons)}
{extra_html}
<section id="browser"><h2>Neuron browser</h2>{browser_note(browser)}
<div id="nb-controls"><label>layer <select id="nb-layer"></select></label>
<label>unit <input id="nb-unit" type="number" min="0" value="0" style="width:90px"></label>
<button id="nb-prev" type="button">&larr; prev</button><button id="nb-next" type="button">next &rarr;</button></div>
<div id="nb-view"></div></section>
{_errors(errors)}
{_timings(timings, peak_rss)}
</main>
<script type="application/json" id="nb-data">{_json(data)}</script>
<script type="application/json" id="nb-props">{_json(props_of)}</script>
<script>{JS}</script></body></html>"""


def browser_note(browser: Mapping | None) -> str:
    text = (browser or {}).get("note")
    return f'<p class="muted">{esc(text)}</p>' if text else ""


_JSON_IN_SCRIPT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                                 "\u2029": "\\u2029"})


def _json(x) -> str:
    """JSON for a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes (so neither ``</script>``
    nor ``<!--`` from the data can end or swallow the script), and U+2028/9 too (line terminators in
    older JavaScript). The escapes only ever occur inside JSON strings, which JSON.parse restores."""
    text = json.dumps(x, separators=(",", ":"), ensure_ascii=True)
    return text.translate(_JSON_IN_SCRIPT)
