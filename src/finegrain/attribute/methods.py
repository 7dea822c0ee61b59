"""Token-, word-, layer- and neuron-level attribution.

Captum computes the input-level methods; finegrain supplies the forward function (the target of the
model run on input embeddings, see :mod:`finegrain.attribute._core`), token baselines that keep
special tokens, batching of examples with a bound on rows per forward (``internal_batch_size``,
``tokens_per_forward``), word aggregation, evaluation counts, the completeness check and a
description of the target in words. The layer-level methods run through the adapters' hook points
(:mod:`finegrain.attribute.layer`), so they work on transformers, LSTMs and users' own modules alike.

Methods (``attribute(..., method=...)``): ``ig`` (Sundararajan et al. 2017), ``saliency``,
``input_x_gradient``, ``deeplift`` / ``deeplift_shap`` (Shrikumar et al. 2017), ``gradient_shap``,
``kernel_shap``, ``shapley`` (sampling) / ``shapley_exact`` (Lundberg & Lee 2017), ``feature_ablation``,
``occlusion``; layer-level ``layer_ig``, ``layer_conductance`` (Dhamdhere et al. 2018) summed over the
units of ``layer``; ``neuron_conductance`` of ``neuron`` to the input tokens.

Integration steps (``n_steps="auto"``, the default): IG, layer IG and layer conductance start at
``AUTO_STEPS[0]`` steps and double, per example, until ``|delta| <= delta_tolerance * |f(x) - f(x')|``
(1% by default), or until doubling changes the delta by less than a tenth of it (the rest is not a
discretisation error but paths that bypass the layer: more steps cannot remove it), or
``AUTO_STEPS[-1]`` is reached; neuron conductance, which has no completeness property, uses
``NEURON_STEPS``. The number of steps used is in every result (``n_steps``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from finegrain.attribute import layer as layer_methods
from finegrain.attribute._core import (
    DELTA_TOLERANCE,
    AggregateList,
    AttributionError,
    CheckedResult,
    Prepared,
    as_word_lists,
    embedding_module,
    is_complete,
    prepare,
    seeded,
    warn_incomplete,
)
from finegrain.attribute.render import VisualizationRecord, html_heatmap, records_html, text_table
from finegrain.attribute.targets import Target, TargetDescription, parse_target
from finegrain.errors import ParameterError
from finegrain.models.base import ModelAdapter, eval_mode
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.results import Result, ResultList

GRADIENT = ("ig", "saliency", "input_x_gradient", "deeplift", "deeplift_shap", "gradient_shap")
PERTURBATION = ("kernel_shap", "shapley", "shapley_exact", "feature_ablation", "occlusion")
LAYER = ("layer_ig", "layer_conductance", "neuron_conductance")
METHODS = GRADIENT + PERTURBATION + LAYER
ALIASES = {"integrated_gradients": "ig", "ixg": "input_x_gradient", "lime": "kernel_shap",
           "ablation": "feature_ablation", "conductance": "layer_conductance", "dl": "deeplift",
           "svs": "shapley", "gshap": "gradient_shap"}
_HAS_DELTA = ("ig", "deeplift", "deeplift_shap", "gradient_shap", "layer_ig", "layer_conductance")
#: methods whose delta is sum(returned scores) - (f(x) - f(x')) for the one token baseline
_OWN_DELTA = ("ig", "deeplift", "layer_ig", "layer_conductance")
#: methods that integrate along a path (``n_steps``)
INTEGRATED = ("ig", "layer_ig", "layer_conductance", "neuron_conductance")
#: the adaptive schedule of ``n_steps="auto"`` (Gauss-Legendre nodes do not nest: each round reruns)
AUTO_STEPS = (16, 32, 64, 128, 256)
NEURON_STEPS = 50
#: methods without a baseline: tokens outside words (special tokens, spaces) get no score
_NO_BASELINE = ("saliency", "input_x_gradient")


# ----------------------------------------------------------------------------------------------
@dataclass
class Attribution(CheckedResult):
    """Attribution of one example.

    ``token_scores`` cover every real token (special tokens and, for character models, spaces have
    ``token_word_ids`` ``None``); ``word_scores`` sum the tokens of each word and ``other_score`` is the
    rest (non-zero for layer methods, whose special-token states carry part of the flow), so
    ``total = word_scores.sum() + other_score``. ``delta`` = ``total - (f(x) - f(x'))`` where the method
    has a completeness property (for ``gradient_shap`` / ``deeplift_shap``: Captum's mean over their
    reference distribution), else ``None``; ``complete`` applies the stated criterion
    ``|delta| <= delta_tolerance * |f(x) - f(x')|``. ``description`` names the target in words (class
    label, token, continuation) with the model's probabilities; ``n_steps`` is the number of
    integration steps used (``None`` for methods without).
    """

    method: str
    target: str
    words: list[str]
    tokens: list[str]
    token_word_ids: list[int | None]
    token_scores: np.ndarray
    word_scores: np.ndarray
    f_x: float
    f_baseline: float
    delta: float | None
    n_evaluations: int
    extra: dict = field(default_factory=dict)
    description: TargetDescription | None = None
    n_steps: int | None = None
    other_score: float = 0.0
    delta_tolerance: float = DELTA_TOLERANCE
    baseline: str = "pad"
    true_label: str | None = None

    @property
    def total(self) -> float:
        """Sum of all token scores (words and the rest)."""
        return float(np.sum(self.word_scores)) + float(self.other_score)

    _arrays = {"token_scores": np.float64, "word_scores": np.float64}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(total=self.total,
                 relative_delta=None if self.delta is None or not self.gap else abs(self.delta) / abs(self.gap))
        return d

    def table(self) -> str:
        return text_table(self)

    def html(self) -> str:
        return html_heatmap([self])

    def record(self, true_label: str | None = None, level: str = "word") -> VisualizationRecord:
        """This attribution as a Captum-style :class:`~finegrain.attribute.render.VisualizationRecord`."""
        return VisualizationRecord.from_attribution(self, true_label, level)

    def plot(self, path) -> object:
        """The word heatmap as a PNG."""
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.attribution import plot_word_heatmap

        d = self.description
        cap = f"{self.method}: {d.text if d else self.target}  total={self.total:.3g}"
        return plot_word_heatmap([self.words], [self.word_scores], path, captions=[cap])

    def _repr_html_(self) -> str:
        return records_html([self.record()])

    @staticmethod
    def _repr_html_list_(atts: Sequence[Attribution]) -> str:
        """A list of attributions in a notebook: one Captum-style table, one colour scale."""
        return records_html([a.record() for a in atts])


@dataclass
class TensorAttribution(Result):
    """Result of :func:`attribute_tensor`: raw Captum attributions on plain tensors."""

    attributions: torch.Tensor
    delta: torch.Tensor | None
    n_evaluations: int
    n_calls: int

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "attributions": self.attributions.detach().cpu().tolist(),
                "delta": None if self.delta is None else self.delta.detach().cpu().reshape(-1).tolist(),
                "n_evaluations": self.n_evaluations, "n_calls": self.n_calls}

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = dict(d)
        d["attributions"] = torch.tensor(d["attributions"])
        d["delta"] = None if d.get("delta") is None else torch.tensor(d["delta"])
        return d

    def table(self) -> str:
        return (f"attributions {tuple(self.attributions.shape)}  evaluations={self.n_evaluations}  "
                f"calls={self.n_calls}")


class _Counted:
    """Wraps a forward function and counts calls and rows (one row = one evaluation)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls = 0
        self.rows = 0

    def __call__(self, x, *args):
        self.calls += 1
        self.rows += int(x.shape[0])
        return self.fn(x, *args)


class _AsModule(nn.Module):
    """DeepLift needs an nn.Module whose non-linear submodules it can hook."""

    def __init__(self, fn: Callable, model: nn.Module | None):
        super().__init__()
        self.fn = fn
        self.inner = model

    def forward(self, x, *args):
        return self.fn(x, *args)


def _captum(method: str, fwd: Callable, module: nn.Module | None = None):
    # heavy: captum is imported when an attribution runs
    import captum.attr as ca

    if method in ("deeplift", "deeplift_shap"):
        mod = _AsModule(fwd, module)
        return (ca.DeepLift if method == "deeplift" else ca.DeepLiftShap)(mod)
    cls = {
        "ig": ca.IntegratedGradients, "saliency": ca.Saliency, "input_x_gradient": ca.InputXGradient,
        "gradient_shap": ca.GradientShap, "kernel_shap": ca.KernelShap, "shapley": ca.ShapleyValueSampling,
        "shapley_exact": ca.ShapleyValues, "feature_ablation": ca.FeatureAblation, "occlusion": ca.Occlusion,
    }[method]
    return cls(fwd)


def _method_kwargs(method: str, inputs, baselines, args, feature_mask, n_steps, internal_batch_size,
                   n_samples, perturbations_per_eval, window, stdevs) -> dict:
    kw: dict = {"additional_forward_args": args}
    if method == "ig":
        kw.update(baselines=baselines, n_steps=n_steps, internal_batch_size=internal_batch_size,
                  return_convergence_delta=True)
    elif method == "saliency":
        kw.update(abs=True)
    elif method in ("deeplift", "deeplift_shap"):
        kw.update(baselines=baselines, return_convergence_delta=True)
    elif method == "gradient_shap":
        kw.update(baselines=baselines, n_samples=n_samples, stdevs=stdevs, return_convergence_delta=True)
    elif method in ("kernel_shap", "shapley", "shapley_exact", "feature_ablation"):
        kw.update(baselines=baselines, feature_mask=feature_mask, perturbations_per_eval=perturbations_per_eval)
        if method in ("kernel_shap", "shapley"):
            kw.update(n_samples=n_samples)
    elif method == "occlusion":
        D = inputs.shape[-1]
        shape = (window,) + tuple(inputs.shape[2:-1]) + (D,) if inputs.dim() > 2 else (window,)
        strides = (1,) + tuple(inputs.shape[2:-1]) + (D,) if inputs.dim() > 2 else (1,)
        kw.update(baselines=baselines, sliding_window_shapes=shape, strides=strides,
                  perturbations_per_eval=perturbations_per_eval)
    return kw


def canonical_method(method: str) -> str:
    m = ALIASES.get(method.lower().replace("-", "_"), method.lower().replace("-", "_"))
    if m not in METHODS:
        raise ParameterError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    return m


def _steps_schedule(n_steps: int | str, default: Sequence[int] = AUTO_STEPS) -> tuple[int, ...]:
    if n_steps == "auto":
        return tuple(default)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ParameterError(f"n_steps must be a positive int or 'auto', got {n_steps!r}")
    return (int(n_steps),)


def attribute_tensor(
    forward_fn: Callable[..., torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor | float | None = None,
    method: str = "ig",
    additional_forward_args: tuple | None = None,
    feature_mask: torch.Tensor | None = None,
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    n_samples: int = 25,
    perturbations_per_eval: int = 1,
    window: int = 1,
    stdevs: float = 0.0,
    module: nn.Module | None = None,
) -> TensorAttribution:
    """Run one Captum method on a plain forward function ``f(inputs, *args) -> [rows]`` and count
    its evaluations. The building block of :func:`attribute`; also handy for analytic checks."""
    method = canonical_method(method)
    if method in LAYER:
        raise ParameterError(f"{method} needs a model layer: use attribute() or neuron_attribution()")
    fwd = _Counted(forward_fn)
    if baselines is None:
        baselines = torch.zeros_like(inputs)
    if method in ("deeplift_shap", "gradient_shap") and torch.is_tensor(baselines) and baselines.shape == inputs.shape:
        # a single reference: these methods need a distribution, so the reference is one sample
        baselines = baselines[:1]
    kw = _method_kwargs(method, inputs, baselines, additional_forward_args, feature_mask, n_steps,
                        internal_batch_size, n_samples, perturbations_per_eval, window, stdevs)
    algo = _captum(method, fwd, module)
    out = algo.attribute(inputs, **kw)
    attr, delta = (out if isinstance(out, tuple) and method in _HAS_DELTA else (out, None))
    return TensorAttribution(attr, delta, fwd.rows // max(1, inputs.shape[0]), fwd.calls)


# ----------------------------------------------------------------------------------------------
def _distribution(prep: Prepared, b: int, n_baselines: int, seed: int) -> torch.Tensor:
    """Reference distribution for SHAP methods: the token baseline plus copies whose content tokens
    are random vocabulary tokens."""
    g = torch.Generator().manual_seed(seed)
    emb = embedding_module(prep.adapter)
    ids = prep.batch.inputs["input_ids"][b : b + 1]
    att = prep.attributable[b : b + 1]
    out = [prep.base_embeds[b : b + 1]]
    vocab = emb.weight.shape[0] if hasattr(emb, "weight") else None
    for _ in range(max(0, n_baselines - 1)):
        if vocab is None:
            break
        rnd = torch.randint(0, vocab, ids.shape, generator=g).to(ids.device)
        with torch.no_grad():
            out.append(emb(torch.where(att, rnd, ids)))
    return torch.cat(out)


def rows_per_forward(internal_batch_size: int | None, tokens_per_forward: int | None, prep: Prepared) -> int | None:
    """Rows per forward for a prepared group: at most ``internal_batch_size`` and at most
    ``tokens_per_forward`` tokens (rows x padded length), but never fewer than the group's examples
    (Captum runs at least one step of every example per forward)."""
    rows = internal_batch_size
    if tokens_per_forward is not None:
        by_tokens = max(1, tokens_per_forward // max(1, prep.embeds.shape[1]))
        rows = by_tokens if rows is None else min(rows, by_tokens)
    return None if rows is None else max(rows, prep.n)


def _next_round(todo: list[int], deltas: list, previous: dict, gaps, tolerance: float) -> list[int]:
    """Examples that need more steps: not complete, and still converging (the last doubling changed
    the delta by more than a tenth of it). ``previous`` is updated in place."""
    out = []
    for b in todo:
        d = deltas[b]
        if d is None or is_complete(d, gaps[b], tolerance):
            continue
        p = previous.get(b)
        previous[b] = d
        if p is not None and abs(d - p) <= 0.1 * abs(d):
            continue
        out.append(b)
    return out


def _true_labels(true_labels, n: int) -> list:
    if true_labels is None or isinstance(true_labels, str | int):
        return [None if true_labels is None else str(true_labels)] * n
    vals = list(true_labels)
    if len(vals) != n:
        raise ParameterError(f"{len(vals)} true labels for {n} texts")
    return [None if v is None else str(v) for v in vals]


class AttributionMethod:
    """Captum-style object: ``AttributionMethod(adapter, "ig").attribute(texts, target)``.

    ``attribute`` validates and groups examples into batches of ``batch_size`` (padding only within
    a group); ``_attribute`` runs one prepared group.
    """

    def __init__(self, adapter: ModelAdapter, method: str = "ig", layer: str | None = None,
                 neuron: Neuron | str | None = None):
        self.adapter = adapter
        self.method = canonical_method(method)
        self.layer = layer
        self.neuron = Neuron.parse(neuron) if neuron is not None else None
        if self.method in ("layer_ig", "layer_conductance") and layer is None:
            self.layer = adapter.hidden_layers()[0]
        if self.method == "neuron_conductance":
            if self.neuron is None:
                raise ParameterError("neuron_conductance needs neuron='layer:unit'")
            self.layer = self.neuron.layer
        if self.layer is not None:
            size = adapter.check_layer(self.layer)
            if self.neuron is not None and self.neuron.unit >= size:
                raise AttributionError(f"{self.neuron} out of range: {self.layer} has {size} units")

    def attribute(
        self,
        texts,
        target: Target | str | None = None,
        baseline: str | int = "pad",
        n_steps: int | str = "auto",
        batch_size: int = 16,
        internal_batch_size: int | None = 256,
        tokens_per_forward: int | None = 512,
        n_samples: int = 25,
        perturbations_per_eval: int | None = None,
        window: int = 1,
        n_baselines: int = 5,
        stdevs: float = 0.0,
        position: int | None = None,
        seed: int = 0,
        progress: bool | None = None,
        delta_tolerance: float = DELTA_TOLERANCE,
        true_labels=None,
    ) -> ResultList:
        words, _ = as_word_lists(texts)
        target = parse_target(target, self.adapter)
        if not delta_tolerance > 0:
            raise ParameterError(f"delta_tolerance must be > 0, got {delta_tolerance}")
        schedule = _steps_schedule(n_steps, (NEURON_STEPS,) if self.method == "neuron_conductance" else AUTO_STEPS)
        labels = _true_labels(true_labels, len(words))
        if internal_batch_size is not None:
            batch_size = max(1, min(batch_size, internal_batch_size))
        if self.method in ("deeplift_shap", "gradient_shap", "kernel_shap"):
            batch_size = 1  # per-example reference distributions / samples
        # sorting by length keeps padding (wasted IG rows) low; results are returned in input order
        order = sorted(range(len(words)), key=lambda i: sum(len(w) + 1 for w in words[i]))
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        out: list[Attribution | None] = [None] * len(words)
        with eval_mode(self.adapter.model, freeze=True), seeded(seed):
            for grp in tqdm(groups, disable=True if progress is False else None, desc=self.method,
                            leave=False) if len(groups) > 1 else groups:
                prep = prepare(self.adapter, words, target, baseline, rows=grp)
                ibs = rows_per_forward(internal_batch_size, tokens_per_forward, prep)
                ppe = perturbations_per_eval or max(1, (ibs or 64) // prep.n)
                res = self._attribute(prep, str(target), schedule=schedule, internal_batch_size=ibs,
                                      n_samples=n_samples, perturbations_per_eval=ppe, window=window,
                                      n_baselines=n_baselines, stdevs=stdevs, position=position, seed=seed,
                                      delta_tolerance=delta_tolerance)
                for i, a in zip(grp, res):
                    a.true_label = labels[i]
                    out[i] = a
        results = ResultList(out)
        warn_incomplete([(a.method, a.delta, a.gap, a.delta_tolerance) for a in results])
        return results

    # -- one group ----------------------------------------------------------------------------
    def _run(self, prep: Prepared, idx: list[int], n_steps: int, *, internal_batch_size, n_samples,
             perturbations_per_eval, window, n_baselines, stdevs, position, seed):
        """Token scores ``[len(idx), T]`` and Captum's delta (or ``None``) for examples ``idx``."""
        m = self.method
        rows = internal_batch_size or max(64, len(idx))
        if m in ("layer_ig", "layer_conductance"):
            fn = layer_methods.layer_integrated_gradients if m == "layer_ig" else layer_methods.layer_conductance
            attr = fn(prep, self.layer, idx, n_steps, rows)
            if attr.dim() == 2:
                raise ParameterError(f"{self.layer} has one vector per example (no tokens): use neuron_attribution()")
            return attr.sum(-1), None
        if m == "neuron_conductance":
            attr = layer_methods.neuron_conductance(prep, self.layer, self.neuron.unit, idx, n_steps, rows, position)
            return attr.sum(-1), None
        grouped = m in ("kernel_shap", "shapley", "shapley_exact", "feature_ablation")
        inputs = prep.embeds[idx].clone().requires_grad_(m in GRADIENT)
        base = _distribution(prep, idx[0], n_baselines, seed) if m in ("deeplift_shap", "gradient_shap") \
            else prep.base_embeds[idx]
        res = attribute_tensor(
            prep.forward, inputs, base, m, additional_forward_args=prep.args(idx),
            feature_mask=prep.feature_mask()[idx] if grouped else None, n_steps=n_steps,
            internal_batch_size=internal_batch_size, n_samples=n_samples,
            perturbations_per_eval=perturbations_per_eval, window=window, stdevs=stdevs,
            module=prep.adapter.model,
        )
        a = res.attributions.detach().float()
        a = a.reshape(a.shape[0], a.shape[1], -1)
        if grouped:
            tok = a[..., 0]  # every element of a word group carries the word's value: read it once
        elif m == "occlusion":
            tok = a.mean(-1)
        else:
            tok = a.sum(-1)
        delta = None
        if res.delta is not None:
            dv = res.delta.detach().float().reshape(-1)
            # GradientShap reports one delta per sample; summarise by the mean
            delta = dv.reshape(len(idx), -1).mean(1) if dv.numel() % len(idx) == 0 else dv.mean().repeat(len(idx))
        return tok, delta

    def _attribute(self, prep: Prepared, target_name: str, *, schedule, delta_tolerance, **kw) -> list[Attribution]:
        m = self.method
        f_x = prep.value()
        f_b = prep.value(prep.base_embeds)
        n = prep.n
        toks: list = [None] * n
        deltas: list = [None] * n
        used: list = [None] * n
        todo = list(range(n))
        if m in INTEGRATED:
            previous: dict = {}
            for steps in schedule:
                tok, cdelta = self._run(prep, todo, steps, **kw)
                for j, b in enumerate(todo):
                    toks[b], used[b] = tok[j].cpu().numpy(), steps
                    deltas[b] = self._delta(prep, b, toks[b], cdelta, j, f_x, f_b)
                todo = _next_round(todo, deltas, previous, f_x - f_b, delta_tolerance)
                if not todo or m not in _HAS_DELTA:
                    break
        else:
            per = [[b] for b in todo] if m in ("deeplift_shap", "gradient_shap", "kernel_shap") else [todo]
            for idx in per:
                tok, cdelta = self._run(prep, idx, 0, **kw)
                for j, b in enumerate(idx):
                    toks[b] = tok[j].cpu().numpy()
                    deltas[b] = self._delta(prep, b, toks[b], cdelta, j, f_x, f_b)
        return [self._result(prep, b, toks[b], target_name, f_x[b], f_b[b], deltas[b], used[b], delta_tolerance)
                for b in range(n)]

    def _delta(self, prep, b, tok, cdelta, j, f_x, f_b) -> float | None:
        if self.method not in _HAS_DELTA:
            return None
        if self.method in _OWN_DELTA:
            # the delta describes the scores returned: all real tokens, specials included
            return float(self._masked(prep, b, tok).sum() - (f_x[b] - f_b[b]))
        return float(cdelta[j])

    def _masked(self, prep: Prepared, b: int, tok: np.ndarray) -> np.ndarray:
        T = prep.length(b)
        tok = np.asarray(tok[:T], dtype=np.float64)
        if self.method in _NO_BASELINE or self.method in PERTURBATION:
            tok = np.where(prep.attributable[b, :T].cpu().numpy(), tok, 0.0)
        return tok

    def _result(self, prep, b, tok, target_name, fx, fb, delta, n_steps, tolerance) -> Attribution:
        T = prep.length(b)
        wm = prep.word_mask(b)[:, :T]
        tok = self._masked(prep, b, tok)
        if self.method in ("kernel_shap", "shapley", "shapley_exact", "feature_ablation"):
            counts = wm.sum(1)
            word = np.array([tok[wm[w]][0] if counts[w] else 0.0 for w in range(len(wm))])
            wids = prep.batch.word_ids[b][:T]
            att = prep.attributable[b, :T].cpu().numpy()
            tok = np.array([word[w] / counts[w] if w is not None and w < len(word) and att[t] else 0.0
                            for t, w in enumerate(wids)])
        else:
            word = wm.astype(np.float64) @ tok
        extra = {}
        if self.layer is not None:
            extra["layer"] = self.layer
        if self.neuron is not None:
            extra["neuron"] = str(self.neuron)
        return Attribution(
            method=self.method, target=target_name, words=prep.words[b], tokens=prep.tokens(b),
            token_word_ids=prep.token_word_ids(b), token_scores=tok, word_scores=np.asarray(word, dtype=np.float64),
            f_x=float(fx), f_baseline=float(fb), delta=delta, n_evaluations=int(prep.counts[b]), extra=extra,
            description=prep.description(b), n_steps=n_steps, other_score=float(tok.sum() - word.sum()),
            delta_tolerance=tolerance, baseline=prep.baseline,
        )


def attribute(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None = None,
    method: str = "ig",
    layer: str | None = None,
    neuron: Neuron | str | None = None,
    **kw,
) -> Attribution | ResultList:
    """Attribute ``target`` to the words of each text.

    ``texts``: a string (returns one :class:`Attribution`) or a list of strings / word lists (returns
    a :class:`~finegrain.results.ResultList`). ``target``: a
    :class:`~finegrain.attribute.targets.Target` or a spec string such as ``"class:1"``,
    ``"next:pred"``, ``"next:e"``, ``"continuation: she"``; default: the predicted class / next token /
    masked token.

    ``baseline`` (what replaces the words in the reference input x'): ``"pad"`` (default; transformers:
    the tokenizer's pad token with special tokens kept, as in Captum's text tutorials; LSTM adapters:
    the padding index, which needs no pad token in a tokenizer — for textgenrnn index 0, the symbol
    of the 39-step empty context that precedes every text in training, i.e. the model's own "no
    character here"; for a user LSTM with ``nn.Embedding(padding_idx=...)`` a zero vector),
    ``"zero"`` (a zero embedding vector: defined for every model, but a point it never saw),
    ``"unk"``, ``"mask"``, ``"space"`` (character models) or a token id. Spaces between the words of
    a character model and special tokens are kept in the baseline.

    Other keyword arguments: ``n_steps`` (``"auto"``: see the module docstring; or an int),
    ``delta_tolerance`` (the completeness criterion, default 1%: results over it are flagged
    ``complete=False`` and a :class:`~finegrain.attribute._core.CompletenessWarning` is issued),
    ``batch_size`` (examples per group), ``internal_batch_size`` (rows per forward),
    ``tokens_per_forward`` (a bound on rows x padded length per forward, i.e. on the activations kept
    for the backward pass; ``None``: rows only), ``n_samples``, ``window`` (occlusion),
    ``n_baselines`` (SHAP reference distribution), ``position`` (neuron token for neuron conductance;
    default the flow through the unit at every real token), ``seed`` (sampling methods; the caller's
    global random state is untouched), ``true_labels`` (shown in records and HTML), ``progress``.
    """
    _, single = as_word_lists(texts)
    res = AttributionMethod(adapter, method, layer=layer, neuron=neuron).attribute(texts, target, **kw)
    return res[0] if single else res


# ----------------------------------------------------------------------------------------------
@dataclass
class LayerAttribution(CheckedResult):
    """Attributions of one example to every unit of a layer, per token: ``scores[token, unit]``
    (special tokens included; a hook point with one vector per example has one "token",
    ``"<example>"``), with ``index`` mapping units to :class:`Neuron` addresses. Unpacks as
    ``scores, index = neuron_attribution(adapter, "one text", ...)``. ``delta`` =
    ``scores.sum() - (f_x - f_baseline)`` (``None`` for gradient x activation); ``n_steps`` the
    integration steps used."""

    scores: np.ndarray
    index: NeuronIndex
    layer: str
    method: str
    tokens: list[str]
    token_word_ids: list[int | None]
    words: list[str]
    f_x: float
    f_baseline: float
    delta: float | None
    n_evaluations: int
    description: TargetDescription | None = None
    n_steps: int | None = None
    delta_tolerance: float = DELTA_TOLERANCE

    def __iter__(self):
        return iter((self.scores, self.index))

    _arrays = {"scores": np.float32}

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = super()._decode(d)
        d["index"] = NeuronIndex.from_neurons(d["index"])
        return d

    def neurons(self) -> list[Neuron]:
        return self.index.neurons()

    def word_scores(self) -> np.ndarray:
        """``[n_words, units]``: token scores summed within words."""
        out = np.zeros((len(self.words), self.scores.shape[1]))
        for t, w in enumerate(self.token_word_ids):
            if w is not None:
                out[w] += self.scores[t]
        return out

    def other_scores(self) -> np.ndarray:
        """``[units]``: the part of the scores at tokens of no word (special tokens, spaces), so that
        ``word_scores().sum(0) + other_scores() == scores.sum(0)``."""
        return self.scores.sum(0) - self.word_scores().sum(0)

    def top(self, k: int = 10) -> list[tuple[Neuron, float]]:
        """Neurons with the largest total attribution (over tokens)."""
        return _top_units(self.index, self.scores.sum(0), k)

    def table(self, k: int = 10) -> str:
        lines = [f"{self.method} at {self.layer}: {' '.join(self.words)!r}, {self.scores.shape[1]} units"]
        if self.description is not None:
            lines.append(f"explains: {self.description.text}")
        lines.append(_layer_check_line(self))
        lines.append("top units (total over tokens):")
        lines += [f"  {n}  {v:+.4g}" for n, v in self.top(k)]
        return "\n".join(lines)

    def plot(self, path, k: int = 12) -> object:
        """Tokens x top-``k`` units as a diverging heatmap (PNG)."""
        return _plot_layer(self, path, k)


def _top_units(index: NeuronIndex, totals: np.ndarray, k: int) -> list[tuple[Neuron, float]]:
    order = np.argsort(-np.abs(totals))[:k]
    return [(index.neuron(int(i)), float(totals[i])) for i in order]


def _layer_check_line(r: LayerAttribution) -> str:
    d = "n/a" if r.delta is None else f"{float(r.delta):.4g}"
    c = r.complete
    verdict = "" if c is None else ("  complete" if c else "  INCOMPLETE")
    steps = "" if r.n_steps is None else f"  steps={r.n_steps}"
    return f"f(x)-f(x')={r.gap:.4g}  delta={d}{verdict}{steps}  evaluations={r.n_evaluations}"


def _plot_layer(r: LayerAttribution, path, k: int) -> object:
    # heavy: matplotlib, imported when a picture is drawn
    from finegrain.viz.plots import plot_matrix

    units = [n.unit for n, _ in r.top(k)]
    return plot_matrix(r.scores[:, units].T, path, row_labels=[str(r.index.neuron(u)) for u in units],
                       col_labels=r.tokens, title=f"{r.method} at {r.layer}", center=0.0, colorbar_label="attribution")


class LayerAttributionList(AggregateList):
    """:func:`neuron_attribution` of a list of texts: one :class:`LayerAttribution` per text (list in,
    list out), plus the batch view over them: ``scores [B, T, units]`` (zero-padded to the longest
    example), ``f_x`` / ``f_baseline`` / ``delta`` / ``n_evaluations`` arrays, ``complete`` and
    ``n_steps`` per example, ``word_scores(b)``, ``other_scores(b)`` and ``top(k)`` over all examples."""

    @property
    def scores(self) -> np.ndarray:
        T = max(r.scores.shape[0] for r in self)
        out = np.zeros((len(self), T, self[0].scores.shape[1]), dtype=np.float32)
        for i, r in enumerate(self):
            out[i, : r.scores.shape[0]] = r.scores
        return out

    # the batch view: per-example fields in the order of the examples (``index`` is the neurons'
    # NeuronIndex, as on each item; it shadows list.index, which a list of results has no use for)
    index = property(lambda self: self[0].index)
    layer = property(lambda self: self[0].layer)
    method = property(lambda self: self[0].method)
    delta_tolerance = property(lambda self: self[0].delta_tolerance)
    tokens = property(lambda self: [r.tokens for r in self])
    token_word_ids = property(lambda self: [r.token_word_ids for r in self])
    words = property(lambda self: [r.words for r in self])
    n_steps = property(lambda self: [r.n_steps for r in self])
    complete = property(lambda self: [r.complete for r in self])
    descriptions = property(lambda self: [r.description for r in self])
    f_x = property(lambda self: np.array([r.f_x for r in self]))
    f_baseline = property(lambda self: np.array([r.f_baseline for r in self]))
    n_evaluations = property(lambda self: np.array([r.n_evaluations for r in self]))

    @property
    def delta(self) -> np.ndarray | None:
        return None if self[0].delta is None else np.array([r.delta for r in self], dtype=np.float64)

    def neurons(self) -> list[Neuron]:
        return self[0].neurons()

    def word_scores(self, b: int) -> np.ndarray:
        return self[b].word_scores()

    def other_scores(self, b: int) -> np.ndarray:
        return self[b].other_scores()

    def top(self, k: int = 10, b: int | None = None) -> list[tuple[Neuron, float]]:
        """Neurons with the largest total attribution over tokens (one example, or all)."""
        if b is not None:
            return self[b].top(k)
        return _top_units(self[0].index, sum(r.scores.sum(0) for r in self), k)

    def table(self, k: int = 10) -> str:
        first = self[0]
        lines = [f"{first.method} at {first.layer}: {len(self)} example(s), {first.scores.shape[1]} units"]
        if first.description is not None:
            lines.append(f"explains: {first.description.text}" + (" (first example)" if len(self) > 1 else ""))
        lines += [f"  example {i}: {_layer_check_line(r)}" for i, r in enumerate(self)]
        lines.append("top units (total over tokens and examples):")
        lines += [f"  {n}  {v:+.4g}" for n, v in self.top(k)]
        return "\n".join(lines)

    def plot(self, path, k: int = 12) -> object:
        """Tokens x top-``k`` units of the first example as a diverging heatmap (PNG)."""
        return _plot_layer(self[0], path, k)


def neuron_attribution(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None = None,
    layer: str = "layer.1",
    method: str = "conductance",
    baseline: str | int = "pad",
    n_steps: int | str = "auto",
    batch_size: int = 16,
    internal_batch_size: int | None = 256,
    tokens_per_forward: int | None = 512,
    delta_tolerance: float = DELTA_TOLERANCE,
) -> LayerAttribution | LayerAttributionList:
    """Attribution of ``target`` to all units of ``layer`` at every token: one
    :class:`LayerAttribution` for a string, a :class:`LayerAttributionList` (one per text, with the
    batch view ``.scores [B, T, units]``) for a list.

    ``method``: ``conductance`` (Dhamdhere et al. 2018; completeness holds for whole hidden states
    ``layer.i`` that every path crosses, not for sublayers beside the residual stream), ``layer_ig``
    (Integrated Gradients in the layer's activation space) or ``grad_x_act``. Works on every adapter
    through its hook points (see :mod:`finegrain.attribute.layer`); ``n_steps="auto"`` doubles the steps
    per example until the delta is within ``delta_tolerance`` of the gap.
    """
    m = {"conductance": "conductance", "layer_conductance": "conductance", "layer_ig": "layer_ig",
         "grad_x_act": "grad_x_act", "gradient_x_activation": "grad_x_act"}.get(method)
    if m is None:
        raise ParameterError(f"unknown layer method {method!r}; use conductance, layer_ig or grad_x_act")
    size = adapter.check_layer(layer)
    words, single = as_word_lists(texts)
    target = parse_target(target, adapter)
    schedule = _steps_schedule(n_steps)
    if internal_batch_size is not None:
        batch_size = max(1, min(batch_size, internal_batch_size))
    index = NeuronIndex({layer: size})
    results: list[LayerAttribution] = []
    fn = layer_methods.layer_conductance if m == "conductance" else layer_methods.layer_integrated_gradients
    with eval_mode(adapter.model, freeze=True):
        for s in range(0, len(words), batch_size):
            prep = prepare(adapter, words, target, baseline, rows=range(s, min(s + batch_size, len(words))))
            rows = rows_per_forward(internal_batch_size, tokens_per_forward, prep) or max(64, prep.n)
            f_x, f_b = prep.value(), prep.value(prep.base_embeds)
            out: list = [None] * prep.n
            dl: list = [None] * prep.n
            st: list = [None] * prep.n
            todo = list(range(prep.n))
            previous: dict = {}
            if m == "grad_x_act":
                a = layer_methods.gradient_x_activation(prep, layer, todo).detach().float()
                out = list(a if a.dim() == 3 else a.unsqueeze(1))
            else:
                for steps in schedule:
                    a = fn(prep, layer, todo, steps, rows).detach().float()
                    a = a if a.dim() == 3 else a.unsqueeze(1)
                    for j, b in enumerate(todo):
                        T = prep.length(b) if a.shape[1] > 1 else 1
                        out[b], st[b] = a[j], steps
                        dl[b] = float(a[j, :T].sum()) - float(f_x[b] - f_b[b])
                    todo = _next_round(todo, dl, previous, f_x - f_b, delta_tolerance)
                    if not todo:
                        break
            for b in range(prep.n):
                flat = out[b].shape[0] == 1 and prep.length(b) > 1
                T = 1 if flat else prep.length(b)
                results.append(LayerAttribution(
                    out[b][:T].cpu().numpy(), index, layer, m, ["<example>"] if flat else prep.tokens(b),
                    [None] if flat else prep.token_word_ids(b), prep.words[b], float(f_x[b]), float(f_b[b]),
                    dl[b], int(prep.counts[b]), prep.description(b), st[b], delta_tolerance))
    if m != "grad_x_act":
        warn_incomplete([(r.method, r.delta, r.gap, r.delta_tolerance) for r in results], "layer attribution")
    return results[0] if single else LayerAttributionList(results)


def top_neurons(result: LayerAttribution | LayerAttributionList, k: int = 10) -> list[tuple[Neuron, float]]:
    """Shortcut for :meth:`LayerAttribution.top`."""
    return result.top(k)


class AttributionComparison(dict, Result):
    """``{method: ResultList of Attribution}`` for the same examples (:func:`compare_methods`)."""

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "methods": {m: r.to_dict() for m, r in self.items()}}

    @classmethod
    def from_dict(cls, d) -> AttributionComparison:
        return cls({m: ResultList.from_dict(r) for m, r in d.get("methods", {}).items()})

    def table(self) -> str:
        methods = list(self)
        if not methods:
            return "(no methods)"
        lines = []
        for i, first in enumerate(self[methods[0]]):
            d = first.description
            lines.append(f"example {i}: {' '.join(first.words)}" + (f"  [{d.text}]" if d else ""))
            width = max([4] + [len(w) for w in first.words])
            lines.append("  " + "word".ljust(width) + "".join(f"  {m[:12]:>12}" for m in methods))
            for j, w in enumerate(first.words):
                lines.append("  " + w.ljust(width) + "".join(f"  {self[m][i].word_scores[j]:>12.4g}" for m in methods))
        return "\n".join(lines)

    def plot(self, path) -> object:
        """Word heatmaps of the first example, one row per method."""
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.attribution import plot_word_heatmap

        methods = list(self)
        rows = [self[m][0] for m in methods]
        return plot_word_heatmap([r.words for r in rows], [r.word_scores for r in rows], path,
                                 captions=[f"{m}  total={r.total:.3g}" for m, r in zip(methods, rows)])


def compare_methods(adapter: ModelAdapter, texts, target=None, methods: Sequence[str] = ("ig", "saliency"),
                    **kw) -> AttributionComparison:
    """Run several methods on the same examples: ``{method: ResultList of Attribution}``."""
    words, _ = as_word_lists(texts)
    return AttributionComparison({m: AttributionMethod(adapter, m).attribute(words, target, **kw) for m in methods})
