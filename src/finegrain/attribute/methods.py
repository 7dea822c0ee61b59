"""Token-, word-, layer- and neuron-level attribution through Captum.

Captum computes; finegrain supplies the forward function (target(model(inputs_embeds)) per row, see
:mod:`finegrain.attribute._core`), token baselines that keep special tokens, batching of examples
with a bound on rows per forward (``internal_batch_size``), word aggregation, evaluation counts and
the completeness gap.

Methods (``attribute(..., method=...)``): ``ig`` (Sundararajan et al. 2017), ``saliency``,
``input_x_gradient``, ``deeplift`` / ``deeplift_shap`` (Shrikumar et al. 2017), ``gradient_shap``,
``kernel_shap``, ``shapley`` (sampling) / ``shapley_exact`` (Lundberg & Lee 2017), ``feature_ablation``,
``occlusion``; layer-level ``layer_ig``, ``layer_conductance`` (Dhamdhere et al. 2018) summed over the
units of ``layer``; ``neuron_conductance`` of ``neuron`` to the input tokens.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from finegrain.attribute._core import AttributionError, Prepared, as_word_lists, eval_mode, prepare
from finegrain.attribute.targets import Target, parse_target
from finegrain.models.base import ModelAdapter
from finegrain.neurons import Neuron, NeuronIndex

GRADIENT = ("ig", "saliency", "input_x_gradient", "deeplift", "deeplift_shap", "gradient_shap")
PERTURBATION = ("kernel_shap", "shapley", "shapley_exact", "feature_ablation", "occlusion")
LAYER = ("layer_ig", "layer_conductance", "neuron_conductance")
METHODS = GRADIENT + PERTURBATION + LAYER
ALIASES = {"integrated_gradients": "ig", "ixg": "input_x_gradient", "lime": "kernel_shap",
           "ablation": "feature_ablation", "conductance": "layer_conductance", "dl": "deeplift",
           "svs": "shapley", "gshap": "gradient_shap"}
_HAS_DELTA = ("ig", "deeplift", "deeplift_shap", "gradient_shap", "layer_ig", "layer_conductance")


# ----------------------------------------------------------------------------------------------
@dataclass
class Attribution:
    """Attribution of one example. ``delta`` = sum(attributions) - (f(x) - f(x')) where the method
    has a completeness property (Captum's convergence delta), else ``None``."""

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

    @property
    def total(self) -> float:
        return float(np.sum(self.word_scores))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["token_scores"] = [float(x) for x in self.token_scores]
        d["word_scores"] = [float(x) for x in self.word_scores]
        d["extra"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.extra.items()}
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        from finegrain.attribute.render import text_table

        return text_table(self)

    def html(self) -> str:
        from finegrain.attribute.render import html_heatmap

        return html_heatmap([self])


@dataclass
class TensorAttribution:
    """Result of :func:`attribute_tensor`: raw Captum attributions on plain tensors."""

    attributions: torch.Tensor
    delta: torch.Tensor | None
    n_evaluations: int
    n_calls: int


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
    elif method == "deeplift":
        kw.update(baselines=baselines, return_convergence_delta=True)
    elif method == "deeplift_shap":
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
        raise AttributionError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    return m


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
        raise AttributionError(f"{method} needs a model layer: use attribute() or neuron_attribution()")
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
class _Tap(nn.Module):
    """Identity module spliced into a hook point so that Captum's layer methods can hook it."""

    def forward(self, x):
        return x.clone()


@contextlib.contextmanager
def tapped(adapter: ModelAdapter, layer: str):
    """Route the activation at ``layer`` through a fresh identity module (removed on exit)."""
    adapter.check_layer(layer)
    tap = _Tap()
    with adapter.hooks({layer: lambda act, step: tap(act)}):
        yield tap


def _distribution(prep: Prepared, b: int, n_baselines: int, seed: int) -> torch.Tensor:
    """Reference distribution for SHAP methods: the token baseline plus copies whose content tokens
    are random vocabulary tokens."""
    from finegrain.attribute._core import embedding_module

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
            self.layer = "layer.0"
        if self.method == "neuron_conductance":
            if self.neuron is None:
                raise AttributionError("neuron_conductance needs neuron='layer.i:unit'")
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
        n_steps: int = 50,
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
    ) -> list[Attribution]:
        words, _ = as_word_lists(texts)
        target = parse_target(target, self.adapter)
        if internal_batch_size is not None:
            batch_size = max(1, min(batch_size, internal_batch_size))
        if self.method in ("deeplift_shap", "gradient_shap", "kernel_shap", "neuron_conductance"):
            batch_size = 1  # per-example reference distributions / selectors
        from tqdm.auto import tqdm

        # sorting by length keeps padding (wasted IG rows) low; results are returned in input order
        order = sorted(range(len(words)), key=lambda i: sum(len(w) + 1 for w in words[i]))
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        out: list[Attribution | None] = [None] * len(words)
        torch.manual_seed(seed)
        with eval_mode(self.adapter.model):
            for grp in tqdm(groups, disable=True if progress is False else None, desc=self.method,
                            leave=False) if len(groups) > 1 else groups:
                prep = prepare(self.adapter, [words[i] for i in grp], target, baseline)
                ibs = rows_per_forward(internal_batch_size, tokens_per_forward, prep)
                ppe = perturbations_per_eval or max(1, (ibs or 64) // prep.n)
                res = self._attribute(prep, str(target), n_steps=n_steps, internal_batch_size=ibs,
                                      n_samples=n_samples, perturbations_per_eval=ppe, window=window,
                                      n_baselines=n_baselines, stdevs=stdevs, position=position, seed=seed)
                for i, a in zip(grp, res):
                    out[i] = a
        return out

    def _attribute(self, prep: Prepared, target_name: str, *, n_steps, internal_batch_size, n_samples,
                   perturbations_per_eval, window, n_baselines, stdevs, position, seed) -> list[Attribution]:
        import captum.attr as ca

        m = self.method
        f_x = prep.value()
        f_b = prep.value(prep.base_embeds)
        inputs = prep.embeds.clone().requires_grad_(m in GRADIENT or m in LAYER)
        args = prep.args()
        delta = None
        grouped = m in ("kernel_shap", "shapley", "shapley_exact", "feature_ablation")
        if m in GRADIENT or m in PERTURBATION:
            if m in ("deeplift_shap", "gradient_shap"):
                base = _distribution(prep, 0, n_baselines, seed)
            else:
                base = prep.base_embeds
            res = attribute_tensor(
                prep.forward, inputs, base, m, additional_forward_args=args,
                feature_mask=prep.feature_mask() if grouped else None, n_steps=n_steps,
                internal_batch_size=internal_batch_size, n_samples=n_samples,
                perturbations_per_eval=perturbations_per_eval, window=window, stdevs=stdevs,
                module=prep.adapter.model,
            )
            attr, delta = res.attributions, res.delta
        else:
            with tapped(prep.adapter, self.layer) as tap:
                if m == "layer_ig":
                    algo = ca.LayerIntegratedGradients(prep.forward, tap)
                    attr, delta = algo.attribute(inputs, baselines=prep.base_embeds, additional_forward_args=args,
                                                 n_steps=n_steps, internal_batch_size=internal_batch_size,
                                                 return_convergence_delta=True)
                elif m == "layer_conductance":
                    algo = ca.LayerConductance(prep.forward, tap)
                    attr, delta = algo.attribute(inputs, baselines=prep.base_embeds, additional_forward_args=args,
                                                 n_steps=n_steps, internal_batch_size=internal_batch_size,
                                                 return_convergence_delta=True)
                else:
                    unit = self.neuron.unit
                    if position is None:
                        sel: object = _sum_over_tokens(unit, prep.batch.attention_mask)
                    else:
                        sel = (position, unit)
                    algo = ca.NeuronConductance(prep.forward, tap)
                    with _quiet():
                        attr = algo.attribute(inputs, neuron_selector=sel, baselines=prep.base_embeds,
                                              additional_forward_args=args, n_steps=n_steps,
                                              internal_batch_size=internal_batch_size)
        results = []
        for b in range(prep.n):
            a = attr[b].detach().float()
            if grouped:
                # every element of a word group carries the word's value: read it once
                tok = a.reshape(a.shape[0], -1)[:, 0].cpu().numpy()
            elif m == "occlusion":
                tok = a.reshape(a.shape[0], -1).mean(-1).cpu().numpy()
            else:
                tok = a.reshape(a.shape[0], -1).sum(-1).cpu().numpy()
            results.append(self._result(prep, b, tok, grouped, target_name, f_x[b], f_b[b], delta))
        return results

    def _result(self, prep, b, tok, grouped, target_name, fx, fb, delta) -> Attribution:
        T = int(prep.batch.attention_mask[b].sum())
        wm = prep.word_mask(b)[:, :T]
        att = prep.attributable[b, :T].cpu().numpy()
        tok = np.where(att, tok[:T], 0.0)
        if grouped:
            counts = wm.sum(1)
            word = np.array([tok[wm[w]][0] if counts[w] else 0.0 for w in range(len(wm))])
            tok = np.array([word[w] / counts[w] if w is not None and w < len(word) and att[t] else 0.0
                            for t, w in enumerate(prep.batch.word_ids[b][:T])])
        else:
            word = wm.astype(tok.dtype) @ tok
        d = None
        if delta is not None:
            dv = delta.detach().float().reshape(-1)
            # GradientShap reports one delta per sample; summarise by the mean
            d = float(dv.reshape(prep.n, -1)[b].mean()) if dv.numel() % prep.n == 0 else float(dv.mean())
        extra = {}
        if self.layer is not None:
            extra["layer"] = self.layer
        if self.neuron is not None:
            extra["neuron"] = str(self.neuron)
        return Attribution(
            method=self.method, target=target_name, words=prep.words[b], tokens=prep.tokens(b),
            token_word_ids=[w if att[t] else None for t, w in enumerate(prep.batch.word_ids[b][:T])],
            token_scores=tok.astype(np.float64), word_scores=np.asarray(word, dtype=np.float64),
            f_x=float(fx), f_baseline=float(fb), delta=d, n_evaluations=int(prep.counts[b]), extra=extra,
        )


def _sum_over_tokens(unit: int, mask: torch.Tensor):
    def sel(layer_out):
        # rows of a NeuronConductance batch are expansions of the single example being attributed
        m = mask[0, : layer_out.shape[1]].to(layer_out.dtype)
        return (layer_out[..., unit] * m).sum(-1)

    return sel


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def attribute(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None = None,
    method: str = "ig",
    layer: str | None = None,
    neuron: Neuron | str | None = None,
    **kw,
) -> Attribution | list[Attribution]:
    """Attribute ``target`` to the words of each text with a Captum method.

    ``texts``: a string (returns one :class:`Attribution`) or a list of strings / word lists (returns
    a list). ``target``: a :class:`~finegrain.attribute.targets.Target` or a spec string such as
    ``"class:1"``; default: the predicted class / next token / masked token. Keyword arguments:
    ``baseline`` (``pad``|``mask``|``unk``|token id), ``n_steps``, ``batch_size`` (examples per
    group), ``internal_batch_size`` (rows per forward), ``tokens_per_forward`` (a bound on rows x
    padded length per forward, i.e. on the activations kept for the backward pass, whatever the
    text length; ``None``: rows only), ``n_samples``, ``window`` (occlusion),
    ``n_baselines`` (SHAP reference distribution), ``position`` (neuron token for neuron
    conductance; default the sum over tokens).
    """
    _, single = as_word_lists(texts)
    res = AttributionMethod(adapter, method, layer=layer, neuron=neuron).attribute(texts, target, **kw)
    return res[0] if single else res


# ----------------------------------------------------------------------------------------------
@dataclass
class LayerAttribution:
    """Attributions to every unit of a layer, per token: ``scores[example, token, unit]`` (zero at
    padding), with ``index`` mapping units to :class:`Neuron` addresses. Unpacks as
    ``scores, index = neuron_attribution(...)``."""

    scores: np.ndarray
    index: NeuronIndex
    layer: str
    method: str
    tokens: list[list[str]]
    token_word_ids: list[list[int | None]]
    words: list[list[str]]
    f_x: np.ndarray
    f_baseline: np.ndarray
    delta: np.ndarray | None
    n_evaluations: np.ndarray

    def __iter__(self):
        return iter((self.scores, self.index))

    def neurons(self) -> list[Neuron]:
        return self.index.neurons()

    def word_scores(self, b: int) -> np.ndarray:
        """``[n_words, units]``: token scores of example ``b`` summed within words."""
        out = np.zeros((len(self.words[b]), self.scores.shape[2]))
        for t, w in enumerate(self.token_word_ids[b]):
            if w is not None:
                out[w] += self.scores[b, t]
        return out

    def top(self, k: int = 10, b: int | None = None) -> list[tuple[Neuron, float]]:
        """Neurons with the largest total attribution (over tokens; one example or all)."""
        s = self.scores.sum(1) if b is None else self.scores[b : b + 1].sum(1)
        tot = s.sum(0)
        order = np.argsort(-np.abs(tot))[:k]
        return [(self.index.neuron(int(i)), float(tot[i])) for i in order]


def neuron_attribution(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None = None,
    layer: str = "layer.1",
    method: str = "conductance",
    baseline: str | int = "pad",
    n_steps: int = 50,
    batch_size: int = 16,
    internal_batch_size: int | None = 256,
    tokens_per_forward: int | None = 512,
) -> LayerAttribution:
    """Attribution of ``target`` to all units of ``layer`` at every token.

    ``method``: ``conductance`` (Captum LayerConductance; completeness holds for whole hidden states
    ``layer.i`` that every path crosses, not for sublayers beside the residual stream),
    ``layer_ig`` (Integrated Gradients in the layer's activation space) or ``grad_x_act``.
    """
    import captum.attr as ca

    m = {"conductance": "conductance", "layer_conductance": "conductance", "layer_ig": "layer_ig",
         "grad_x_act": "grad_x_act", "gradient_x_activation": "grad_x_act"}.get(method)
    if m is None:
        raise AttributionError(f"unknown layer method {method!r}; use conductance, layer_ig or grad_x_act")
    size = adapter.check_layer(layer)
    words, _ = as_word_lists(texts)
    target = parse_target(target, adapter)
    if internal_batch_size is not None:
        batch_size = max(1, min(batch_size, internal_batch_size))
    parts, toks, wids, wl, fx, fb, deltas, evals = [], [], [], [], [], [], [], []
    with eval_mode(adapter.model):
        for s in range(0, len(words), batch_size):
            prep = prepare(adapter, words[s : s + batch_size], target, baseline)
            ibs = rows_per_forward(internal_batch_size, tokens_per_forward, prep)
            f_x, f_b = prep.value(), prep.value(prep.base_embeds)
            inputs = prep.embeds.clone().requires_grad_(True)
            with tapped(adapter, layer) as tap:
                if m == "grad_x_act":
                    attr = ca.LayerGradientXActivation(prep.forward, tap).attribute(
                        inputs, additional_forward_args=prep.args())
                    delta = None
                else:
                    cls = ca.LayerConductance if m == "conductance" else ca.LayerIntegratedGradients
                    attr, delta = cls(prep.forward, tap).attribute(
                        inputs, baselines=prep.base_embeds, additional_forward_args=prep.args(), n_steps=n_steps,
                        internal_batch_size=ibs, return_convergence_delta=True)
            attr = attr.detach().float()
            if attr.dim() == 2:  # a layer with one vector per example
                attr = attr.unsqueeze(1)
            for b in range(prep.n):
                T = int(prep.batch.attention_mask[b].sum())
                parts.append(attr[b, :T].cpu().numpy())
                toks.append(prep.tokens(b))
                wids.append([w if prep.attributable[b, t] else None for t, w in enumerate(prep.batch.word_ids[b][:T])])
                wl.append(prep.words[b])
                fx.append(f_x[b])
                fb.append(f_b[b])
                deltas.append(float(delta.reshape(-1)[b]) if delta is not None else np.nan)
                evals.append(int(prep.counts[b]))
    T = max(p.shape[0] for p in parts)
    scores = np.zeros((len(parts), T, size), dtype=np.float32)
    for i, p in enumerate(parts):
        scores[i, : p.shape[0]] = p
    return LayerAttribution(
        scores, NeuronIndex({layer: size}), layer, m, toks, wids, wl, np.array(fx), np.array(fb),
        None if m == "grad_x_act" else np.array(deltas), np.array(evals),
    )


def top_neurons(result: LayerAttribution, k: int = 10) -> list[tuple[Neuron, float]]:
    """Shortcut for :meth:`LayerAttribution.top`."""
    return result.top(k)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def compare_methods(adapter: ModelAdapter, texts, target=None, methods: Sequence[str] = ("ig", "saliency"),
                    **kw) -> dict[str, list[Attribution]]:
    """Run several methods on the same examples: ``{method: [Attribution, ...]}``."""
    words, _ = as_word_lists(texts)
    return {m: AttributionMethod(adapter, m).attribute(words, target, **kw) for m in methods}
