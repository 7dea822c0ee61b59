"""The report's sections about a model's predictions and behaviour: attributions, activation patching,
attention, a single-unit ablation sweep, concept explanations (on a sentiment head trained once per run on
the encoder), and on a language model (the embedded character LSTM by default) the attribution of a
generated continuation, causal mediation and steering. Each returns ``{"id", "html", "summary"}`` (the
fragment with every user string escaped; the summary is JSON for ``results.json``) and saves its results
through the Result protocol in ``OUT/results``; every prediction is named in words."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from finegrain.attribute import (
    ClassTarget,
    attribute,
    attribute_generation,
    builtin_sentiment,
    describe_target,
    evaluate_methods,
    load_head,
    neuron_attribution,
    records_html,
    shapley_taylor,
    train_head,
    visualization_records,
)
from finegrain.errors import FinegrainError, ModelError, ParameterError
from finegrain.explain import default_concepts, explain, explain_section_html
from finegrain.intervene import (
    Objective,
    concept_control,
    concept_sentences,
    concept_words,
    expert_units_from_texts,
    single_unit_sweep,
    sweep_agreement,
)
from finegrain.lens import attention_patterns, logit_lens
from finegrain.mediation import Mediation
from finegrain.models import load_model
from finegrain.patching import activation_patching
from finegrain.report.html import esc, figure, fmt, links, neuron_link, note, section, table
from finegrain.results import HtmlFragment

TITLES = {
    "similarity": "Representation similarity between layers", "concepts": "Latent concepts",
    "attribution": "Why did the model predict that? Attributions and interactions",
    "patching": "Activation patching", "attention": "Attention patterns",
    "sweep": "Single-unit ablation sweep", "explain": "Which concepts drove the prediction?",
    "generation": "Attribution of a generated continuation", "mediation": "Causal mediation of gender bias",
    "steering": "Steering the language model",
}
COMPLETENESS_HEAD = ["sentence", "explains", "steps", "f(x)", "f(x')", "delta", "|delta| / gap", "check"]
#: sentences the head's predictions are explained on, with their true labels
EXAMPLES = [
    ("The movie was not good at all .", "negative"),
    ("What a wonderful and moving story .", "positive"),
    ("The food was cold and the waiter was rude .", "negative"),
    ("I did not hate this film .", "positive"),
]
#: clean / corrupted pairs for patching, the first whose token counts match is used
PATCH_PAIRS = [("The movie was good .", "The movie was bad ."), ("The movie was great .", "The movie was awful ."),
               ("The food was nice .", "The food was poor .")]
FAITHFULNESS_METHODS = ("ig", "saliency", "input_x_gradient", "feature_ablation")
GENERATION_PROMPT = "the cat sat on the"
MEDIATION_TEMPLATE = "The {} said that"
MEDIATION_PROFESSIONS = ("nurse", "mechanic", "teacher")
STEER_CONCEPT = "animal"
STEER_PROMPTS = ("I saw a", "She has a", "There is a")


class Context:
    """What the sections share: the model, the configuration, where results and figures go, and the two
    models made on demand — the sentiment head (trained once, cached in ``OUT/cache``) and the language
    model of the generation / mediation / steering sections."""

    def __init__(self, model, cfg, out: Path):
        self.model, self.cfg, self.out = model, cfg, Path(out)
        self.results = self.out / "results"
        self.figures = self.out / "figures"
        self.cache = self.out / "cache"

    def save(self, name: str, result) -> Path:
        self.results.mkdir(parents=True, exist_ok=True)
        path = self.results / f"{name}.json"
        result.to_json(path)
        return path

    def figure(self, name: str, draw, alt: str) -> str:
        return figure(draw, self.figures / f"{name}.png", alt)

    @cached_property
    def head(self):
        """The built-in sentiment head on the model's frozen encoder, trained once and kept in ``OUT/cache``
        (keyed by the encoder's weights and the seed)."""
        if self.model.kind != "encoder":
            raise ModelError(f"the sentiment-head sections need an encoder model; {self.model.name} is a "
                             f"{self.model.kind}")
        path = self.cache / f"head-sentiment-{self.model.weights_hash()[:12]}-{self.cfg.seed}.pt"
        device = str(self.model.device)
        if path.exists():
            try:
                return load_head(path, self.model, device=device)
            except (OSError, RuntimeError, KeyError, FinegrainError):
                path.unlink(missing_ok=True)  # damaged or from another version: train again
        self.cache.mkdir(parents=True, exist_ok=True)
        return train_head(self.model, "builtin:sentiment", seed=self.cfg.seed, device=device, save=path)

    @property
    def labels(self) -> list[str]:
        return list(self.head.head_info.get("labels") or [])

    @cached_property
    def lm(self):
        lm = self.cfg.lm
        return load_model(lm, device="cpu") if isinstance(lm, str) else lm

    def lm_key(self) -> str:
        lm = self.cfg.lm
        return lm if isinstance(lm, str) else lm.weights_hash()

    def middle_layer(self, prefer: int) -> str:
        n = sum(1 for lay in self.model.layers() if lay.startswith("layer.") and lay.count(".") == 1) - 1
        return f"layer.{max(1, min(prefer, n))}"


def _out(sid: str, body: str, summary: dict, title: str | None = None) -> dict:
    return {"id": sid, "html": section(sid, title or TITLES[sid], body), "summary": summary}


def _records(atts, true_labels) -> str:
    return records_html(visualization_records(atts, true_labels))


def _prediction_text(desc) -> str:
    return desc.text if desc is not None else "n/a"


# -- attribution ------------------------------------------------------------------------------------------
def attribution_section(ctx: Context) -> dict:
    """IG on the sentiment head (steps chosen to reach a 1% completeness gap) as Captum-style records, the
    completeness of each, faithfulness of four methods, and Shapley-Taylor interactions."""
    head = ctx.head
    info = head.head_info
    texts, truth = [t for t, _ in EXAMPLES], [y for _, y in EXAMPLES]
    atts = attribute(head, texts, "pred", method="ig", n_steps="auto", true_labels=truth, progress=False)
    ctx.save("attribution-ig", atts)
    flags = []
    for a in atts:
        rel = abs(a.delta) / abs(a.gap) if a.delta is not None and a.gap else None
        flags.append([" ".join(a.words), _prediction_text(a.description), a.n_steps, a.f_x, a.f_baseline,
                      a.delta, HtmlFragment(f"{fmt(100 * rel, '.2f')}%") if rel is not None else None,
                      HtmlFragment('<span class="ok">complete</span>') if a.complete else
                      HtmlFragment('<span class="bad">INCOMPLETE</span>')])
    incomplete = sum(1 for a in atts if a.complete is False)
    comp = evaluate_methods(head, texts[:2], "pred", methods=FAITHFULNESS_METHODS, progress=False)
    ctx.save("faithfulness", comp)
    cols = list(comp.rows[0]) if comp.rows else []
    faith = table(cols, [[r.get(c) for c in cols] for r in comp.rows])
    inter = shapley_taylor(head, texts[0], "pred")
    ctx.save("interactions", inter)
    img = ctx.figure("interactions", inter.plot, "Shapley-Taylor interactions")
    pairs = inter.pairs(5)
    pair_text = ", ".join(f"{esc(a)} &times; {esc(b)} ({v:+.3f})" for a, b, v in pairs)
    acc = info.get("accuracy")
    body = f"""<p>A linear sentiment head trained on the frozen encoder's mean-pooled states (built-in task,
classes {esc(', '.join(ctx.labels))}, held-out accuracy {fmt(acc)} on {esc(info.get('n_test'))} sentences);
gradients flow through the whole encoder. Word attributions are Integrated Gradients (Sundararajan et al. 2017)
at the embedding layer with [PAD] baselines that keep [CLS]/[SEP], the number of Gauss-Legendre steps doubled
until the completeness gap |delta| is within 1% of f(x) &minus; f(x'). Each row names the prediction it
explains in words (predicted label and probability) beside the true label.</p>
{_records(atts, truth)}
<h3>Completeness</h3>{table(COMPLETENESS_HEAD, flags)}
{note(f'{incomplete} of {len(atts)} attributions are over the 1% completeness criterion: their scores do not '
      'add up to the change they explain.', 'warn') if incomplete else ''}
<h3>Faithfulness of attribution methods</h3>
<p>ERASER (DeYoung et al. 2020) on the first two sentences: comprehensiveness (higher is better) and
sufficiency (lower is better) averaged over top-k% bins, deletion / insertion areas, mean |delta| and the
share of incomplete results (n/a: the method has no completeness property), and model evaluations per
example.</p>{faith}
<h3>Interactions</h3>
<p>Shapley-Taylor interaction index of order 2 (Dhamdhere et al. 2020), exact, for &ldquo;{esc(texts[0])}&rdquo;
({esc(_prediction_text(inter.description))}); strongest pairs: {pair_text}.</p>{img}"""
    summary = {"head_accuracy": acc, "labels": ctx.labels, "incomplete": incomplete,
               "predictions": [_prediction_text(a.description) for a in atts], "n_steps": [a.n_steps for a in atts],
               "pairs": [(a, b, float(v)) for a, b, v in pairs], "faithfulness": comp.rows}
    return _out("attribution", body, summary)


# -- patching and attention -------------------------------------------------------------------------------
def patching_section(ctx: Context) -> dict:
    """Denoising activation patching of the residual stream, layer x position, between a positive and a
    negative sentence of the same token length, with attribution patching and its agreement."""
    head = ctx.head
    labels = ctx.labels or ["class 0", "class 1"]
    named = {"positive", "negative"} <= set(labels)
    pos, neg = (labels.index("positive"), labels.index("negative")) if named else (1, 0)
    last = None
    for clean, corrupt in PATCH_PAIRS:
        try:
            res = activation_patching(head, clean, corrupt, pos, neg, method="both", progress=False)
            break
        except ParameterError as e:  # token lengths differ for this tokenizer: the next pair
            last = e
    else:
        raise ParameterError(f"no clean/corrupted pair of equal token length for {head.name}: {last}")
    ctx.save("patching", res)
    img = ctx.figure("patching", res.plot, "activation patching heatmap")
    agr = res.agreement or {}
    top = [[r, c, v] for r, c, v in res.top(5)]
    metric = f"logit({labels[pos]}) &minus; logit({labels[neg]})"
    body = f"""<p>Activation patching (Meng et al. 2022; Heimersheim &amp; Nanda 2024), denoising: the run on the
corrupted sentence &ldquo;{esc(res.corrupt)}&rdquo; gets one residual-stream state of the clean run on
&ldquo;{esc(res.clean)}&rdquo; (one layer, one position), and the metric {metric} of the sentiment head is
normalised to 0 (corrupted run, {fmt(res.m_corrupt)}) .. 1 (clean run, {fmt(res.m_clean)}). Left: exact
patching ({res.forwards} forward passes); right: attribution patching (Nanda 2023), the first-order estimate
from one forward and one backward.</p>{img}
<p>Attribution patching vs exact over {esc(agr.get('n', 'n/a'))} cells: Pearson {fmt(agr.get('pearson'))},
Spearman {fmt(agr.get('spearman'))}, least-squares slope {fmt(agr.get('slope'))} (1 = right magnitude), largest
|error| {fmt(agr.get('max_abs_error'))} (normalised).</p>
{table(['layer', 'position', 'normalised effect'], top)}"""
    return _out("patching", body, {"clean": res.clean, "corrupt": res.corrupt, "m_clean": res.m_clean,
                                   "m_corrupt": res.m_corrupt, "agreement": agr, "top": top})


def attention_section(ctx: Context) -> dict:
    """Every head's attention on one sentence, summarised per head, and the heads of one layer drawn."""
    text = EXAMPLES[0][0]
    ap = attention_patterns(ctx.model, [text])
    ctx.save("attention", ap)
    s = ap.scores()
    layer = ctx.middle_layer(3)
    li = ap.layers.index(f"{layer}.attn") if f"{layer}.attn" in ap.layers else 0
    img = ctx.figure("attention", lambda p: ap.plot(p, layer=li), f"attention heads of {ap.layers[li]}")
    rows = []
    for key, what in (("previous", "previous token"), ("first", "first token ([CLS])"), ("self", "own token")):
        flat = int(np.nanargmax(s[key]))
        lay, h = divmod(flat, ap.n_heads)
        rows.append([what, f"{ap.layers[lay]} head {h}", float(s[key][lay, h]), float(s["entropy"][lay, h])])
    body = f"""<p>Per-head attention weights on &ldquo;{esc(text)}&rdquo; ({len(ap.layers)} layers &times;
{ap.n_heads} heads, one forward pass). The heads that attend most to the previous token, to the first
token and to the query itself (mean weight over query tokens, with the entropy of their distributions):</p>
{table(['pattern', 'head', 'mean weight', 'entropy (nats)'], rows)}
<p>All heads of {esc(ap.layers[li])}:</p>{img}"""
    return _out("attention", body, {"text": text, "heads": rows})


# -- the single-unit sweep ----------------------------------------------------------------------------------
class TrueClassLogit(Objective):
    """Mean logit of each sentence's true class under a sequence classifier: a smooth objective, so that
    the exact sweep can be compared with its first-order (attribution-patching) estimate."""

    name = "true-class logit"

    def __init__(self, adapter, texts, labels):
        self.batch = adapter.encode([t.split() for t in texts])
        self.labels = torch.tensor([int(y) for y in labels])

    def row_scores(self, adapter, output):
        logits = getattr(output, "logits", output)
        y = self.labels.repeat(logits.shape[0] // len(self.labels)).to(logits.device)
        return logits.float().gather(1, y[:, None])[:, 0]


def sweep_section(ctx: Context, n_sentences: int = 16) -> dict:
    """Zero each unit of a middle layer alone (Lakretz et al. 2019) and measure the head's true-class logit,
    with the layers below shared by all edited copies; against attribution patching's estimate of the same
    effects, -sum_t a_t * dm/da_t (gradient x activation, Nanda 2023)."""
    head = ctx.head
    data = builtin_sentiment(seed=ctx.cfg.seed)[:n_sentences]
    texts, ys = [t for t, _ in data], [y for _, y in data]
    layer = ctx.middle_layer(3)
    sweep = single_unit_sweep(head, layer, TrueClassLogit(head, texts, ys), max_rows=512, progress=False)
    ctx.save("sweep", sweep)
    gxa = neuron_attribution(head, texts, ClassTarget(ys), layer=layer, method="grad_x_act")
    estimate = -np.mean([r.scores.sum(0) for r in gxa], axis=0)[sweep.units]
    agree = sweep_agreement(sweep, estimate, k=10, method="attribution patching (gradient x activation)")
    ctx.save("sweep-agreement", agree)
    img = ctx.figure("sweep", sweep.plot, f"single-unit ablation of {layer}")
    rows = [[neuron_link(str(n)), float(d)] for n, d in sweep.top(8)]
    shared = f", the {sweep.shared_layers} layers below it computed once for all copies" if sweep.shared_layers else ""
    body = f"""<p>Each of the {len(sweep.units)} units of {esc(layer)} is set to zero alone (Lakretz et al. 2019) and
the head's mean logit of the true class on {len(texts)} built-in sentences is measured again
(baseline {fmt(sweep.baseline)}; {sweep.forwards} forward passes{shared}, {fmt(sweep.seconds, '.1f')} s).
Units whose removal lowers it most:</p>{table(['unit', 'drop of the true-class logit'], rows)}{img}
<p>Attribution patching's one-backward estimate of every unit's effect vs the exact sweep: Pearson
{fmt(agree.pearson)}, Spearman {fmt(agree.spearman)}, top-{agree.k} overlap {fmt(agree.top_k_overlap, '.2f')}.</p>"""
    return _out("sweep", body, {"layer": layer, "baseline": sweep.baseline,
                                "top": [(str(n), d) for n, d in sweep.top(8)], "agreement": agree.to_dict(),
                                "seconds": sweep.seconds, "forwards": sweep.forwards})


# -- concept explanations ---------------------------------------------------------------------------------
def concept_section(ctx: Context, n_ablation_random: int = 20) -> dict:
    """Concept-by-concept explanations of two predictions of the head (finegrain.explain), with ablation at
    the concepts' own tokens against random concepts of the same size."""
    head = ctx.head
    layer = ctx.middle_layer(4)
    concepts = default_concepts(head, layer, n_sentences=200, seed=ctx.cfg.seed, cache_dir=ctx.cache / "concepts")
    texts = [t for t, _ in EXAMPLES[:2]]
    exps = explain(head, texts, "pred", concepts, layer, n_random=300, n_ablate=3, ablation_positions="tokens",
                   n_ablation_random=n_ablation_random, seed=ctx.cfg.seed)
    ctx.save("concept-explanations", exps)
    descs = describe_target(head, texts, "pred")
    named = "".join(f"<li>&ldquo;{esc(t)}&rdquo;: {esc(_prediction_text(d))}</li>" for t, d in zip(texts, descs))
    weak = []
    for e in exps:
        for c in e.concepts[:3]:
            if c.ablation_p is not None and c.ablation_p > 0.05:
                weak.append(f"{c.name} on \u201c{e.text}\u201d (ablation p {c.ablation_p:.2f})")
    caveat = ("Ablating a concept at its tokens shows that the head reads those tokens; it shows that the head reads "
              "this concept's units or direction specifically only where random concepts of the same size, moved at "
              "the same tokens, do clearly less (ablation z, p). On MiniLM the negation cue's direction removed at "
              "the cue lowers the logit in 18 of 20 sentences, but a random move of the cue as far does more than "
              "half as much: the head reads the cue token, not this direction specifically.")
    if weak:
        caveat += " Here, top concepts whose ablation is not beyond random concepts: " + "; ".join(weak) + "."
    body = f"""<p>Neuron-level attributions (gradient &times; activation) of the head's prediction at {esc(layer)},
grouped by concept: supervised concepts are the probe-ranked neurons of each label of the built-in corpus
(e.g. <span class=formula>negation=1</span>), latent concepts are k-means clusters of the layer (Dalvi et al. 2022),
and concept directions (CAVs) are tested against random directions with as much activation along them. Each
contribution is compared with random concepts of the same size (z, p); the top concepts are ablated at their own
tokens, {n_ablation_random} random concepts of the same size the same way (ablation z, p).</p>
<ul>{named}</ul>{note(caveat, 'caveat', 'Caveat')}
{explain_section_html(exps, title=f'Concepts behind the predictions ({layer})')}"""
    top = [{"text": e.text, "target": e.target, "top": [c.to_dict() for c in e.concepts[:3]]} for e in exps]
    return _out("explain", body, {"layer": layer, "explanations": top, "weak_ablation": weak})


# -- the language model -----------------------------------------------------------------------------------
def generation_section(ctx: Context, max_new_tokens: int = 6) -> dict:
    """inseq-style attribution of a greedy continuation of the language model (each generated token to the
    prompt and the tokens before it), and where the logit lens applies."""
    lm = ctx.lm
    res = attribute_generation(lm, GENERATION_PROMPT, max_new_tokens=max_new_tokens, method="ig", n_steps="auto",
                               progress=False)
    ctx.save("generation", res)
    img = ctx.figure("generation", res.plot, "generation attribution matrix")
    incomplete = [i for i, c in enumerate(res.complete) if c is False]
    lens = _lens_note(ctx)
    body = f"""<p>{esc(lm.name)} continues &ldquo;{esc(GENERATION_PROMPT)}&rdquo; greedily with
&ldquo;{esc(res.text)}&rdquo; ({res.n_generated} tokens); each generated
token's probability is attributed (Integrated Gradients, steps chosen for a 1% completeness gap) to the prompt
and to the tokens generated before it (inseq-style; rows: generated tokens, columns: what they read).</p>
{img}{note(f'{len(incomplete)} generated token(s) over the 1% completeness criterion.', 'warn') if incomplete else ''}
{lens}"""
    return _out("generation", body, {"prompt": GENERATION_PROMPT, "continuation": res.text,
                                     "incomplete": len(incomplete), "n_steps": list(res.n_steps)})


def _lens_note(ctx: Context) -> str:
    """The logit lens reads a decoder's residual stream through its unembedding: on a decoder it is drawn, on
    anything else the page says why not."""
    if getattr(ctx.model, "kind", None) == "decoder":
        ll = logit_lens(ctx.model, GENERATION_PROMPT)
        ctx.save("logit-lens", ll)
        return f"<h3>Logit lens</h3>{ctx.figure('logit-lens', ll.plot, 'logit lens')}"
    return note(f"The logit lens and direct logit attribution (nostalgebraist 2020; Elhage et al. 2021) read a "
                f"decoder transformer's residual stream through its final norm and unembedding. {ctx.model.name} is "
                f"an {ctx.model.kind} (no next-token unembedding) and {ctx.lm.name} an LSTM: neither has one, so "
                "neither is shown (finegrain lens runs them on decoders).", "muted")


def mediation_section(ctx: Context) -> dict:
    """Causal mediation (Vig et al. 2020) of gender bias in the language model, with the plausibility caveats
    the result carries printed above the numbers."""
    lm = ctx.lm
    med = Mediation(lm, positions="last").fit([MEDIATION_TEMPLATE], list(MEDIATION_PROFESSIONS))
    layers = [name for name in lm.layers() if name != "embedding" and not name.endswith(".cell")]
    layer_effs = [med.layer_effect(lay) for lay in layers]
    neuron_layer = layers[-1]
    effects = med.neuron_effects(neuron_layer)
    result = med.result([*layer_effs, effects])
    ctx.save("mediation", result)
    img = ctx.figure("mediation", lambda p: result.heatmap(p, kind="neuron", top=40), "natural indirect effects")
    caveats = "".join(note(c, "warn", "Caveat") for c in result.caveats)
    if result.caveats:
        caveats = (f"<p><b>{len(result.caveats)} plausibility check(s) failed: these numbers are not a finding "
                   f"about gender bias.</b></p>{caveats}")
    rows = [[e.layer, float(e.nie[0]), float(e.nde[0])] for e in layer_effs]
    ex_rows = [[x["base"], x["stereotypical"], float(x["y_base"]), float(x["y_alt"]), float(x["te"])]
               for x in result.examples]
    top = [[neuron_link(f"{neuron_layer}:{u}"), float(v)] for u, v in effects.top(8)]
    body = f"""{caveats}<p>Vig et al. (2020): y = p(anti-stereotypical pronoun) / p(stereotypical pronoun) after
&ldquo;{esc(MEDIATION_TEMPLATE.format('…'))}&rdquo;; which pronoun is stereotypical is the model's own preference, and
pronouns are scored up to a word boundary. The set-gender intervention replaces the profession by man / woman.
Total effect TE = {fmt(result.te, '+.4f')}. NIE sets a mediator (at the last position) to its value under the
intervened input; NDE holds it at its original value while the input is intervened.</p>
{table(['prompt', 'stereotype', 'y', 'y (set gender)', 'TE'], ex_rows)}
{table(['mediator (whole layer)', 'NIE', 'NDE'], rows)}
<h3>Single neurons of {esc(neuron_layer)}</h3>{table(['neuron', 'NIE'], top)}{img}"""
    return _out("mediation", body, {"te": result.te, "caveats": result.caveats, "layers": rows},
                title=f"{TITLES['mediation']} ({lm.name})")


def steering_section(ctx: Context, n_sentences: int = 120, k: int = 10, n_random: int = 5) -> dict:
    """Suau et al. (2020): the expert units of a concept set to their median response on positive sentences,
    measured by the log-probability of the concept's words after neutral prompts, against random units of the
    same size."""
    lm = ctx.lm
    texts, positive = concept_sentences(STEER_CONCEPT, n_sentences, seed=ctx.cfg.seed)
    layers = [name for name in lm.layers() if name != "embedding" and not name.endswith(".cell")]
    # random stand-ins are drawn from the other units of the experts' layers: leave enough of them
    k = max(1, min(k, min(lm.layers()[lay] for lay in layers) // 3))
    experts = expert_units_from_texts(lm, texts, positive, layers=layers, k=k, concept=STEER_CONCEPT)
    ctx.save("expert-units", experts)
    words = concept_words(STEER_CONCEPT)
    res = concept_control(lm, experts, prompts=list(STEER_PROMPTS), concept_words=words, n_random=n_random,
                          random_state=ctx.cfg.seed)
    ctx.save("steering", res)
    img = ctx.figure("steering", res.plot, "steering vs random units")
    gains = res.random_concept_gains
    body = f"""<p>The {len(experts.neurons)} expert units of &ldquo;{esc(STEER_CONCEPT)}&rdquo; (highest average
precision of their max-pooled response as detectors of {int(np.sum(positive))} of {len(texts)} concept sentences):
{links([str(n) for n in experts.neurons])}. Each is set to its median response on the concept sentences
(Suau et al. 2020) and the log-probability of the concept words ({esc(', '.join(words[:8]))}...) after
{len(STEER_PROMPTS)} neutral prompts is measured, against {n_random} draws of random units of the same size.</p>
{note(res.verdict, 'ok' if res.steered else 'warn', 'Verdict') if res.verdict else ''}
<p>Concept log-probability gain {fmt(res.concept_gain, '+.3f')} nats (random units:
{fmt(np.mean(gains) if gains else None, '+.3f')} &plusmn; {fmt(np.std(gains) if gains else None, '.3f')}).</p>{img}"""
    return _out("steering", body, {"concept": STEER_CONCEPT, "units": [str(n) for n in experts.neurons],
                                   "concept_gain": _finite(res.concept_gain), "random_gains": list(gains),
                                   "steered": res.steered, "verdict": res.verdict})


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None
