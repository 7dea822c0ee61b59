"""Feature interactions, which Captum lacks: Integrated Hessians, the Shapley-Taylor interaction
index of order 2, and Archipelago.

Each algorithm has a model-free core (a forward function on tensors for Integrated Hessians, a set
function ``v(keep [M, n] bool) -> [M]`` for the game-theoretic ones) and an adapter-level wrapper
whose features are the words of a text (a word is kept as is or replaced by the baseline token).
The wrappers return one :class:`Interaction` for a string and a ``ResultList`` for a list.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from finegrain.attribute._core import (
    DELTA_TOLERANCE,
    AttributionError,
    CheckedResult,
    Prepared,
    as_word_lists,
    each_example,
    warn_incomplete,
)
from finegrain.attribute.render import interaction_table
from finegrain.attribute.targets import Target, TargetDescription
from finegrain.errors import ParameterError
from finegrain.models.base import ModelAdapter
from finegrain.results import ResultList

SetFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Interaction(CheckedResult):
    """Pairwise interactions among the words of one example.

    ``matrix``: IH: Γ (diagonal = main effects incl. the first-order term; rows sum to IG);
    STII: diagonal = singleton indices, off-diagonal = pair index (stored symmetrically, counted once
    in the total); Archipelago: ArchDetect pair strengths. ``main``: first-order scores per word.
    ``delta`` = total - (f(x) - f(x')) where the method is complete (``complete``: the stated
    criterion ``|delta| <= delta_tolerance * |f(x) - f(x')|``); ``description`` names the target.

    What it cost: ``n_evaluations`` (IH: points of the ``n_steps`` x ``n_steps`` midpoint grid, each one
    forward, one backward and one second-order backward per word; STII and Archipelago: evaluations of
    the set function, i.e. forwards), ``n_steps`` (IH's steps per axis), ``n_samples`` (STII: random
    orderings when sampled, ``None`` when exact over all 2^n subsets) and ``exact`` (STII).
    """

    method: str
    words: list[str]
    matrix: np.ndarray
    main: np.ndarray
    f_x: float
    f_baseline: float
    delta: float | None
    n_evaluations: int
    sets: list[list[int]] = field(default_factory=list)
    set_scores: list[float] = field(default_factory=list)
    target: str = ""
    description: TargetDescription | None = None
    delta_tolerance: float = DELTA_TOLERANCE
    n_steps: int | None = None
    n_samples: int | None = None
    exact: bool | None = None

    def pairs(self, k: int = 10) -> list[tuple[str, str, float]]:
        """Strongest pairs (by absolute value), as ``(word_i, word_j, value)``."""
        n = len(self.words)
        iu = [(i, j) for i in range(n) for j in range(i + 1, n)]
        iu.sort(key=lambda p: -abs(self.matrix[p]))
        return [(self.words[i], self.words[j], float(self.matrix[i, j])) for i, j in iu[:k]]

    _arrays = {"matrix": np.float64, "main": np.float64}

    def table(self, k: int = 10) -> str:
        return interaction_table(self, k)

    def plot(self, path) -> object:
        """The interaction matrix as a diverging heatmap (PNG)."""
        # heavy: matplotlib, imported when a picture is drawn
        from finegrain.viz.plots import plot_matrix

        sub = self.description.text if self.description is not None else self.target
        return plot_matrix(self.matrix, path, row_labels=self.words, col_labels=self.words,
                           title=f"{self.method}: {sub}"[:80], center=0.0, colorbar_label="interaction")


def _interaction(method: str, prep: Prepared, matrix, main, f_x, f_b, delta, target, evals, **kw) -> Interaction:
    return Interaction(method, prep.words[0], matrix, main, float(f_x), float(f_b), delta, int(evals),
                       target=str(prep.target_name), description=prep.description(0), **kw)


def _finish(out: list[Interaction], single: bool):
    warn_incomplete([(r.method, r.delta, r.f_x - r.f_baseline, r.delta_tolerance) for r in out], "interaction")
    return out[0] if single else ResultList(out)


# ----------------------------------------------------------------------------------------------
# Integrated Hessians
def find_relu(model: nn.Module) -> list[str]:
    """Names of ReLU modules (and a config-level ``relu`` activation) in ``model``."""
    found = [name or type(model).__name__ for name, m in model.named_modules() if isinstance(m, nn.ReLU | nn.ReLU6)]
    cfg = getattr(model, "config", None)
    if any(isinstance(m, nn.Softplus) for m in model.modules()):
        cfg = None  # activations already substituted
    for key in ("hidden_act", "activation_function", "activation"):
        if cfg is not None and getattr(cfg, key, None) == "relu" and not found:
            found.append(f"config.{key}")
    return found


@contextlib.contextmanager
def softplus_substitution(model: nn.Module, beta: float = 10.0):
    """Temporarily replace every ``nn.ReLU`` in ``model`` by ``nn.Softplus(beta)``: Integrated Hessians
    needs twice-differentiable activations (ReLU's Hessian is zero almost everywhere; Janizek et al.
    2020, sec. 3.3). Larger ``beta`` is closer to ReLU. Restored on exit."""
    swapped = []
    try:
        for mod in list(model.modules()):
            for cname, child in list(mod.named_children()):
                if isinstance(child, nn.ReLU):
                    setattr(mod, cname, nn.Softplus(beta=beta))
                    swapped.append((mod, cname, child))
        yield model
    finally:
        for mod, cname, child in swapped:
            setattr(mod, cname, child)


def _check_twice_differentiable(model: nn.Module | None, on_relu: str) -> None:
    if model is None:
        return
    relu = find_relu(model)
    if relu:
        msg = (f"Integrated Hessians needs twice-differentiable activations but the model uses ReLU "
               f"({', '.join(relu[:3])}{'...' if len(relu) > 3 else ''}); its Hessian is zero almost everywhere, "
               f"so interactions through it are lost. Wrap the call in "
               f"`with finegrain.attribute.softplus_substitution(model, beta=10):`")
        if on_relu == "raise":
            raise AttributionError(msg)
        if on_relu == "warn":
            warnings.warn(msg, stacklevel=3)


def integrated_hessians_tensor(
    forward_fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    baseline: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    n_groups: int | None = None,
    steps: int = 16,
    additional_forward_args: tuple = (),
    internal_batch_size: int = 256,
) -> tuple[np.ndarray, int]:
    """Integrated Hessians (Janizek et al. 2020) of a scalar ``forward_fn`` for one input ``x``
    (no batch dim), aggregated to feature groups (``groups``: same shape as ``x``, group id per
    element; default: every element is a feature).

    Γ_ij = Δ_i Δ_j ∫∫ αβ ∂²f(x' + αβΔ)/∂x_i∂x_j dα dβ, plus Δ_i ∫∫ ∂_i f(x' + αβΔ) dα dβ on the
    diagonal; Γ_GH sums elements. Both integrals use a ``steps`` x ``steps`` midpoint grid.
    ``additional_forward_args`` are per-example tensors (batch dim 1) expanded to the rows.
    Returns ``(Γ [n_groups, n_groups], rows evaluated)``.
    """
    baseline = torch.zeros_like(x) if baseline is None else baseline
    if groups is None:
        groups = torch.arange(x.numel(), device=x.device).reshape(x.shape)
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    delta = (x - baseline).detach()
    grid = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    ab = (grid[:, None] * grid[None, :]).reshape(-1).to(x.dtype).to(x.device)  # α·β per grid point
    onehot = torch.nn.functional.one_hot(groups.reshape(-1).long(), n_groups).to(x.dtype)  # [E, G]
    gamma = torch.zeros(n_groups, n_groups, dtype=torch.float64)
    rows = 0
    with _math_attention():
        gamma, rows = _ih_loop(forward_fn, x, baseline, delta, ab, onehot, n_groups, additional_forward_args,
                               internal_batch_size, gamma, rows)
    return (gamma / len(ab)).numpy(), rows


@contextlib.contextmanager
def _math_attention():
    # fused SDPA kernels (flash / memory-efficient) have no double backward; the math kernel does
    try:  # optional: torch.nn.attention's kernel switch exists from torch 2.3 (the floor is 2.1)
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - old torch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _ih_loop(forward_fn, x, baseline, delta, ab, onehot, n_groups, additional_forward_args, internal_batch_size,
             gamma, rows):
    for s in range(0, len(ab), internal_batch_size):
        c = ab[s : s + internal_batch_size]
        pts = (baseline.unsqueeze(0) + c.view(-1, *[1] * x.dim()) * delta.unsqueeze(0)).detach().requires_grad_(True)
        args = tuple(a.expand(len(c), *a.shape[1:]) if torch.is_tensor(a) else a for a in additional_forward_args)
        out = forward_fn(pts, *args)
        rows += len(c)
        (g,) = torch.autograd.grad(out.sum(), pts, create_graph=True)
        gd = (g * delta).reshape(len(c), -1)  # Δ_i ∂_i f
        s_g = gd @ onehot  # [K, G]: group sums of Δ_i ∂_i f
        first = s_g.detach().double().sum(0)
        gamma += torch.diag(first)
        for gi in range(n_groups):
            if not s_g[:, gi].requires_grad:
                continue
            (h,) = torch.autograd.grad(s_g[:, gi].sum(), pts, retain_graph=True, allow_unused=True)
            if h is None:
                continue
            hd = (h * delta).reshape(len(c), -1) @ onehot  # [K, G]: Σ_{j∈H} Δ_j ∂_j s_G
            gamma[gi] += (c.unsqueeze(1) * hd).detach().double().sum(0)
    return gamma, rows


def integrated_hessians(
    adapter: ModelAdapter,
    texts,
    target: Target | str | None = None,
    steps: int = 16,
    baseline: str | int = "pad",
    internal_batch_size: int = 128,
    on_relu: str = "raise",
) -> Interaction | ResultList:
    """Word-level Integrated Hessians: Γ over words (embedding groups of the words' tokens).
    Rows sum to the words' IG attributions; the total is f(x) - f(x'). ``on_relu``: ``raise`` |
    ``warn`` | ``ignore`` when the model uses ReLU (see :func:`softplus_substitution`)."""
    _check_twice_differentiable(adapter.model, on_relu)
    _, single = as_word_lists(texts)
    out = []
    for prep in each_example(adapter, texts, target, baseline, desc="integrated_hessians"):
        fx, fb = prep.value(), prep.value(prep.base_embeds)
        n = len(prep.words[0])
        wm = prep.word_mask(0)  # [n, T]
        T = wm.shape[1]
        grp = np.full(T, n, dtype=np.int64)  # group n = non-attributable tokens (Δ = 0 there)
        for i in range(n):
            grp[wm[i]] = i
        D = prep.embeds.shape[-1]
        groups = torch.as_tensor(grp, device=prep.embeds.device).view(T, 1).expand(T, D)

        def f(e, *args, prep=prep):
            return prep.forward(e, torch.zeros(len(e), dtype=torch.long, device=e.device), *args)

        extra = tuple(prep.batch.inputs[k][:1] for k in prep.keys)
        gamma, rows = integrated_hessians_tensor(
            f, prep.embeds[0], prep.base_embeds[0], groups, n + 1, steps, extra, internal_batch_size)
        gamma = gamma[:n, :n]
        out.append(_interaction("integrated_hessians", prep, gamma, gamma.sum(1), fx[0], fb[0],
                                float(gamma.sum() - (fx[0] - fb[0])), target, evals=rows, n_steps=steps))
    return _finish(out, single)


# ----------------------------------------------------------------------------------------------
# Shapley-Taylor interaction index, order 2
def _masks_all(n: int) -> torch.Tensor:
    idx = torch.arange(2**n)
    return ((idx.unsqueeze(1) >> torch.arange(n)) & 1).bool()


def shapley_taylor_game(v: SetFunction, n: int, max_exact: int = 10, n_samples: int = 200, seed: int = 0
                        ) -> tuple[np.ndarray, float, float, int]:
    """Shapley-Taylor interaction index of order 2 (Dhamdhere et al. 2020) of a set function over
    ``n`` players. Singletons: I_i = v({i}) - v(∅). Pairs: I_ij = (2/n) Σ_{T⊆N∖ij} δ_ij v(T) / C(n-1, |T|)
    with δ_ij v(T) = v(T∪ij) - v(T∪i) - v(T∪j) + v(T); exact over all 2^n subsets when ``n <=
    max_exact``, else averaged over ``n_samples`` random orderings (δ_ij at the elements before the
    first of i, j). Returns ``(I [n, n], v(N), v(∅), evaluations)``; all indices (diagonal + upper
    triangle) sum to v(N) - v(∅) exactly in the exact mode.
    """
    if n == 0:
        raise ParameterError("no players")
    idx = np.zeros((n, n))
    if n <= max_exact:
        masks = _masks_all(n)
        vals = v(masks).double().numpy()
        code = (masks.long() * (1 << torch.arange(n))).sum(1).numpy()
        table = np.empty(2**n)
        table[code] = vals
        v0, vN = table[0], table[2**n - 1]
        for i in range(n):
            idx[i, i] = table[1 << i] - v0
        for i, j in itertools.combinations(range(n), 2):
            acc = 0.0
            rest = [k for k in range(n) if k not in (i, j)]
            for r in range(len(rest) + 1):
                w = 1.0 / math.comb(n - 1, r)
                for T in itertools.combinations(rest, r):
                    t = sum(1 << k for k in T)
                    acc += w * (table[t | 1 << i | 1 << j] - table[t | 1 << i] - table[t | 1 << j] + table[t])
            idx[i, j] = idx[j, i] = 2.0 / n * acc
        return idx, float(vN), float(v0), len(masks)
    rng = np.random.default_rng(seed)
    cache: dict[int, float] = {}

    def need(codes: list[int]) -> None:
        todo = sorted({c for c in codes if c not in cache})
        if todo:
            m = torch.tensor([[(c >> k) & 1 for k in range(n)] for c in todo], dtype=torch.bool)
            for c, val in zip(todo, v(m).double().tolist()):
                cache[c] = val

    full = (1 << n) - 1
    need([0, full] + [1 << i for i in range(n)])
    for i in range(n):
        idx[i, i] = cache[1 << i] - cache[0]
    acc = np.zeros((n, n))
    for _ in range(n_samples):
        perm = rng.permutation(n)
        pos = np.empty(n, dtype=int)
        pos[perm] = np.arange(n)
        reqs, quads = [], []
        for i, j in itertools.combinations(range(n), 2):
            k = min(pos[i], pos[j])
            t = sum(1 << int(p) for p in perm[:k])
            q = (t | 1 << i | 1 << j, t | 1 << i, t | 1 << j, t)
            quads.append((i, j, q))
            reqs.extend(q)
        need(reqs)
        for i, j, q in quads:
            acc[i, j] += cache[q[0]] - cache[q[1]] - cache[q[2]] + cache[q[3]]
    acc /= n_samples
    iu = np.triu_indices(n, 1)
    idx[iu] = acc[iu]
    idx[(iu[1], iu[0])] = acc[iu]
    return idx, cache[full], cache[0], len(cache)


def sti_total(index: np.ndarray) -> float:
    """Sum of all order-≤2 indices (diagonal + each pair once)."""
    return float(np.trace(index) + np.triu(index, 1).sum())


def shapley_taylor(adapter: ModelAdapter, texts, target: Target | str | None = None, baseline: str | int = "pad",
                   max_exact: int = 10, n_samples: int = 200, seed: int = 0, batch_rows: int = 64
                   ) -> Interaction | ResultList:
    """Word-level Shapley-Taylor interaction index (order 2); a word is absent when its tokens are
    replaced by the baseline token."""
    _, single = as_word_lists(texts)
    out = []
    for prep in each_example(adapter, texts, target, baseline, desc="shapley_taylor"):
        n = len(prep.words[0])
        idx, vN, v0, evals = shapley_taylor_game(prep.game(0, batch_rows), n, max_exact, n_samples, seed)
        exact = n <= max_exact
        out.append(_interaction("shapley_taylor", prep, idx, np.diag(idx).copy(), vN, v0,
                                float(sti_total(idx) - (vN - v0)) if exact else None, target,
                                evals=evals, n_samples=None if exact else n_samples, exact=exact))
    return _finish(out, single)


# ----------------------------------------------------------------------------------------------
# Archipelago
def arch_detect(v: SetFunction, n: int) -> tuple[np.ndarray, int]:
    """ArchDetect (Tsang et al. 2020): pair strength ½ω_ij(baseline)² + ½ω_ij(input)², where
    ω_ij(c) = v(c) - v(c with i flipped) - v(c with j flipped) + v(c with i and j flipped) in the
    baseline context (nothing kept) and the input context (everything kept). Returns
    ``(strength [n, n] symmetric, evaluations)``."""
    pairs = list(itertools.combinations(range(n), 2))
    masks = []
    for ctx in (False, True):
        base = torch.full((n,), ctx, dtype=torch.bool)
        masks.append(base.clone())
        for i in range(n):
            m = base.clone()
            m[i] = not ctx
            masks.append(m)
        for i, j in pairs:
            m = base.clone()
            m[i] = m[j] = not ctx
            masks.append(m)
    vals = v(torch.stack(masks)).double().numpy()
    per = 1 + n + len(pairs)
    strength = np.zeros((n, n))
    for c in range(2):
        blk = vals[c * per : (c + 1) * per]
        f0, single, pair = blk[0], blk[1 : n + 1], blk[n + 1 :]
        for k, (i, j) in enumerate(pairs):
            w = pair[k] - single[i] - single[j] + f0
            strength[i, j] += 0.5 * w * w
    strength = strength + strength.T
    return strength, len(masks)


def merge_pairs(pairs: Sequence[tuple[int, int]], n: int) -> list[list[int]]:
    """Union-find: merge overlapping pairs into disjoint sets; untouched players stay singletons."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    sets: dict[int, list[int]] = {}
    for i in range(n):
        sets.setdefault(find(i), []).append(i)
    return sorted(sets.values())


def archipelago_game(v: SetFunction, n: int, top_k: int | None = None, threshold: float = 0.0
                     ) -> tuple[np.ndarray, list[list[int]], list[float], float, float, int]:
    """ArchDetect + merging of the ``top_k`` strongest pairs (default: ``n // 2``; only pairs with
    strength > ``threshold``) + ArchAttribute(I) = v(I) - v(∅) per set.
    Returns ``(strength, sets, set_scores, v(N), v(∅), evaluations)``."""
    strength, evals = arch_detect(v, n)
    iu = [(i, j) for i in range(n) for j in range(i + 1, n)]
    iu.sort(key=lambda p: -strength[p])
    k = max(1, n // 2) if top_k is None else top_k
    chosen = [p for p in iu[:k] if strength[p] > threshold]
    sets = merge_pairs(chosen, n)
    masks = torch.zeros(len(sets) + 2, n, dtype=torch.bool)
    for s, members in enumerate(sets):
        masks[s, members] = True
    masks[-1] = True  # v(N)
    vals = v(masks).double().numpy()  # last-but-one row: v(∅)
    v0 = vals[-2]
    return strength, sets, [float(x - v0) for x in vals[: len(sets)]], float(vals[-1]), float(v0), evals + len(masks)


def archipelago(adapter: ModelAdapter, texts, target: Target | str | None = None, baseline: str | int = "pad",
                top_k: int | None = None, threshold: float = 0.0, batch_rows: int = 64
                ) -> Interaction | ResultList:
    """Word-level Archipelago: interacting word sets and their ArchAttribute scores."""
    _, single = as_word_lists(texts)
    out = []
    for prep in each_example(adapter, texts, target, baseline, desc="archipelago"):
        n = len(prep.words[0])
        strength, sets, scores, vN, v0, evals = archipelago_game(prep.game(0, batch_rows), n, top_k, threshold)
        main = np.zeros(n)
        for s_, sc in zip(sets, scores):
            main[s_] = sc / len(s_)
        out.append(_interaction("archipelago", prep, strength, main, vN, v0, None, target, evals=evals,
                                sets=sets, set_scores=scores))
    return _finish(out, single)


INTERACTIONS = {"ih": integrated_hessians, "integrated_hessians": integrated_hessians,
                "stii": shapley_taylor, "sti": shapley_taylor, "shapley_taylor": shapley_taylor,
                "archipelago": archipelago}


def interactions(adapter: ModelAdapter, texts, target: Target | str | None = None, method: str = "ih", **kw):
    """Dispatch: ``method`` in ``ih`` | ``stii`` | ``archipelago``."""
    fn = INTERACTIONS.get(method.lower())
    if fn is None:
        raise ParameterError(f"unknown interaction method {method!r}; use ih, stii or archipelago")
    return fn(adapter, texts, target, **kw)
