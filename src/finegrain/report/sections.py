"""Report sections that explain predictions: attributions, interactions, faithfulness, a single-unit
ablation sweep of a trained head, and causal mediation on a language model."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np

EXAMPLES = [
    "The movie was not good at all .",
    "What a wonderful and moving story .",
    "The food was cold and the waiter was rude .",
    "I did not hate this film .",
]


def _e(x) -> str:
    return html.escape(str(x))


def _nlink(n: str):
    from finegrain.report.html import _nlink as link

    return _Raw(link(n))


class _Raw(str):
    pass


def _cell(c) -> str:
    if isinstance(c, float):
        return f'<td class="num">{c:.3f}</td>'
    return f"<td>{c}</td>" if isinstance(c, _Raw) else f"<td>{_e(c)}</td>"


def _table(header, rows) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def attribution_section(model, cfg) -> dict:
    """Train the built-in sentiment head on the (encoder) model, then attribute, interact, ablate."""
    from finegrain.attribute import (
        attribute,
        evaluate_methods,
        html_heatmap,
        save_interaction_png,
        shapley_taylor,
        train_head,
    )
    from finegrain.intervene import single_unit_sweep
    from finegrain.intervene.scoring import Accuracy
    from finegrain.viz import png_data_uri

    if model.kind != "encoder":
        raise ValueError(f"the sentiment-head section needs an encoder model, {model.name} is a {model.kind}")
    head = train_head(model, "builtin:sentiment", seed=cfg.seed, device="cpu")
    info = getattr(head, "head_info", {})
    atts = attribute(head, EXAMPLES, "pred", method="ig", n_steps=32)
    heat = html_heatmap(atts)
    faith = evaluate_methods(head, EXAMPLES, "pred", methods=("ig", "saliency", "input_x_gradient",
                                                                     "feature_ablation"))
    faith_rows = [[r.get("method"), *(float(r[k]) for k in r if k != "method" and isinstance(r[k], int | float))]
                  for r in faith]
    faith_cols = ["method", *[k for k in faith[0] if k != "method" and isinstance(faith[0][k], int | float)]]
    inter = shapley_taylor(head, EXAMPLES[0], "pred")
    with tempfile.TemporaryDirectory() as d:
        png = save_interaction_png(inter, Path(d) / "sti.png")
        inter_img = f'<img class="plot" alt="Shapley-Taylor interactions" src="{png_data_uri(png)}">'
    pairs = inter.pairs(5)

    # causal check: which single units of a middle layer does the head's accuracy depend on?
    from finegrain.attribute.heads import builtin_sentiment

    data = builtin_sentiment(seed=cfg.seed)[:48]
    layer = f"layer.{max(1, getattr(model, 'n_layers', 2) // 2)}"
    objective = Accuracy(head, [t for t, _ in data], [y for _, y in data])
    sweep = single_unit_sweep(head, layer, objective, max_rows=384)
    top_units = sweep.top(8)
    sweep_rows = [[_nlink(str(n)), float(d)] for n, d in top_units]
    acc = info.get("accuracy")
    pair_text = ", ".join(f"{_e(a)} &times; {_e(b)} ({v:+.3f})" for a, b, v in pairs)
    html_out = f"""<section id="attribution"><h2>Why did the model predict that? Attributions and interactions</h2>
<p>A linear sentiment head trained on the frozen encoder's mean-pooled states (built-in task, held-out
accuracy {_e(f'{acc:.3f}' if isinstance(acc, float) else acc)}); gradients flow through the whole encoder.
Word attributions are Integrated Gradients (Sundararajan et al. 2017) at the embedding layer with [PAD]
baselines that keep [CLS]/[SEP]; the convergence delta is the completeness gap.</p>
{heat}
<h3>Faithfulness of attribution methods</h3>
<p>ERASER (DeYoung et al. 2020): comprehensiveness (higher is better) and sufficiency (lower is better)
averaged over top-k% bins, deletion/insertion areas, and the cost in model evaluations per example.</p>
{_table(faith_cols, faith_rows)}
<h3>Interactions</h3>
<p>Shapley-Taylor interaction index of order 2 (Dhamdhere et al. 2020), exact, for
&ldquo;{_e(EXAMPLES[0])}&rdquo;; strongest pairs: {pair_text}.
</p>{inter_img}
<h3>Single-unit ablation of {_e(layer)}</h3>
<p>Each unit of {_e(layer)} is zeroed alone (Lakretz et al. 2019) and the head's accuracy on
{len(data)} sentences re-measured; units whose removal changes it most:</p>
{_table(['unit', 'accuracy drop'], sweep_rows)}
</section>"""
    return {"html": html_out, "head": head, "accuracy": acc, "pairs": [(a, b, float(v)) for a, b, v in pairs],
            "word_scores": [np.asarray(a.word_scores).round(4).tolist() for a in atts]}


def concept_section(head, cfg, layer: str = "layer.3") -> dict:
    """Concept-by-concept explanations of example predictions of the sentiment head (finegrain.explain)."""
    from finegrain.explain import default_concepts, explain, explain_section_html

    concepts = default_concepts(head, layer, seed=cfg.seed)
    exps = explain(head, EXAMPLES[:2], "pred", concepts, layer, n_random=300)
    body = explain_section_html(exps, title=f"Which concepts drove the prediction? ({layer})")
    intro = ("<p>Neuron-level attributions (gradient &times; activation) of the head's prediction, grouped by "
             "concept: supervised concepts are the probe-ranked neurons of each label of the built-in corpus "
             "(e.g. <span class=formula>negation=1</span>), latent concepts are k-means clusters of the layer "
             "(Dalvi et al. 2022). Each contribution is compared with random neuron sets of the same size (z, p), "
             "and confirmed by ablating the concept's neurons.</p>")
    return {"html": f'<section id="explain">{intro}{body}</section>'}


def mediation_section(cfg, lm: str = "textgenrnn", professions=("nurse", "mechanic", "teacher", "secretary"),
                      template: str = "The {} said that") -> dict:
    """Causal mediation (Vig et al. 2020) of gender bias in a language model: the embedded character
    LSTM by default (an encoder like MiniLM has no continuation probabilities)."""
    from finegrain.mediation import Mediation
    from finegrain.models import load_model
    from finegrain.viz import png_data_uri

    model = load_model(lm, device="cpu")
    med = Mediation(model, positions="last").fit([template], list(professions))
    layers = [name for name in model.layers() if name != "embedding"]
    layer_rows, layer_effs = [], []
    for lay in layers:
        e = med.layer_effect(lay)
        layer_effs.append(e)
        layer_rows.append([lay, float(e.nie[0]), float(e.nde[0])])
    neuron_layer = layers[-2] if len(layers) > 1 else layers[-1]
    effects = med.neuron_effects(neuron_layer)
    te = med.total_effect()
    result = med.result([*layer_effs, effects])  # with the plausibility caveats
    with tempfile.TemporaryDirectory() as d:
        png = result.heatmap(Path(d) / "nie.png", kind="neuron", top=40)
        img = f'<img class="plot" alt="natural indirect effects" src="{png_data_uri(png)}">'
    top = [[_nlink(f"{neuron_layer}:{u}"), float(v)] for u, v in effects.top(8)]
    caveats = "".join(f'<p class="caveat"><b>Caveat:</b> {_e(c)}</p>' for c in result.caveats)
    html_out = f"""<section id="mediation"><h2>Causal mediation of gender bias ({_e(model.name)})</h2>{caveats}
<p>Vig et al. (2020): y = p(anti-stereotypical pronoun) / p(stereotypical pronoun) after
&ldquo;{_e(template.format('…'))}&rdquo; for {_e(', '.join(professions))}; which pronoun is stereotypical
is the model's own preference. The set-gender intervention replaces the profession by man/woman. Total effect
TE = {te:+.4f}. NIE sets a mediator to its value under the intervened input; NDE holds it at its original value
while the input is intervened (at the last position).</p>
{_table(['mediator (whole layer)', 'NIE', 'NDE'], layer_rows)}
<h3>Single neurons of {_e(neuron_layer)}</h3>{_table(['neuron', 'NIE'], top)}{img}</section>"""
    return {"html": html_out, "te": te, "layers": layer_rows, "caveats": result.caveats}
