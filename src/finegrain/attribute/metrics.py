"""Faithfulness of attributions: ERASER comprehensiveness / sufficiency with AOPC (DeYoung et al.
2020), deletion / insertion curves, and Captum's infidelity and sensitivity-max (Yeh et al. 2019).

A word is removed by replacing its tokens with the baseline token (special tokens stay), exactly as
the attribution baselines do, so every method is scored against the same reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from finegrain.attribute._core import AggregateList, as_word_lists, each_example, seeded
from finegrain.attribute.methods import Attribution, AttributionMethod, attribute_tensor
from finegrain.attribute.targets import Target, TargetDescription, parse_target
from finegrain.errors import ParameterError
from finegrain.models.base import ModelAdapter
from finegrain.results import Result, plain_table

BINS = (1, 5, 10, 20, 50)
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def _k(percent: float, n: int) -> int:
    return max(1, min(n, math.ceil(percent / 100.0 * n)))


def _scores(att: Attribution | np.ndarray | Sequence[float]) -> np.ndarray:
    return np.asarray(att.word_scores if isinstance(att, Attribution) else att, dtype=np.float64)


def _rank(scores: np.ndarray) -> np.ndarray:
    # stable ranking, ties broken by position, so an all-zero attribution is still well defined
    return np.argsort(-scores, kind="stable")


@dataclass
class Faithfulness(Result):
    """ERASER scores of one example's attribution: ``comprehensiveness[bin]`` = f(x) - f(x without the
    top-k% words) and ``sufficiency[bin]`` = f(x) - f(only those words); AOPC = mean over bins;
    ``deletion`` / ``insertion``: areas under the curves of f as words are removed / inserted one by one
    in attribution order (``deletion_curve`` / ``insertion_curve``, k = 0..n words); ``None`` without
    curves. ``words`` and ``scores`` are the attribution that was evaluated."""

    bins: tuple
    comprehensiveness: np.ndarray
    sufficiency: np.ndarray
    deletion: float | None
    insertion: float | None
    f_x: float
    f_baseline: float
    words: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    deletion_curve: np.ndarray | None = None
    insertion_curve: np.ndarray | None = None
    description: TargetDescription | None = None

    @property
    def aopc_comprehensiveness(self) -> float:
        return float(np.mean(self.comprehensiveness))

    @property
    def aopc_sufficiency(self) -> float:
        return float(np.mean(self.sufficiency))

    def summary(self) -> dict:
        return {"comprehensiveness": self.aopc_comprehensiveness, "sufficiency": self.aopc_sufficiency,
                "deletion_auc": self.deletion, "insertion_auc": self.insertion}

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = dict(d)
        d["bins"] = tuple(d["bins"])
        for k in ("comprehensiveness", "sufficiency", "scores", "deletion_curve", "insertion_curve"):
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=np.float64)
        if isinstance(d.get("description"), dict):
            d["description"] = TargetDescription.from_dict(d["description"])
        return d

    def table(self) -> str:
        lines = [f"ERASER faithfulness of an attribution of {' '.join(self.words)!r}"]
        if self.description is not None:
            lines.append(f"explains: {self.description.text}")
        lines += _bins_table(self.bins, self.comprehensiveness[None], self.sufficiency[None])
        lines.append("  ".join(f"{k}={v:.4g}" for k, v in self.summary().items() if v is not None))
        return "\n".join(lines)

    def plot(self, path) -> object:
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.attribution import plot_faithfulness_bins

        return plot_faithfulness_bins(self.bins, self.comprehensiveness[None], self.sufficiency[None], path)


def _bins_table(bins, comp: np.ndarray, suff: np.ndarray) -> list[str]:
    lines = ["bin(%)  comprehensiveness  sufficiency"]
    for k, b in enumerate(bins):
        lines.append(f"{b:>6}  {comp[:, k].mean():>17.4g}  {suff[:, k].mean():>11.4g}")
    return lines


class FaithfulnessList(AggregateList):
    """:func:`faithfulness` of a list of texts: one :class:`Faithfulness` per text (list in, list out),
    plus the dataset-level numbers over them (DeYoung et al. 2020 report these): ``aopc_comprehensiveness``
    / ``aopc_sufficiency`` (means over bins and examples), ``summary()``, the stacked
    ``comprehensiveness [B, bins]`` / ``sufficiency``, ``deletion`` / ``insertion`` / ``f_x`` /
    ``f_baseline`` arrays; its table and plot are the averages per bin."""

    # the stacked per-example numbers, in the order of the examples
    bins = property(lambda self: self[0].bins)
    comprehensiveness = property(lambda self: np.array([r.comprehensiveness for r in self]))
    sufficiency = property(lambda self: np.array([r.sufficiency for r in self]))
    f_x = property(lambda self: np.array([r.f_x for r in self]))
    f_baseline = property(lambda self: np.array([r.f_baseline for r in self]))
    deletion = property(lambda self: self._curve_areas("deletion"))
    insertion = property(lambda self: self._curve_areas("insertion"))

    def _curve_areas(self, name: str) -> np.ndarray:
        vals = [getattr(r, name) for r in self]
        return np.array([] if any(v is None for v in vals) else vals, dtype=np.float64)

    @property
    def aopc_comprehensiveness(self) -> float:
        return float(self.comprehensiveness.mean())

    @property
    def aopc_sufficiency(self) -> float:
        return float(self.sufficiency.mean())

    def summary(self) -> dict:
        """The dataset-level AOPC and curve areas (means over examples)."""
        return {"comprehensiveness": self.aopc_comprehensiveness, "sufficiency": self.aopc_sufficiency,
                "deletion_auc": float(self.deletion.mean()) if len(self.deletion) else None,
                "insertion_auc": float(self.insertion.mean()) if len(self.insertion) else None}

    def table(self) -> str:
        lines = [f"ERASER faithfulness over {len(self)} example(s)"]
        lines += _bins_table(self.bins, self.comprehensiveness, self.sufficiency)
        lines.append("  ".join(f"{k}={v:.4g}" for k, v in self.summary().items() if v is not None))
        return "\n".join(lines)

    def plot(self, path) -> object:
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.attribution import plot_faithfulness_bins

        return plot_faithfulness_bins(self.bins, self.comprehensiveness, self.sufficiency, path)


@dataclass
class MethodComparison(Result):
    """Rows of :func:`evaluate_methods` (one dict per method); iterates and indexes like the list of rows."""

    rows: list

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def table(self) -> str:
        return format_table(self.rows)

    def plot(self, path) -> object:
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.attribution import plot_method_comparison

        return plot_method_comparison(self.rows, path)


def _attribution_list(attributions, single: bool) -> list:
    """The attributions of a call, one per text: a single text may come with one attribution (an
    :class:`Attribution` or its word scores) or a list of one."""
    if single and (isinstance(attributions, Attribution) or (
            not isinstance(attributions, str) and len(attributions) and np.isscalar(attributions[0]))):
        return [attributions]
    return list(attributions)


def faithfulness(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None,
    attributions,
    bins: Sequence[float] = BINS,
    baseline: str | int = "pad",
    curves: bool = True,
) -> Faithfulness | FaithfulnessList:
    """Comprehensiveness f(x) - f(x without the top-k% words) and sufficiency f(x) - f(only the
    top-k% words), per bin (at least one word per bin), plus deletion / insertion curves (remove /
    insert words one by one in attribution order; area by the trapezoid rule over the fraction of
    words, values as f). Higher comprehensiveness and lower sufficiency = more faithful (DeYoung et
    al. 2020).

    A string (with one attribution: an :class:`Attribution` or its word scores) gives one
    :class:`Faithfulness`; a list of texts (with one attribution each) a :class:`FaithfulnessList`,
    whose ``aopc_comprehensiveness`` / ``aopc_sufficiency`` / ``summary()`` are the dataset-level
    averages."""
    words, single = as_word_lists(texts)
    attributions = _attribution_list(attributions, single)
    if len(attributions) != len(words):
        raise ParameterError(f"{len(attributions)} attributions for {len(words)} texts")
    out = []
    for prep, att in zip(each_example(adapter, words, target, baseline, desc="faithfulness"), attributions):
        n = len(prep.words[0])
        sc = _scores(att)
        if len(sc) != n:
            raise ParameterError(f"attribution has {len(sc)} word scores for a text of {n} words")
        order = _rank(sc)
        v = prep.game(0)
        rows = []
        for p in bins:
            top = np.zeros(n, dtype=bool)
            top[order[: _k(p, n)]] = True
            rows += [~top, top]
        if curves:
            for k in range(n + 1):
                top = np.zeros(n, dtype=bool)
                top[order[:k]] = True
                rows += [~top, top]
        vals = v(torch.as_tensor(np.array(rows))).double().numpy()
        fx = float(prep.value()[0])
        fb = float(prep.value(prep.base_embeds)[0])
        nb = len(bins)
        dele = ins = dc = ic = None
        if curves:
            c = vals[2 * nb :]
            grid = np.linspace(0, 1, n + 1)
            dc, ic = c[0::2], c[1::2]
            dele, ins = float(_trapezoid(dc, grid)), float(_trapezoid(ic, grid))
        out.append(Faithfulness(tuple(bins), fx - vals[0 : 2 * nb : 2], fx - vals[1 : 2 * nb : 2], dele, ins, fx, fb,
                                list(prep.words[0]), sc, dc, ic, prep.description(0)))
    return out[0] if single else FaithfulnessList(out)


def comprehensiveness(adapter, texts, target, attributions, bins=BINS, baseline="pad") -> float:
    """AOPC comprehensiveness (mean over bins and examples)."""
    return faithfulness(adapter, texts, target, attributions, bins, baseline, curves=False).aopc_comprehensiveness


def sufficiency(adapter, texts, target, attributions, bins=BINS, baseline="pad") -> float:
    """AOPC sufficiency (mean over bins and examples); lower is better."""
    return faithfulness(adapter, texts, target, attributions, bins, baseline, curves=False).aopc_sufficiency


def _word_noise(prep, n_words: int, p_drop: float, seed: int):
    """Perturbation for infidelity: drop each word to its baseline with probability ``p_drop``;
    returns Captum's (perturbation I = x - x_perturbed, x_perturbed)."""
    g = torch.Generator().manual_seed(seed)
    wm = torch.as_tensor(prep.word_mask(0), device=prep.embeds.device).float()  # [n, T]

    def perturb(inputs):
        keep = (torch.rand(inputs.shape[0], n_words, generator=g) >= p_drop).to(inputs.device).float()
        tok_drop = ((1 - keep) @ wm) > 0  # [rows, T]
        base = prep.base_embeds[0].unsqueeze(0).expand_as(inputs)
        pert = torch.where(tok_drop.unsqueeze(-1), base, inputs)
        return inputs - pert, pert

    return perturb


def infidelity(adapter: ModelAdapter, texts, target: Target | str | None, method: str = "ig", n_perturb: int = 10,
               p_drop: float = 0.3, baseline: str | int = "pad", seed: int = 0, **method_kw) -> np.ndarray | float:
    """Captum's infidelity (Yeh et al. 2019) per example, with word-dropping perturbations: the
    mean squared error between attributions · perturbation and the change of f. Lower is better.
    A list of texts gives one value per text, a string one float."""
    # heavy: captum is imported when the metric runs
    from captum.metrics import infidelity as cap_infidelity

    algo = AttributionMethod(adapter, method)
    out = []
    with seeded(seed):
        for prep in each_example(adapter, texts, target, baseline, desc="infidelity"):
            attr = _token_attr(algo, prep, method_kw)
            perturb = _word_noise(prep, len(prep.words[0]), p_drop, seed)
            val = cap_infidelity(prep.forward, perturb, prep.embeds, attr, additional_forward_args=prep.args(),
                                 n_perturb_samples=n_perturb, max_examples_per_batch=n_perturb)
            out.append(float(val[0]))
    return out[0] if isinstance(texts, str) else np.array(out)


def _token_attr(algo: AttributionMethod, prep, kw) -> torch.Tensor:
    """Element-level attribution tensor [1, T, D] that Captum metrics need."""
    res = attribute_tensor(prep.forward, prep.embeds.clone().requires_grad_(True), prep.base_embeds, algo.method,
                           additional_forward_args=prep.args(), feature_mask=prep.feature_mask(),
                           module=prep.adapter.model, **kw)
    return res.attributions.detach()


def sensitivity(adapter: ModelAdapter, texts, target: Target | str | None, method: str = "ig",
                radius: float = 0.02, n_perturb: int = 5, baseline: str | int = "pad", seed: int = 0,
                **method_kw) -> np.ndarray | float:
    """Captum's sensitivity_max (Yeh et al. 2019) per example: the largest change of the
    attributions under uniform embedding noise of ``radius``. Lower is better. A list of texts gives
    one value per text, a string one float."""
    # heavy: captum is imported when the metric runs
    from captum.metrics import sensitivity_max

    algo = AttributionMethod(adapter, method)
    out = []
    with seeded(seed):
        for prep in each_example(adapter, texts, target, baseline, desc="sensitivity"):

            def explain(inputs, additional_forward_args=None, _prep=prep):
                args = additional_forward_args if additional_forward_args is not None else _prep.args()
                packed = isinstance(inputs, tuple)
                inputs = inputs[0] if packed else inputs
                base = _prep.base_embeds.expand(inputs.shape[0], -1, -1)
                attr = attribute_tensor(_prep.forward, inputs.detach().requires_grad_(True), base, algo.method,
                                        additional_forward_args=args, module=_prep.adapter.model,
                                        feature_mask=_prep.feature_mask().expand(inputs.shape[0], -1, -1),
                                        **method_kw).attributions
                return (attr,) if packed else attr

            val = sensitivity_max(explain, prep.embeds, perturb_radius=radius, n_perturb_samples=n_perturb,
                                  additional_forward_args=prep.args(), max_examples_per_batch=n_perturb)
            out.append(float(val[0]))
    return out[0] if isinstance(texts, str) else np.array(out)


def evaluate_methods(adapter: ModelAdapter, texts, target: Target | str | None = None,
                     methods: Sequence[str] = ("ig", "saliency", "input_x_gradient", "feature_ablation"),
                     bins: Sequence[float] = BINS, infidelity_samples: int = 0, **kw) -> MethodComparison:
    """One table comparing methods on the same examples: AOPC comprehensiveness / sufficiency,
    deletion / insertion AUC, mean |delta|, the share of incomplete results, evaluations per example
    (and infidelity if asked)."""
    words, _ = as_word_lists(texts)
    target = parse_target(target, adapter)
    rows = []
    for m in methods:
        atts = AttributionMethod(adapter, m).attribute(words, target, **kw)
        fa = faithfulness(adapter, words, target, atts, bins)
        deltas = [abs(a.delta) for a in atts if a.delta is not None]
        flags = [a.complete for a in atts if a.complete is not None]
        row = {"method": m, **fa.summary(), "mean_abs_delta": float(np.mean(deltas)) if deltas else None,
               "incomplete": float(np.mean([not c for c in flags])) if flags else None,
               "evaluations": float(np.mean([a.n_evaluations for a in atts]))}
        if infidelity_samples:
            row["infidelity"] = float(infidelity(adapter, words, target, m, n_perturb=infidelity_samples).mean())
        rows.append(row)
    return MethodComparison(rows)


def format_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`evaluate_methods` rows."""
    if not rows:
        return ""
    cols = list(rows[0])
    return plain_table(cols, [[r[c] for c in cols] for r in rows])
