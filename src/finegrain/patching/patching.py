"""Activation patching and attribution patching over layers x positions.

Activation patching (Meng et al. 2022, "Locating and editing factual associations in GPT"; Heimersheim &
Nanda 2024, "How to use and interpret activation patching"; Wang et al. 2023 for heads) runs a *clean* and a
*corrupted* input and copies one component's activation at some token positions from one run into the other:

* ``direction="denoise"``: the corrupted run receives the clean activation (is the component *sufficient* to
  restore the clean behaviour?);
* ``direction="noise"``: the clean run receives the corrupted activation (is it *necessary*?).

Both report the metric ``m`` of the patched run and the normalised effect
``(m_patched - m_corrupt) / (m_clean - m_corrupt)``: 1 = the clean value, 0 = the corrupted value (so in
noising, 1 means the patch changed nothing and 0 means it destroyed the behaviour). For a monotone metric
and a component that carries the whole signal the effect is 1; effects outside [0, 1] mean the patch
overshoots or reverses the metric.

Components are hook points of the adapter: residual stream ``layer.i`` (LSTMs: ``embedding``, ``lstm.i``),
``layer.i.mlp``, ``layer.i.attn`` (the concatenated head outputs, input of the output projection), single heads
(the units of one head of ``layer.i.attn``), LSTM cells ``lstm.i.cell``, or any neuron addresses. A patch sets
the component's units at the patched positions to the other run's values and lets everything downstream be
recomputed; for LSTMs the hook runs per time step, so a patch at step t reaches steps > t through the
recurrence.

Token alignment: the clean and corrupted inputs must have the same number of tokens (as in TransformerLens);
position t of one run is position t of the other. Inputs of different lengths are refused, since a position
would have no counterpart. Patched runs are batched: ``batch_size`` (component, position) cells per forward.

Attribution patching (Nanda 2023, "Attribution patching: activation patching at industrial scale") estimates
every cell at once to first order: ``(a_source - a_base) . dm/da`` with the gradient taken on the base run
(the corrupted run when denoising), one forward and one backward for the whole grid. With
``method="both"`` the result carries both and their agreement (Pearson, Spearman, largest error), since the
estimate is only as good as the metric is linear in the patched activation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.errors import FinegrainError, ParameterError
from finegrain.intervene import Head, PerRow, intervene, resolve_neurons
from finegrain.intervene.scoring import repeat_batch
from finegrain.models.base import Batch, ModelAdapter, preserved_state
from finegrain.neurons import Neuron
from finegrain.patching.metric import BoundMetric, PatchMetric, output_logits
from finegrain.results import Result, ResultList

KINDS = ("resid", "mlp", "attn", "heads", "cell")
DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution", "both")


@dataclass(frozen=True)
class Component:
    """One row of a patching grid: units ``units`` of hook point ``layer`` (``None`` = all of them)."""

    label: str
    layer: str
    units: tuple[int, ...] | None = None


def components_of(adapter: ModelAdapter, spec: str | Sequence = "resid") -> list[Component]:
    """The rows a spec names: a kind (``resid``, ``mlp``, ``attn``, ``heads``, ``cell``) or a list of layer
    names, neuron addresses (``"layer.3:117"``) and :class:`~finegrain.intervene.Head` objects."""
    if isinstance(spec, str) and spec in KINDS:
        sizes = adapter.layers()
        if spec == "resid":
            return [Component(lay, lay) for lay in adapter.hidden_layers()]
        suffix = {"mlp": ".mlp", "attn": ".attn", "heads": ".attn", "cell": ".cell"}[spec]
        layers = [lay for lay in sizes if lay.endswith(suffix)]
        if not layers:
            raise ParameterError(f"{adapter.name} has no {spec} components (its layers: {', '.join(sizes)})")
        if spec != "heads":
            return [Component(lay, lay) for lay in layers]
        out = []
        for lay in layers:
            n_heads, _ = adapter.heads(lay)
            out += [Component(f"{lay} head {h}", lay, tuple(resolve_neurons(adapter, Head(lay, h))[lay]))
                    for h in range(n_heads)]
        return out
    items = [spec] if isinstance(spec, str | Neuron | Head) else list(spec)
    if not items:
        raise ParameterError("components is empty")
    out = []
    for item in items:
        if isinstance(item, str) and "," in item:
            raise ParameterError(f"components: give a list, not the comma-separated string {item!r}")
        try:
            units = resolve_neurons(adapter, item)
        except FinegrainError:
            raise
        except ValueError as e:  # Neuron.parse on a malformed address
            raise ParameterError(f"components: {e}") from None
        (layer, us), = units.items()  # every item names units of one layer
        if isinstance(item, Head):
            out.append(Component(f"{item.layer} head {item.head}", layer, tuple(us)))
        elif isinstance(item, str) and ":" not in item:
            out.append(Component(layer, layer))
        else:
            out.append(Component(str(Neuron.parse(item)), layer, tuple(us)))
    return out


def _columns(positions, T: int) -> list[list[int]]:
    if positions == "each":
        return [[t] for t in range(T)]
    if positions == "all":
        return [list(range(T))]
    if isinstance(positions, int):
        positions = [positions]
    cols = []
    for p in positions:
        group = [p] if isinstance(p, int | np.integer) else list(p)
        for q in group:
            if not -T <= int(q) < T:
                raise ParameterError(f"position {q} out of range for inputs of {T} tokens")
        cols.append(sorted({int(q) % T for q in group}))
    if not cols:
        raise ParameterError("positions is empty")
    return cols


@dataclass
class PatchingResult(Result):
    """A component x position grid of patching effects.

    ``effects[r][c]`` is the metric of the run patched at component ``rows[r]`` and positions
    ``column_positions[c]`` (exact patching; for ``method="attribution"`` the first-order estimate
    ``m_base + attribution``); ``attribution[r][c]`` the estimated change of the metric (attribution
    patching) when computed; :attr:`normalised` is ``(m - m_corrupt) / (m_clean - m_corrupt)``.
    """

    kind = "patching"
    model: str = ""
    method: str = "exact"
    direction: str = "denoise"
    metric: str = ""
    clean: str = ""
    corrupt: str = ""
    rows: list[str] = field(default_factory=list)
    row_layers: list[str] = field(default_factory=list)
    row_units: list[list[int] | None] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    column_positions: list[list[int]] = field(default_factory=list)
    tokens_clean: list[str] = field(default_factory=list)
    tokens_corrupt: list[str] = field(default_factory=list)
    m_clean: float = math.nan
    m_corrupt: float = math.nan
    effects: list[list[float]] | None = None
    attribution: list[list[float]] | None = None
    agreement: dict | None = None
    forwards: int = 0
    seconds: float = 0.0

    # -- numbers ---------------------------------------------------------------------------------
    @property
    def m_base(self) -> float:
        """The metric of the run that is patched (corrupted when denoising, clean when noising)."""
        return self.m_corrupt if self.direction == "denoise" else self.m_clean

    def _norm(self, values) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        span = self.m_clean - self.m_corrupt
        if not abs(span) > 1e-12 * max(1.0, abs(self.m_clean)):
            return np.full(v.shape, np.nan)
        return (v - self.m_corrupt) / span

    @property
    def normalised(self) -> np.ndarray:
        """``[rows, columns]`` normalised effects (NaN when clean and corrupted runs give the same metric)."""
        if self.effects is not None:
            return self._norm(self.effects)
        return self._norm(self.m_base + np.asarray(self.attribution, dtype=np.float64))

    @property
    def normalised_attribution(self) -> np.ndarray | None:
        """Attribution patching's estimate, normalised like :attr:`normalised`."""
        if self.attribution is None:
            return None
        return self._norm(self.m_base + np.asarray(self.attribution, dtype=np.float64))

    def effect(self, row: str, column: int | str = 0) -> float:
        """Normalised effect of one cell (column by index or label)."""
        r = self.rows.index(row)
        c = self.columns.index(column) if isinstance(column, str) else int(column)
        return float(self.normalised[r, c])

    def top(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The ``k`` cells with the largest normalised |effect - baseline| (baseline 0 denoising, 1 noising)."""
        n = self.normalised
        base = 0.0 if self.direction == "denoise" else 1.0
        order = np.argsort(-np.nan_to_num(np.abs(n - base), nan=-1.0), axis=None)[:k]
        return [(self.rows[i // n.shape[1]], self.columns[i % n.shape[1]], float(n.flat[i])) for i in order]

    # -- showing ---------------------------------------------------------------------------------
    def table(self) -> str:
        what = "attribution patching (first-order estimate)" if self.method == "attribution" else "activation patching"
        flow = "clean -> corrupted run" if self.direction == "denoise" else "corrupted -> clean run"
        lines = [f"{what} of {self.model}: {self.direction} ({flow}), metric {self.metric}",
                 f"  clean   {self.clean!r}: {self.m_clean:.4f}",
                 f"  corrupt {self.corrupt!r}: {self.m_corrupt:.4f}",
                 "  normalised effect (m - m_corrupt) / (m_clean - m_corrupt): 1 = clean, 0 = corrupted"]
        if not np.isfinite(self.normalised).any():
            lines.append("  (clean and corrupted inputs give the same metric: effects cannot be normalised)")
        lines.append(_grid(self.normalised, self.rows, self.columns))
        if self.agreement:
            a = self.agreement
            lines.append(f"attribution patching vs exact over {a['n']} cells: Pearson {_f(a['pearson'])}, "
                         f"Spearman {_f(a['spearman'])}, slope {_f(a.get('slope'))}, "
                         f"largest |error| {_f(a['max_abs_error'])} (normalised)")
        lines.append(f"{self.forwards} forward passes, {self.seconds:.2f} s")
        return "\n".join(lines)

    def plot(self, path) -> object:
        from finegrain.viz.patching import plot_patching  # heavy: matplotlib, imported when a picture is drawn

        title = f"{self.direction} patching: {self.metric}"
        return plot_patching(self.normalised, self.rows, self.columns, path, title=title,
                             attribution=self.normalised_attribution if self.method == "both" else None)


def _f(x) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    s = f"{x:.3f}"
    return "0.000" if s == "-0.000" else s


def _grid(M: np.ndarray, rows: Sequence[str], cols: Sequence[str], width: int = 7) -> str:
    rw = max(len(r) for r in rows)
    short = [c if len(c) <= width else c[: width - 1] + "~" for c in cols]
    head = " " * rw + " " + " ".join(f"{c:>{width}}" for c in short)
    body = [f"{r:<{rw}} " + " ".join(f"{_f(v):>{width}}" for v in row) for r, row in zip(rows, M)]
    return "\n".join([head, *body])


def _column(pos: list[int], clean: Sequence[str], corrupt: Sequence[str]) -> str:
    """``"3:cat/dog"`` (position, clean token, corrupted token where it differs), ``"all"`` or ``"2+5"``."""
    if len(pos) == 1:
        t = pos[0]
        return f"{t}:{clean[t]}" if clean[t] == corrupt[t] else f"{t}:{clean[t]}/{corrupt[t]}"
    return "all" if pos == list(range(len(clean))) else "+".join(map(str, pos))


# ---------------------------------------------------------------------------------------------
def activation_patching(
    adapter: ModelAdapter,
    clean: str | Sequence[str] | Sequence[Sequence[str]],
    corrupt: str | Sequence[str] | Sequence[Sequence[str]],
    target: str | int | PatchMetric,
    against: str | int | None = None,
    *,
    measure: str = "auto",
    position: int | None = None,
    components: str | Sequence = "resid",
    positions: str | int | Sequence = "each",
    direction: str = "denoise",
    method: str = "exact",
    batch_size: int = 32,
    progress: bool | None = None,
) -> PatchingResult | ResultList:
    """Patch every component x position cell between a clean and a corrupted input.

    ``clean`` / ``corrupt`` are texts (split on whitespace) of the same token length: one pair gives one
    :class:`PatchingResult`, lists (of texts or word lists) a :class:`ResultList`, one result per pair.
    ``target`` (and ``against``) name the metric (see :class:`PatchMetric`; a ``PatchMetric`` may be passed
    instead). ``components`` is a kind (``resid``, ``mlp``, ``attn``, ``heads``, ``cell``) or a list of
    layers / neuron addresses / ``Head`` objects. ``positions`` is ``"each"`` (one column per token),
    ``"all"`` (one column: every position at once) or a list of positions (or of position groups).
    ``method``: ``"exact"`` (activation patching), ``"attribution"`` (attribution patching only: one forward
    and one backward) or ``"both"`` (exact, with the estimate and their agreement). See the module docstring
    for the conventions; Meng et al. 2022, Heimersheim & Nanda 2024, Nanda 2023.
    """
    pairs = _pairs(clean, corrupt)
    metric = target if isinstance(target, PatchMetric) else PatchMetric(target, against, measure, position)
    if direction not in DIRECTIONS:
        raise ParameterError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be a positive int, got {batch_size!r}")
    comps = components_of(adapter, components)
    results = [_patch_pair(adapter, c, k, metric, comps, positions, direction, method, batch_size, progress)
               for c, k in pairs]
    return results[0] if isinstance(clean, str) else ResultList(results)


def attribution_patching(adapter: ModelAdapter, clean, corrupt, target, against=None, **kwargs):
    """Attribution patching (Nanda 2023): :func:`activation_patching` with ``method="attribution"``."""
    return activation_patching(adapter, clean, corrupt, target, against, method="attribution", **kwargs)


def _pairs(clean, corrupt) -> list[tuple]:
    if isinstance(clean, str) != isinstance(corrupt, str):
        raise ParameterError("clean and corrupt must both be texts or both be lists of texts")
    if isinstance(clean, str):
        return [(clean, corrupt)]
    clean, corrupt = list(clean), list(corrupt)
    if len(clean) != len(corrupt) or not clean:
        raise ParameterError(f"{len(clean)} clean but {len(corrupt)} corrupted inputs; give them in pairs")
    return list(zip(clean, corrupt))


def _encode(adapter: ModelAdapter, text) -> Batch:
    return adapter.encode([text.split() if isinstance(text, str) else list(text)])


def _patch_pair(adapter, clean, corrupt, metric: PatchMetric, comps, positions, direction, method,
                batch_size, progress) -> PatchingResult:
    t0 = time.perf_counter()
    bc, bk = _encode(adapter, clean), _encode(adapter, corrupt)
    tc, tk = bc.tokens[0], bk.tokens[0]
    if len(tc) != len(tk):
        raise ParameterError(
            f"clean and corrupted inputs must have the same number of tokens (position t of one is patched into "
            f"position t of the other): {len(tc)} {tc} vs {len(tk)} {tk}"
        )
    cols = _columns(positions, len(tc))
    layers = list(dict.fromkeys(c.layer for c in comps))
    model = adapter.model
    with preserved_state(model):
        model.eval()
        with torch.no_grad():
            out_c, cache_c = adapter.run_with_cache(bc, layers)
            out_k, cache_k = adapter.run_with_cache(bk, layers)
        bound = metric.bind(adapter, bk, out_k)
        m_clean = float(bound(output_logits(adapter, out_c))[0])
        m_corrupt = float(bound(output_logits(adapter, out_k))[0])
        base, src = (bk, cache_c) if direction == "denoise" else (bc, cache_k)
        effects = attribution = None
        forwards = 2
        if method in ("exact", "both"):
            effects = _exact(adapter, base, src, comps, cols, bound, batch_size, progress)
            forwards += math.ceil(len(comps) * len(cols) / batch_size)
        if method in ("attribution", "both"):
            attribution = _attribution(adapter, base, src, comps, cols, bound)
            forwards += 1
    res = PatchingResult(
        model=adapter.name, method=method, direction=direction, metric=bound.name,
        clean=_text(clean), corrupt=_text(corrupt), rows=[c.label for c in comps],
        row_layers=[c.layer for c in comps], row_units=[None if c.units is None else list(c.units) for c in comps],
        columns=[_column(p, tc, tk) for p in cols],
        column_positions=cols, tokens_clean=list(tc), tokens_corrupt=list(tk), m_clean=m_clean, m_corrupt=m_corrupt,
        effects=None if effects is None else effects.tolist(),
        attribution=None if attribution is None else attribution.tolist(), forwards=forwards,
    )
    if method == "both":
        res.agreement = agreement(res.normalised, res.normalised_attribution)
    res.seconds = time.perf_counter() - t0
    return res


def _text(x) -> str:
    return x if isinstance(x, str) else " ".join(x)


def _exact(adapter, base: Batch, src: dict[str, torch.Tensor], comps: list[Component], cols: list[list[int]],
           metric: BoundMetric, batch_size: int, progress) -> np.ndarray:
    """Every cell once, ``batch_size`` cells per forward: copy ``r`` of the base batch is patched at cell ``r``."""
    sizes = adapter.layers()
    cells = [(r, c) for r in range(len(comps)) for c in range(len(cols))]
    T = base.inputs["input_ids"].shape[1]
    out = np.empty(len(cells))
    starts = range(0, len(cells), batch_size)
    for start in tqdm(starts, desc="patching", disable=True if progress is False else None):
        chunk = cells[start : start + batch_size]
        groups: dict[tuple[str, int], list[tuple[int, tuple[int, ...], list[int]]]] = {}
        for j, (r, c) in enumerate(chunk):
            comp = comps[r]
            units = comp.units if comp.units is not None else tuple(range(sizes[comp.layer]))
            groups.setdefault((comp.layer, len(units)), []).append((j, units, cols[c]))
        edits = []
        for (layer, _), items in groups.items():
            s = src[layer][0]  # [T, D]
            units = torch.tensor([u for _, u, _ in items], dtype=torch.long, device=s.device)
            values = s[:, units].permute(1, 0, 2)  # [rows, T, m]: the source run's values of each row's units
            mask = torch.zeros(len(chunk), T, dtype=torch.bool)
            for j, _, pos in items:
                mask[j, pos] = True
            edits.append(PerRow(layer, units, values, rows=[j for j, _, _ in items], positions=mask))
        with torch.no_grad(), intervene(adapter, edits):
            logits = output_logits(adapter, adapter.forward(repeat_batch(base, len(chunk))))
        out[start : start + len(chunk)] = metric(logits).cpu().numpy()
    return out.reshape(len(comps), len(cols))


def _attribution(adapter, base: Batch, src: dict[str, torch.Tensor], comps: list[Component],
                 cols: list[list[int]], metric: BoundMetric) -> np.ndarray:
    """``sum over the cell's units and positions of (a_source - a_base) * dm/da`` on the base run (Nanda 2023).

    Each hooked activation gets a zero tensor added that requires grad, so the gradient with respect to it is
    the total derivative through everything downstream, also when the model's parameters are frozen. A hook
    point that a model calls more than once per step (windowed LSTMs) contributes every call.
    """
    layers = list(dict.fromkeys(c.layer for c in comps))
    calls: dict[str, list[tuple[int | None, torch.Tensor, torch.Tensor]]] = {lay: [] for lay in layers}

    def make(lay):
        def fn(act, step):
            z = torch.zeros_like(act, requires_grad=True)
            calls[lay].append((step, act.detach(), z))
            return act + z

        return fn

    with torch.enable_grad(), adapter.hooks({lay: make(lay) for lay in layers}):
        m = metric(output_logits(adapter, adapter.forward(base)))[0]
    zs = [z for lay in layers for _, _, z in calls[lay]]
    grads = torch.autograd.grad(m, zs, allow_unused=True)
    per_unit: dict[str, torch.Tensor] = {}  # [T, D] attribution of each position and unit
    k = 0
    for lay in layers:
        s = src[lay][0].double()
        acc = torch.zeros_like(s)
        for step, act, _ in calls[lay]:
            g = grads[k]
            k += 1
            if g is None:
                continue
            if step is None:
                acc += (s - act[0].double()) * g[0].double()
            else:
                acc[step] += (s[step] - act[0].double()) * g[0].double()
        per_unit[lay] = acc
    out = np.empty((len(comps), len(cols)))
    for r, comp in enumerate(comps):
        a = per_unit[comp.layer]
        if comp.units is not None:
            a = a[:, list(comp.units)]
        for c, pos in enumerate(cols):
            out[r, c] = float(a[pos].sum())
    return out


def agreement(exact: np.ndarray, estimate: np.ndarray) -> dict:
    """How well attribution patching's estimates match exact patching effects (same scale), over the finite
    cells: Pearson and Spearman correlation, the least-squares ``slope`` of estimate on exact (1 = right
    magnitude) and the largest absolute difference. Correlation alone is blind to scale: a saturated metric
    (gradient ~0) gives estimates proportional to, but far smaller than, the exact effects."""
    from scipy.stats import pearsonr, spearmanr  # heavy: scipy.stats takes ~1 s to import

    a, b = np.asarray(exact, dtype=np.float64).ravel(), np.asarray(estimate, dtype=np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {"n": int(ok.sum()), "pearson": None, "spearman": None, "slope": None,
           "max_abs_error": float(np.abs(a - b).max()) if len(a) else None}
    if len(a) >= 2 and np.ptp(a) > 0:
        out["slope"] = float(np.polyfit(a, b, 1)[0])
        if np.ptp(b) > 0:
            out["pearson"] = float(pearsonr(a, b)[0])
            out["spearman"] = float(spearmanr(a, b)[0])
    return out
