"""Explain a prediction by the concepts that carried it, and confirm causally.

For each input, the target's neuron attributions at one layer (gradient x activation or layer
conductance, per token; :func:`finegrain.attribute.neuron_attribution`) are summed over each
concept (its neurons, its latent cluster's words or its CAV direction). Each concept's mass is
compared with the masses of random concepts of the same size (z-score and two-sided empirical
p-value), the top concepts are ablated through :mod:`finegrain.intervene` (zero or mean) and the
change of the target is recorded, and the agreement between attributed contributions and ablation
effects is measured by Spearman's rank correlation over a batch.

Decomposition: with neuron concepts made disjoint (``partition=True``), the contributions of the
neuron concepts plus the ``unassigned`` neurons' contribution equal the layer's total attribution
(for conductance, the total is ``f(x) - f(baseline)`` up to Captum's convergence delta).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from finegrain.attribute import ClassTarget, as_word_lists, neuron_attribution, parse_target, prepare
from finegrain.errors import ConceptError, ParameterError
from finegrain.explain.concepts import Concept, ConceptSet, LatentConcept, LayerContext, layer_view
from finegrain.intervene import intervene, mean_values
from finegrain.models.base import eval_mode
from finegrain.neurons import Neuron
from finegrain.results import Result, ResultList
from finegrain.store import ActivationStore
from finegrain.store.view import View
from finegrain.viz.heatmap import heatmap_html
from finegrain.viz.html import escape, table


# ---------------------------------------------------------------------------------------------
def layer_context(adapter, texts, target, layer: str, method: str | None = "grad_x_act", batch_size: int = 16,
                  n_steps: int = 20, baseline: str | int = "pad") -> LayerContext:
    """Activations, gradients of ``target`` and neuron attributions (``method``; ``None``: only
    activations and gradients) at ``layer`` for ``texts``, aligned per token. The model is run in eval
    mode and handed back in the mode it had."""
    words, _ = as_word_lists(texts)
    target = parse_target(target, adapter)
    adapter.check_layer(layer)
    acts, grads, wids, toks, wl, fx = [], [], [], [], [], []
    with eval_mode(adapter.model, freeze=True):
        for s in range(0, len(words), batch_size):
            prep = prepare(adapter, words, target, baseline, rows=range(s, min(s + batch_size, len(words))))
            seen: list[torch.Tensor] = []

            def keep(act, step, seen=seen):
                seen.append(act)

            emb = prep.embeds.clone().requires_grad_(True)
            with adapter.hooks({layer: keep}):
                out = prep.forward(emb, *prep.args())
            if not seen:
                raise ConceptError(f"hook point {layer} was not reached")
            g = torch.autograd.grad(out.sum(), seen)
            a = torch.stack(seen, 1) if seen[0].dim() == 2 else seen[-1]
            g = torch.stack(g, 1) if seen[0].dim() == 2 else g[-1]
            a, g = a.detach().float().cpu().numpy(), g.detach().float().cpu().numpy()
            for b in range(prep.n):
                T = int(prep.batch.attention_mask[b].sum())
                acts.append(a[b, :T])
                grads.append(g[b, :T])
                wids.append([w if prep.attributable[b, t] else None for t, w in enumerate(prep.batch.word_ids[b][:T])])
                toks.append(prep.tokens(b))
                wl.append(prep.words[b])
                fx.append(float(out[b].detach()))
    T = max(x.shape[0] for x in acts)
    D = acts[0].shape[1]
    A = np.zeros((len(acts), T, D))
    G = np.zeros_like(A)
    M = np.zeros((len(acts), T), dtype=bool)
    for i, (a, g) in enumerate(zip(acts, grads)):
        A[i, : len(a)], G[i, : len(g)], M[i, : len(a)] = a, g, True
    if method is None or method in ("grad_x_act", "gradient_x_activation"):
        attr = A * G
    else:
        la = neuron_attribution(adapter, words, target, layer=layer, method=method, baseline=baseline,
                                n_steps=n_steps, batch_size=batch_size)
        attr = np.zeros_like(A)
        attr[:, : la.scores.shape[1]] = la.scores[:, :T]
    return LayerContext(layer, attr, A, G, M, wids, wl, toks, f_x=np.asarray(fx), target=target)


# ---------------------------------------------------------------------------------------------
def _nan(v) -> float:
    return float("nan") if v is None else float(v)


@dataclass
class ConceptScore(Result):
    """One concept in one prediction's explanation: its attribution ``contribution``, the ``z`` and
    one-sided ``p`` of its mass against random concepts of the same size (``null_mean`` / ``null_std``:
    of their masses), the change of the target when it is ablated, the tokens it sits on and its
    per-word contributions."""

    name: str
    kind: str = field()  # a field, not Result.kind (the class's label) inherited as its default
    contribution: float = field()
    z: float
    p: float
    null_mean: float
    null_std: float
    ablation_effect: float | None
    tokens: list[str]
    word_scores: list[float]
    neurons: list[str] | None
    words: list[str]
    description: str
    ablation_z: float | None = None
    ablation_p: float | None = None
    ablation_null: int = 0

    @classmethod
    def _decode(cls, d: dict) -> dict:
        for k in ("contribution", "z", "p", "null_mean", "null_std"):
            d[k] = _nan(d.get(k))
        for k in ("ablation_z", "ablation_p"):
            d[k] = None if d.get(k) is None else _nan(d[k])
        return d

    @property
    def significant(self) -> bool:
        return self.p < 0.05

    def ablation_text(self) -> str:
        """The ablation effect with, when measured, its z and p against random concepts of the same size."""
        if self.ablation_effect is None:
            return ""
        if self.ablation_p is None:
            return f"{self.ablation_effect:.4g}"
        z = "nan" if self.ablation_z is None or not np.isfinite(self.ablation_z) else f"{self.ablation_z:.2f}"
        return f"{self.ablation_effect:.4g} (z {z}, p {self.ablation_p:.3g})"

    def table(self) -> str:
        z = "nan" if not np.isfinite(self.z) else f"{self.z:.2f}"
        ab = "" if self.ablation_effect is None else f", ablation effect {self.ablation_text()}"
        return (f"{self.name} ({self.kind}): contribution {self.contribution:.4g}, z {z}, p {self.p:.3g}{ab}; "
                f"tokens {' '.join(self.tokens) or '-'}; {self.description}")


@dataclass
class PredictionExplanation(Result):
    """The concepts that carried one prediction at one layer (best first): :func:`explain`'s result.

    ``target`` = ``f_x`` on this input; ``total`` is the layer's attribution, of which the neuron concepts
    and ``unassigned`` make up all when the concepts are disjoint."""

    text: str
    words: list[str]
    target: str
    f_x: float
    layer: str
    method: str
    total: float
    concepts: list[ConceptScore]
    unassigned: float | None
    n_random: int
    ablation: str | None
    meta: dict = field(default_factory=dict)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["concepts"] = [ConceptScore.from_dict(c) for c in d.get("concepts", [])]
        d["f_x"], d["total"] = _nan(d.get("f_x")), _nan(d.get("total"))
        return d

    def top(self, k: int = 5) -> list[ConceptScore]:
        return self.concepts[:k]

    def names(self, k: int | None = None) -> list[str]:
        return [c.name for c in self.concepts[:k]]

    def rank_of(self, name: str) -> int | None:
        """1-based rank of a concept, ``None`` when absent."""
        for i, c in enumerate(self.concepts):
            if c.name == name:
                return i + 1
        return None

    def decomposition(self) -> dict[str, float]:
        """Neuron concepts' contributions + ``unassigned`` (= ``total``; needs disjoint concepts)."""
        if self.unassigned is None:
            raise ConceptError("the neuron concepts overlap; explain with partition=True for a decomposition")
        d = {c.name: c.contribution for c in self.concepts if c.neurons is not None}
        d["unassigned"] = self.unassigned
        return d

    @property
    def spearman(self) -> float | None:
        """Rank correlation of contributions and ablation effects over the ablated concepts."""
        pairs = [(c.contribution, c.ablation_effect) for c in self.concepts if c.ablation_effect is not None]
        return _spearman(pairs)[0] if len(pairs) >= 3 else None

    def table(self, k: int = 10) -> str:
        un = f", unassigned neurons {self.unassigned:.4g}" if self.unassigned is not None else ""
        lines = [f"{self.text}",
                 f"target {self.target} = {self.f_x:.4g}; {self.method} attribution at {self.layer}, "
                 f"total {self.total:.4g}{un}; null: {self.n_random} random concepts of equal size"]
        if self.ablation is not None:
            where = self.meta.get("ablation_positions", "all")
            nulls = self.meta.get("n_ablation_random", 0)
            lines.append(f"ablation: {self.ablation} fill at {'every token' if where == 'all' else 'the tokens shown'}"
                         + (f", against {nulls} random concepts of equal size ablated the same way" if nulls else ""))
        hdr = f"{'#':>2} {'concept':<28} {'kind':<10} {'contrib':>9} {'z':>7} {'p':>7} {'ablation':>9}  tokens | units"
        lines += [hdr, "-" * len(hdr)]
        for i, c in enumerate(self.concepts[:k]):
            z = "nan" if not np.isfinite(c.z) else f"{c.z:.2f}"
            lines.append(f"{i + 1:>2} {c.name[:28]:<28} {c.kind:<10} {c.contribution:>9.4g} {z:>7} {c.p:>7.3g} "
                         f"{c.ablation_text():>9}  {' '.join(c.tokens) or '-'} | {c.description}")
        sp = self.spearman
        if sp is not None:
            n = sum(c.ablation_effect is not None for c in self.concepts)
            lines.append(f"Spearman(contribution, ablation effect) over {n} ablated concepts: {sp:.3f}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_prediction_explanation  # heavy (matplotlib): only to draw

        return plot_prediction_explanation(self, path)

    def html(self, k: int = 5) -> str:
        return explain_section_html([self], k=k)


def _spearman(pairs) -> tuple[float, float]:
    x, y = np.asarray(pairs, dtype=float).T
    if np.allclose(x, x[0]) or np.allclose(y, y[0]):
        return float("nan"), float("nan")
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


# ---------------------------------------------------------------------------------------------
def _layer_mean_of_view(view: View) -> np.ndarray:
    """Mean activation of every unit of the view's one layer, streamed block by block."""
    layer = view.index.layers[0]
    if view.index.layer_units(layer) != list(range(view.n_features)):
        raise ConceptError(f"mean ablation needs every unit of {layer} in the reference view, in order")
    total, n = np.zeros(view.n_features), 0
    for block in view.blocks():
        total += block.X.sum(0, dtype=np.float64)
        n += len(block.X)
    if n == 0:
        raise ConceptError("the reference view has no rows")
    return total / n


def _layer_mean(adapter, layer, reference, ctx: LayerContext) -> np.ndarray:
    if reference is None:
        return ctx.acts[ctx.mask].mean(0)
    if isinstance(reference, ActivationStore | View):
        return _layer_mean_of_view(layer_view(reference, layer))
    return mean_values(adapter, [Neuron(layer, u) for u in range(adapter.check_layer(layer))], list(reference))


def _token_mask(ctx: LayerContext, rows: Sequence[int], word_sets: Sequence[set[int]], T: int) -> torch.Tensor:
    """``[len(rows), T]`` bool: the tokens of the given words of each row."""
    m = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (b, ws) in enumerate(zip(rows, word_sets)):
        for t, w in enumerate(ctx.token_word_ids[b][:T]):
            if w is not None and w in ws:
                m[i, t] = True
    return m


def _ablation_effects(adapter, words, target, jobs: dict[str, list[int]], by_name: dict[str, Concept], ctx,
                      layer_mean, batch_size, baseline, at_words: dict[str, list[set[int]]] | None = None,
                      n_null: int = 0, rng: np.random.Generator | None = None
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``f(x) - f(x with the concept ablated)`` for each concept on the rows ``jobs[name]`` (NaN
    elsewhere), and ``[B, n_null]`` the same for ``n_null`` random concepts of its size ablated the
    same way. ``at_words[name][b]``: restrict the ablation to those words' tokens of row ``b``."""
    B = len(words)
    out = {name: np.full(B, np.nan) for name in jobs}
    null = {name: np.full((B, n_null), np.nan) for name in jobs}
    with eval_mode(adapter.model, freeze=True):
        for name, todo in jobs.items():
            c = by_name[name]
            for s in range(0, len(todo), batch_size):
                rows = todo[s : s + batch_size]
                prep = prepare(adapter, words, target, baseline, rows=rows)
                mask = prep.batch.attention_mask
                pos = None if at_words is None else _token_mask(ctx, rows, [at_words[name][b] for b in rows],
                                                                mask.shape[1])
                edit = c.ablation(adapter, mask, layer_mean, ctx, rows=rows, positions=pos)
                if edit is None:
                    continue
                f0 = prep.value()
                with intervene(adapter, edit):
                    out[name][rows] = f0 - prep.value()
                if n_null:
                    for j, e in enumerate(c.random_ablations(adapter, mask, layer_mean, ctx, rows, pos, n_null, rng)):
                        with intervene(adapter, e):
                            null[name][rows, j] = f0 - prep.value()
    return out, null


def _ablation_null(effect: float | None, null: np.ndarray | None, b: int) -> tuple[float | None, float | None, int]:
    """``(z, two-sided p, n)`` of an ablation effect's size against the random concepts' (on ``|effect|``)."""
    if effect is None or null is None or null.shape[1] == 0:
        return None, None, 0
    r = np.abs(null[b][np.isfinite(null[b])])
    if len(r) == 0:
        return None, None, 0
    obs = abs(effect)
    sd = r.std()
    zv = float((obs - r.mean()) / sd) if sd > 0 else float("nan")
    pv = float((1 + (r >= obs - 1e-12 * (1 + obs)).sum()) / (len(r) + 1))
    return zv, pv, int(len(r))


def _involved(c: Concept, ws: np.ndarray, ctx: LayerContext, b: int) -> list[int]:
    """Indices of the words a concept's mass sits on in example ``b``: a latent concept's cluster
    words, else the (at most 3) words carrying at least half of its largest per-word mass."""
    if isinstance(c, LatentConcept):
        return [int(i) for i in np.flatnonzero(ctx.word_clusters(c.model)[b] == c.cluster_id)]
    mx = np.abs(ws).max() if len(ws) else 0.0
    return sorted(int(i) for i in np.argsort(-np.abs(ws))[:3] if mx > 0 and abs(ws[i]) >= 0.5 * mx)


def _word_scores(tc: np.ndarray, wids: list[int | None], n_words: int) -> np.ndarray:
    ws = np.zeros(n_words)
    for t, w in enumerate(wids):
        if w is not None and w < n_words:
            ws[w] += tc[t]
    return ws


def explain(
    adapter,
    texts,
    target=None,
    concepts: Sequence[Concept] = (),
    layer: str | None = None,
    method: str = "grad_x_act",
    n_random: int = 1000,
    top_k: int = 10,
    ablation: str | None = "zero",
    n_ablate: int = 5,
    reference=None,
    partition: bool = True,
    sort: str = "z",
    seed: int = 0,
    batch_size: int = 16,
    n_steps: int = 20,
    baseline: str | int = "pad",
    ablation_positions: str = "all",
    n_ablation_random: int = 0,
):
    """Explain ``target`` on ``texts`` by ``concepts`` at ``layer``.

    Returns one :class:`PredictionExplanation` per text (a single one for a single string). Each concept's
    attribution mass ``|contribution|`` is compared with the masses of ``n_random`` random concepts
    of the same size (random neuron sets / random words of the sentence / random directions with
    as much activation along them, see :class:`DirectionConcept`): ``z`` = (mass - mean) / std of
    the null, ``p`` = one-sided empirical p-value ``(1 + #{null >= mass}) / (n + 1)`` with ``n``
    null draws (``n_random``, or fewer for a concept with a fixed set of random directions).
    Concepts are sorted by ``z`` (``sort="z"``, comparable across concept kinds) or by
    ``|contribution|``. ``method``: ``grad_x_act`` (default; gradient x activation, Shrikumar et
    al. 2016 / Ancona et al. 2018) or ``conductance`` / ``layer_ig`` (Dhamdhere et al. 2019; Captum,
    ``n_steps``; relative to the pad-token input, so a concept whose units merely differ from their
    state under that baseline gets credit on every input: check specificity against control
    inputs). ``ablation``: ``"zero"``,
    ``"mean"`` (layer mean over ``reference``: a store view, a store or texts; default the inputs) or
    ``None``; the top ``n_ablate`` concepts of each example are ablated, ``ablation_positions="all"``
    at every token the concept is counted at (for a direction: every token, the ablation whose first-order
    effect the contribution is, exact when the readout is linear) or ``"tokens"``: only at the tokens of the
    words the concept's mass sits on (its ``tokens``; what the explanation claims). With
    ``n_ablation_random > 0`` every ablation is repeated for that many random concepts of the same size
    (random unit sets, random directions of the concept's null, random words) with the same fill at the
    same positions, and ``ablation_z`` / ``ablation_p`` (two-sided, on ``|effect|``) say whether removing
    the concept matters more than removing any concept of its size. This matters along directions where
    the model is far from linear: on MiniLM's layer.4 the negation cue's direction has a negative
    grad x act mass, zero ablation at every token moves the logit by either sign and no more than random
    directions do, while ablation at the cue's tokens lowers the negative logit in 18 of 20 sentences,
    17 of them beyond 95% of scale-matched random directions (README, Findings).
    ``partition=True`` makes the neuron concepts disjoint so that they and the unassigned neurons
    decompose the layer's total. The null draws come from a local generator seeded with ``seed``; the
    model is handed back in the training mode it had.
    """
    if sort not in ("z", "contribution"):
        raise ParameterError(f"sort must be 'z' or 'contribution', got {sort!r}")
    if ablation not in (None, "zero", "mean"):
        raise ParameterError(f"ablation must be 'zero', 'mean' or None, got {ablation!r}")
    if n_random < 10:
        raise ParameterError(f"n_random must be >= 10 for a usable null distribution, got {n_random}")
    if ablation_positions not in ("all", "tokens"):
        raise ParameterError(f"ablation_positions must be 'all' or 'tokens', got {ablation_positions!r}")
    if n_ablation_random < 0 or n_ablation_random == 1:
        raise ParameterError(f"n_ablation_random must be 0 or >= 2 (a null needs a spread), got {n_ablation_random}")
    concepts = ConceptSet(concepts)
    if not concepts:
        raise ConceptError("explain needs at least one concept")
    layers = {c.layer for c in concepts}
    if layer is None:
        if len(layers) != 1:
            raise ConceptError(f"concepts span layers {sorted(layers)}; pass layer=")
        layer = layers.pop()
    other = [c.name for c in concepts if c.layer != layer]
    if other:
        raise ConceptError(f"concepts not at {layer}: {other[:5]}")
    names = concepts.names()
    if len(set(names)) != len(names):
        raise ConceptError("concept names must be unique")
    if partition:
        concepts = concepts.partition()
    single = isinstance(texts, str)
    words, _ = as_word_lists(texts)
    target = parse_target(target, adapter)
    ctx = layer_context(adapter, words, target, layer, method=method, batch_size=batch_size, n_steps=n_steps,
                        baseline=baseline)
    attr = ctx.attr
    B = attr.shape[0]
    total = attr.sum((1, 2))
    rng = np.random.default_rng(seed)

    contrib, tokc, z, p, mu, sd, present = {}, {}, {}, {}, {}, {}, {}
    for c in concepts:
        tc = c.token_contributions(attr, ctx)
        tokc[c.name] = tc
        contrib[c.name] = tc.sum(1)
        # the statistic is the attribution *mass* |contribution| against the masses of random
        # concepts of the same size: a concept carrying less than chance gets a negative z
        null = np.abs(c.null(attr, ctx, n_random, rng))
        obs = np.abs(contrib[c.name])
        m, s = null.mean(1), null.std(1)
        mu[c.name], sd[c.name] = m, s
        with np.errstate(divide="ignore", invalid="ignore"):
            z[c.name] = np.where(s > 0, (obs - m) / np.where(s > 0, s, 1), np.nan)
        # a concept may bring fewer null draws than asked (a fixed set of random CAVs)
        p[c.name] = (1 + (null >= obs[:, None] - 1e-12 * (1 + obs[:, None])).sum(1)) / (null.shape[1] + 1)
        present[c.name] = c.present(ctx) if isinstance(c, LatentConcept) else np.ones(B, dtype=bool)

    def key(name, b):
        if sort == "z":
            v = z[name][b]
            return (-v if np.isfinite(v) else 0.0, -abs(contrib[name][b]))
        return (-abs(contrib[name][b]), 0.0)

    order = [sorted([c.name for c in concepts if present[c.name][b]], key=lambda n, b=b: key(n, b)) for b in range(B)]
    by_name = {c.name: c for c in concepts}
    shown = [order[b][:top_k] if top_k else order[b] for b in range(B)]
    word_scores = {(name, b): _word_scores(tokc[name][b], ctx.token_word_ids[b], len(ctx.words[b]))
                   for b in range(B) for name in dict.fromkeys(shown[b] + order[b][:n_ablate])}
    involved = {key_: _involved(by_name[key_[0]], ws, ctx, key_[1]) for key_, ws in word_scores.items()}
    effects: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    if ablation is not None and n_ablate > 0:
        jobs: dict[str, list[int]] = {}  # each concept on the examples whose top n_ablate it is in
        for b in range(B):
            for name in order[b][:n_ablate]:
                jobs.setdefault(name, []).append(b)
        at_words = None
        if ablation_positions == "tokens":
            at_words = {name: [set(involved.get((name, b), ())) for b in range(B)] for name in jobs}
        layer_mean = _layer_mean(adapter, layer, reference, ctx) if ablation == "mean" else None
        effects, nulls = _ablation_effects(adapter, words, target, jobs, by_name, ctx, layer_mean, batch_size,
                                           baseline, at_words, n_ablation_random, rng)

    disjoint = concepts.is_partition()
    neuron_names = [c.name for c in concepts if c.neurons is not None]
    out = []
    for b in range(B):
        rows = []
        for r, name in enumerate(shown[b]):
            c = by_name[name]
            ws = word_scores[(name, b)]
            eff = effects.get(name)
            e = None if eff is None or not np.isfinite(eff[b]) or r >= n_ablate else float(eff[b])
            az, ap, n_null = _ablation_null(e, nulls.get(name), b)
            rows.append(ConceptScore(
                name, c.kind, float(contrib[name][b]), float(z[name][b]), float(p[name][b]), float(mu[name][b]),
                float(sd[name][b]), e, [ctx.words[b][i] for i in involved[(name, b)]], [float(x) for x in ws],
                None if c.neurons is None else [str(n) for n in c.neurons], list(c.words), c.describe(),
                az, ap, n_null,
            ))
        unassigned = None
        if disjoint:
            unassigned = float(total[b] - sum(contrib[n][b] for n in neuron_names))
        out.append(PredictionExplanation(" ".join(ctx.words[b]), list(ctx.words[b]), str(target), float(ctx.f_x[b]),
                                         layer, method, float(total[b]), rows, unassigned, n_random, ablation,
                                         {"sort": sort, "partition": partition,
                                          "ablation_positions": ablation_positions,
                                          "n_ablation_random": n_ablation_random}))
    return out[0] if single else ResultList(out)


def ablation_agreement(explanations: Sequence[PredictionExplanation] | PredictionExplanation) -> dict:
    """Spearman rank correlation between attributed contributions and ablation effects, pooled over
    every ablated (example, concept) pair of ``explanations``."""
    if isinstance(explanations, PredictionExplanation):
        explanations = [explanations]
    pairs = [(c.contribution, c.ablation_effect) for e in explanations for c in e.concepts
             if c.ablation_effect is not None]
    if len(pairs) < 3:
        return {"spearman": None, "p_value": None, "n": len(pairs)}
    r, pv = _spearman(pairs)
    return {"spearman": r, "p_value": pv, "n": len(pairs)}


# ---------------------------------------------------------------------------------------------
@dataclass
class DatasetExplanation(Result):
    """Which concepts a model relies on for each output class: per class and concept the mean
    contribution and z, and how often the concept is among the top ``k`` and significant (``share``)."""

    layer: str
    method: str
    classes: dict[str, dict[str, dict[str, float]]]
    n_examples: dict[str, int]
    agreement: dict
    k: int

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["classes"] = {c: {n: {k: _nan(v) for k, v in st.items()} for n, st in by.items()}
                        for c, by in d.get("classes", {}).items()}
        return d

    def top(self, cls: str, k: int = 5, by: str = "share") -> list[tuple[str, dict]]:
        items = self.classes[str(cls)].items()
        return sorted(items, key=lambda kv: (-kv[1][by], -abs(np.nan_to_num(kv[1]["mean_z"]))))[:k]

    def table(self, k: int = 5) -> str:
        lines = [f"concepts relied on per predicted class ({self.method} at {self.layer}; share = fraction of "
                 f"examples where the concept is in the top {self.k} with p < 0.05)"]
        for cls in self.classes:
            lines.append(f"class {cls} ({self.n_examples[cls]} examples):")
            for name, s in self.top(cls, k):
                lines.append(f"  {name:<28} share {s['share']:.2f}  mean contrib {s['mean_contribution']:.4g}  "
                             f"mean z {s['mean_z']:.2f}")
        a = self.agreement
        if a.get("spearman") is not None:
            lines.append(f"Spearman(contribution, ablation effect) = {a['spearman']:.3f} over {a['n']} pairs")
        return "\n".join(lines)


def explain_dataset(adapter, texts: Sequence[str], concepts: Sequence[Concept], layer: str | None = None,
                    labels: Sequence | None = None, k: int = 5, **kw) -> DatasetExplanation:
    """Explain the predicted class of every text and aggregate per class (``labels``: group by these
    instead of the predicted class). ``kw`` goes to :func:`explain`."""
    texts = list(texts)
    exps = explain(adapter, texts, ClassTarget("pred"), concepts, layer, top_k=0, **kw)
    if labels is None:
        labels = _predicted(adapter, texts)
    groups: dict[str, list[PredictionExplanation]] = {}
    for e, y in zip(exps, labels):
        groups.setdefault(str(y), []).append(e)
    classes = {}
    for cls, es in groups.items():
        stats: dict[str, dict[str, float]] = {}
        names = {c.name for e in es for c in e.concepts}
        for name in names:
            rows = [(e.rank_of(name), next(c for c in e.concepts if c.name == name)) for e in es if e.rank_of(name)]
            share = sum(1 for r, c in rows if r <= k and c.significant) / len(es)
            zs = [c.z for _, c in rows if math.isfinite(c.z)]
            stats[name] = {"share": share, "mean_contribution": float(np.mean([c.contribution for _, c in rows])),
                           "mean_z": float(np.mean(zs)) if zs else float("nan"), "n": len(rows)}
        classes[cls] = stats
    return DatasetExplanation(exps[0].layer, exps[0].method, classes, {c: len(v) for c, v in groups.items()},
                              ablation_agreement(exps), k)


def _predicted(adapter, texts: list[str], batch_size: int = 32) -> list[str]:
    out = []
    labels = (getattr(adapter, "head_info", None) or {}).get("labels")
    with eval_mode(adapter.model, freeze=True), torch.no_grad():
        for s in range(0, len(texts), batch_size):
            b = adapter.encode([t.split() for t in texts[s : s + batch_size]])
            lg = adapter.score_fn(adapter.forward(b))
            out += [int(i) for i in lg.argmax(-1).cpu()]
    return [labels[i] if labels and i < len(labels) else str(i) for i in out]


# ---------------------------------------------------------------------------------------------
def explain_section_html(explanations: Sequence[PredictionExplanation] | PredictionExplanation, k: int = 5,
                         title: str = "Concept explanations") -> str:
    """Self-contained HTML fragment: for each explanation a table of its top ``k`` concepts and a
    word heatmap per concept (the concept's attribution mass at each word). Every text is escaped."""
    if isinstance(explanations, PredictionExplanation):
        explanations = [explanations]
    parts = [f'<section class="fg-explain"><h2>{escape(title)}</h2>']
    for e in explanations:
        parts.append(f'<div class="fg-explanation" style="margin:1em 0">'
                     f'<div><b>{escape(e.text)}</b></div>'
                     f'<div style="color:#555;font-size:12px">target {escape(e.target)} = {e.f_x:.4g}; '
                     f'{escape(e.method)} at {escape(e.layer)}; total attribution {e.total:.4g}'
                     + (f"; unassigned neurons {e.unassigned:.4g}" if e.unassigned is not None else "")
                     + f"; z and p against {e.n_random} random concepts of the same size</div>")
        top = e.concepts[:k]
        rows = [[i + 1, c.name, c.kind, f"{c.contribution:.4g}", f"{c.z:.2f}" if math.isfinite(c.z) else "nan",
                 f"{c.p:.3g}", c.ablation_text(), " ".join(c.tokens), c.description] for i, c in enumerate(top)]
        parts.append(table(["#", "concept", "kind", "contribution", "z", "p", "ablation effect", "tokens",
                            "units / words"], rows, style="border-collapse:collapse;font-size:12px;margin:4px 0",
                           row_style="border-top:1px solid #ddd"))
        if top:
            parts.append(heatmap_html([e.words] * len(top), [c.word_scores for c in top], value_name="contribution",
                                      captions=[c.name for c in top], legend=True))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)
