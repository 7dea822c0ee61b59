"""Causal mediation analysis of neurons and attention heads (Vig et al. 2020).

For a prompt ``u`` ("The nurse said that") and two continuations (" he" / " she"),
``y(u) = p(anti-stereotypical | u) / p(stereotypical | u)``, where which continuation is
stereotypical is decided by the model's own preference on the base prompt. The *set-gender*
intervention replaces the profession with the anti-stereotypical gendered word ("man").

* total effect      TE  = y(set-gender) / y(base) − 1
* indirect effect   NIE = y(base input, mediator set to its value under set-gender) / y(base) − 1
* direct effect     NDE = y(set-gender input, mediator held at its base value) / y(base) − 1

TE ≠ NDE + NIE in general. Mediators are single neurons, attention heads (all units of a head in
``layer.i.attn``) or whole layers, at the *mediator positions*: ``"last"`` (the last prompt token /
LSTM step, works whatever the fillers' lengths), ``"slot"`` (the filler's tokens; Vig et al.
intervene there and keep one-token professions) or ``"all"`` (every token; the base and
set-gender prompts must have the same token count). For HF decoders the per-unit interventions
are batched: the prompt is repeated once per candidate mediator and copy *j* edits mediator *j*.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.intervene.edits import PerRow, Set, intervene
from finegrain.intervene.scoring import (
    ContinuationBatch,
    continuation_logprobs,
    continuation_scores,
    encode_continuations,
    is_hf_causal,
    repeat_batch,
    uses_sequence_logprob,
)
from finegrain.models.base import ModelAdapter, ModelError
from finegrain.neurons import Neuron

log = logging.getLogger(__name__)

# small fallbacks so the module works (and is tested) without the data package's resources
FALLBACK_PROFESSIONS = ["nurse", "doctor", "teacher", "engineer", "secretary", "mechanic", "baker", "pilot"]
FALLBACK_TEMPLATES = ["The {} said that", "The {} yelled that", "The {} whispered that"]
FALLBACK_SUBSTITUTES = {"male": "man", "female": "woman"}
FALLBACK_CONTINUATIONS = {"male": " he", "female": " she"}
POSITIONS = ("last", "slot", "all")


def builtin_gender_data() -> tuple[list[str], list[str], dict[str, str], dict[str, str]]:
    """``(templates, professions, substitutes, continuations)`` from ``finegrain.data.generate``
    when available, else the small fallback lists above."""
    try:
        from finegrain.data import generate as g

        return g.mediation_templates(), g.professions(), g.gender_substitutes(), g.gender_continuations()
    except (ImportError, AttributeError, OSError, KeyError, ValueError):
        return list(FALLBACK_TEMPLATES), list(FALLBACK_PROFESSIONS), dict(FALLBACK_SUBSTITUTES), dict(
            FALLBACK_CONTINUATIONS)


@dataclass
class Example:
    """One prompt: base (profession) and set-gender inputs with the model's own stereotype."""

    template: str
    profession: str
    base: str
    alt: str
    stereotypical: str  # group name, e.g. "female"
    anti: str
    log_y_base: float = 0.0
    log_y_alt: float = 0.0
    # internals (not serialised)
    cb: list = field(default_factory=list, repr=False)  # [base ContinuationBatch, alt ContinuationBatch]
    pos: list = field(default_factory=list, repr=False)  # [base mask [2,Tb], alt mask [2,Ta]]
    idx: list = field(default_factory=list, repr=False)  # [base->alt index [2,Tb], alt->base [2,Ta]]
    steps: list = field(default_factory=list, repr=False)  # LSTM: [base steps, alt steps]
    cache: list = field(default_factory=list, repr=False)  # [base {layer: acts}, alt {layer: acts}]

    @property
    def te(self) -> float:
        return float(np.expm1(self.log_y_alt - self.log_y_base))

    def summary(self) -> dict:
        return {"template": self.template, "profession": self.profession, "base": self.base, "alt": self.alt,
                "stereotypical": self.stereotypical, "y_base": float(np.exp(self.log_y_base)),
                "y_alt": float(np.exp(self.log_y_alt)), "te": self.te}


@dataclass
class Effects:
    """Mean NIE / NDE over examples of each candidate mediator of one layer (``labels`` name
    them: unit indices, head indices, or "all")."""

    layer: str
    kind: str  # "neuron" | "head" | "layer" | "set"
    labels: list
    nie: list[float]
    nde: list[float]

    def top(self, k: int = 10) -> list[tuple[object, float]]:
        order = np.argsort(-np.asarray(self.nie), kind="stable")[:k]
        return [(self.labels[i], float(self.nie[i])) for i in order]


@dataclass
class MediationResult:
    """Tables of effects; ``to_csv``/``to_json`` and heatmaps (layer x neuron rank, layer x head)."""

    te: float
    examples: list[dict]
    effects: list[Effects] = field(default_factory=list)
    selections: list[dict] = field(default_factory=list)
    positions: str = "last"

    def rows(self) -> list[dict]:
        out = []
        for e in self.effects:
            for lab, nie, nde in zip(e.labels, e.nie, e.nde):
                out.append({"kind": e.kind, "layer": e.layer, "mediator": lab, "nie": nie, "nde": nde,
                            "te": self.te})
        return out

    def by_kind(self, kind: str) -> list[Effects]:
        return [e for e in self.effects if e.kind == kind]

    def to_csv(self, path=None) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["kind", "layer", "mediator", "nie", "nde", "te"])
        w.writeheader()
        w.writerows(self.rows())
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def to_json(self, path=None) -> str:
        text = json.dumps(asdict(self), indent=2, default=str)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def heatmap(self, path, kind: str = "neuron", top: int = 50) -> str:
        """``kind="neuron"``: layers x neuron rank (each layer's NIEs sorted, top ``top``);
        ``kind="head"``: layers x heads."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        effs = self.by_kind(kind)
        if not effs:
            raise ModelError(f"no {kind} effects to plot")
        if kind == "neuron":
            width = min(top, max(len(e.nie) for e in effs))
            M = np.full((len(effs), width), np.nan)
            for i, e in enumerate(effs):
                v = np.sort(np.asarray(e.nie))[::-1][:width]
                M[i, : len(v)] = v
            xlabel = "neuron rank by NIE"
        else:
            width = max(len(e.nie) for e in effs)
            M = np.full((len(effs), width), np.nan)
            for i, e in enumerate(effs):
                M[i, : len(e.nie)] = e.nie
            xlabel = kind
        fig, ax = plt.subplots(figsize=(max(4, width * 0.15 + 2), max(3, len(effs) * 0.35 + 1.5)))
        im = ax.imshow(M, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(effs)))
        ax.set_yticklabels([e.layer for e in effs], fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_title(f"natural indirect effect ({kind}); TE = {self.te:.3g}")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)


# ---------------------------------------------------------------------------------------------
class Mediation:
    """Causal mediation analysis on one adapter (Vig et al. 2020).

    >>> med = Mediation(model).fit()                  # builtin templates x professions
    >>> med.total_effect(); med.neuron_effects("layer.3"); med.head_effects("layer.3.attn")
    >>> med.select("layer.3", k=5, method="greedy")
    """

    def __init__(self, adapter: ModelAdapter, positions: str = "last", set_gender: str = "anti",
                 max_rows: int = 256, progress: bool | None = None):
        if positions not in POSITIONS:
            raise ModelError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.hf = is_hf_causal(adapter)
        if not self.hf and not uses_sequence_logprob(adapter):
            raise ModelError(f"{adapter.name}: mediation needs a HF causal LM or an adapter with sequence_logprob")
        if not self.hf and positions == "slot":
            raise ModelError("positions='slot' needs a tokenizer with offsets (HF); use 'last' or 'all'")
        self.adapter = adapter
        self.positions = positions
        self.set_gender = set_gender
        self.max_rows = int(max_rows)
        self.disable = None if progress is None else not progress
        self.examples: list[Example] = []
        self.skipped: list[tuple[str, str]] = []

    # -- setup ---------------------------------------------------------------------------
    def fit(self, templates: Sequence[str] | None = None, professions: Sequence[str] | None = None,
            substitutes: dict[str, str] | None = None, continuations: dict[str, str] | None = None,
            max_examples: int | None = None) -> Mediation:
        """Build the examples and measure each profession's stereotype on the model."""
        t0, p0, s0, c0 = builtin_gender_data()
        templates = [t.replace("{profession}", "{}") for t in (templates or t0)]
        professions = list(professions or p0)
        substitutes = dict(substitutes or s0)
        continuations = dict(continuations or c0)
        if set(substitutes) != set(continuations) or len(substitutes) != 2:
            raise ModelError(
                f"substitutes {substitutes} and continuations {continuations} must name the same two groups")
        groups = list(continuations)
        if self.set_gender not in ("anti", *groups):
            raise ModelError(f"set_gender must be 'anti' or one of {groups}")
        pairs = [(t, p) for t in templates for p in professions]
        for t in templates:
            if t.count("{}") != 1:
                raise ModelError(f"template {t!r} must contain exactly one slot ('{{}}' or '{{profession}}')")
        if max_examples:
            pairs = pairs[: int(max_examples)]
        bases = [t.format(p) for t, p in pairs]
        lp = {g: continuation_logprobs(self.adapter, bases, [continuations[g]] * len(bases)) for g in groups}
        self.examples, self.skipped = [], []
        self.groups, self.continuations, self.substitutes = groups, continuations, substitutes
        for i, (t, p) in enumerate(pairs):
            stereo = groups[0] if lp[groups[0]][i] >= lp[groups[1]][i] else groups[1]
            anti = groups[1] if stereo == groups[0] else groups[0]
            target = anti if self.set_gender == "anti" else self.set_gender
            ex = Example(t, p, bases[i], t.format(substitutes[target]), stereo, anti)
            reason = self._prepare(ex)
            if reason:
                self.skipped.append((ex.base, reason))
                continue
            self.examples.append(ex)
        if self.skipped:
            log.warning("mediation: skipped %d of %d prompts (e.g. %s: %s)", len(self.skipped), len(pairs),
                        *self.skipped[0])
        if not self.examples:
            raise ModelError(f"no usable mediation prompts (positions={self.positions!r}); first problem: "
                             f"{self.skipped[0] if self.skipped else 'none given'}")
        return self

    def _conts(self, ex: Example) -> list[str]:
        return [self.continuations[ex.anti], self.continuations[ex.stereotypical]]

    def _prepare(self, ex: Example) -> str | None:
        conts = self._conts(ex)
        if not self.hf:
            return self._prepare_lstm(ex, conts)
        cbs = [encode_continuations(self.adapter, [u, u], conts) for u in (ex.base, ex.alt)]
        lb, la = (continuation_scores(self.adapter, cb).double().cpu().numpy() for cb in cbs)
        ex.log_y_base, ex.log_y_alt = float(lb[0] - lb[1]), float(la[0] - la[1])
        masks, idx = [], []
        slot_start = ex.template.index("{}")
        alt_word_len = len(ex.alt) - (len(ex.template) - 2)
        spans = [(slot_start, slot_start + len(ex.profession)), (slot_start, slot_start + alt_word_len)]
        # positions (per row) of each input's mediator tokens, in order
        per = []
        for k, cb in enumerate(cbs):
            rows = []
            for r in range(2):
                if self.positions == "last":
                    rows.append([cb.prefix_lens[r] - 1])
                elif self.positions == "all":
                    rows.append(list(range(int(cb.batch.attention_mask[r].sum()))))
                else:
                    s, e = spans[k]
                    rows.append([t for t, (a, b) in enumerate(cb.offsets[r]) if b > s and a < e and b > a])
            per.append(rows)
        for r in range(2):
            if len(per[0][r]) != len(per[1][r]):
                return (f"{self.positions!r} positions differ in token count between {ex.base!r} and "
                        f"{ex.alt!r}")
        for k, cb in enumerate(cbs):
            other = 1 - k
            T = cb.batch.inputs["input_ids"].shape[1]
            m = torch.zeros(2, T, dtype=torch.bool)
            ix = torch.zeros(2, T, dtype=torch.long)
            for r in range(2):
                for a, b in zip(per[k][r], per[other][r]):
                    m[r, a] = True
                    ix[r, a] = b
            masks.append(m)
            idx.append(ix)
        ex.cb, ex.pos, ex.idx = cbs, masks, idx
        ex.cache = [{}, {}]
        return None

    def _prepare_lstm(self, ex: Example, conts: list[str]) -> str | None:
        lb = continuation_logprobs(self.adapter, [ex.base] * 2, conts)
        la = continuation_logprobs(self.adapter, [ex.alt] * 2, conts)
        ex.log_y_base, ex.log_y_alt = float(lb[0] - lb[1]), float(la[0] - la[1])
        # the adapter's steps for a prompt are those of encode(prompt); sequence_logprob runs the
        # prompt through the same steps before the continuation
        steps = [len(self.adapter.encode([u.split()]).word_ids[0]) for u in (ex.base, ex.alt)]
        if self.positions == "all" and steps[0] != steps[1]:
            return f"'all' positions need equal lengths ({steps[0]} vs {steps[1]} steps)"
        ex.steps = steps
        ex.cache = [{}, {}]
        return None

    def _acts(self, ex: Example, which: int, layer: str) -> torch.Tensor:
        if layer not in ex.cache[which]:
            with torch.no_grad():
                if self.hf:
                    _, c = self.adapter.run_with_cache(ex.cb[which].batch, [layer])
                else:
                    u = ex.base if which == 0 else ex.alt
                    _, c = self.adapter.run_with_cache(self.adapter.encode([u.split()]), [layer])
            ex.cache[which][layer] = c[layer]
        return ex.cache[which][layer]

    # -- effects -------------------------------------------------------------------------
    def total_effect(self) -> float:
        """Mean TE over examples."""
        self._check_fitted()
        return float(np.mean([ex.te for ex in self.examples]))

    def _check_fitted(self) -> None:
        if not self.examples:
            raise ModelError("call fit() first")

    def set_effects(self, layer: str, sets: Sequence[Sequence[int]] | torch.Tensor,
                    which: Sequence[str] = ("nie", "nde")) -> dict[str, np.ndarray]:
        """Mean NIE / NDE over examples of each unit set in ``layer`` (all sets the same size)."""
        self._check_fitted()
        self.adapter.check_layer(layer)
        sets = torch.as_tensor(sets, dtype=torch.long)
        if sets.dim() == 1:
            sets = sets[:, None]
        out = {}
        for w in which:
            if w not in ("nie", "nde"):
                raise ModelError(f"unknown effect {w!r}")
            vals = [self._effects_hf(ex, layer, sets, w) if self.hf else self._effects_lstm(ex, layer, sets, w)
                    for ex in tqdm(self.examples, desc=f"{w} {layer}", disable=self.disable)]
            out[w] = np.mean(vals, axis=0)
        return out

    def _effects_hf(self, ex: Example, layer: str, sets: torch.Tensor, w: str) -> np.ndarray:
        tgt = 0 if w == "nie" else 1  # NIE edits the base run with set-gender values; NDE the reverse
        cb: ContinuationBatch = ex.cb[tgt]
        src = self._acts(ex, 1 - tgt, layer)
        ix = ex.idx[tgt].to(src.device)
        V = torch.stack([src[r, ix[r]] for r in range(2)])  # [2, T, D] source values at aligned positions
        mask = ex.pos[tgt]
        T = V.shape[1]
        c = max(1, self.max_rows // 2)
        res = []
        with torch.no_grad():
            for chunk in sets.split(c):
                n = len(chunk)
                units = chunk.repeat_interleave(2, 0).to(V.device)  # copy j = rows 2j, 2j+1
                vals = V.repeat(n, 1, 1).gather(-1, units[:, None, :].expand(-1, T, -1))
                big = repeat_batch(cb.batch, n)
                with intervene(self.adapter, PerRow(layer, units, vals, positions=mask.repeat(n, 1))):
                    out = self.adapter.forward(big)
                lp = continuation_scores(self.adapter, ContinuationBatch(big, cb.targets * n, cb.prefix_lens * n),
                                         out).double().view(n, 2)
                res.append((lp[:, 0] - lp[:, 1]).cpu().numpy())
        log_y = np.concatenate(res)
        return np.expm1(log_y - ex.log_y_base)

    def _effects_lstm(self, ex: Example, layer: str, sets: torch.Tensor, w: str) -> np.ndarray:
        tgt = 0 if w == "nie" else 1
        src = self._acts(ex, 1 - tgt, layer)[0]  # [T_src, D]
        u = ex.base if tgt == 0 else ex.alt
        conts = self._conts(ex)
        out = []
        for s in sets.tolist():
            neurons = [Neuron(layer, int(x)) for x in s]
            if self.positions == "last":
                edit = Set(neurons, src[ex.steps[1 - tgt] - 1, s], positions=[ex.steps[tgt] - 1])
            else:
                edit = Set(neurons, src[None, :, s], positions=list(range(ex.steps[tgt])))
            with intervene(self.adapter, edit):
                lp = continuation_logprobs(self.adapter, [u, u], conts)
            out.append(lp[0] - lp[1])
        return np.expm1(np.asarray(out, dtype=np.float64) - ex.log_y_base)

    def neuron_effects(self, layer: str, units: Sequence[int] | None = None) -> Effects:
        """NIE / NDE of each single neuron of ``layer``."""
        size = self.adapter.check_layer(layer)
        units = list(range(size)) if units is None else [int(u) for u in units]
        r = self.set_effects(layer, [[u] for u in units])
        return Effects(layer, "neuron", units, r["nie"].tolist(), r["nde"].tolist())

    def head_effects(self, layer: str) -> Effects:
        """NIE / NDE of each attention head of ``layer`` (``layer.i.attn``): all its units at once."""
        n_heads, hd = self.adapter.heads(layer)
        r = self.set_effects(layer, [list(range(h * hd, (h + 1) * hd)) for h in range(n_heads)])
        return Effects(layer, "head", list(range(n_heads)), r["nie"].tolist(), r["nde"].tolist())

    def layer_effect(self, layer: str) -> Effects:
        """NIE / NDE of a whole layer (every unit at the mediator positions)."""
        size = self.adapter.check_layer(layer)
        r = self.set_effects(layer, [list(range(size))])
        return Effects(layer, "layer", ["all"], r["nie"].tolist(), r["nde"].tolist())

    def select(self, layer: str, k: int = 10, method: str = "greedy", pool: int = 50,
               effects: Effects | None = None) -> dict:
        """A set of ``k`` neurons of ``layer`` with a large joint NIE (Vig et al. 2020, Sec. 5):
        ``"topk"`` takes the individually strongest; ``"greedy"`` adds, at each step, the neuron
        (from the ``pool`` individually strongest) that most increases the set's NIE."""
        if method not in ("greedy", "topk"):
            raise ModelError(f"method must be 'greedy' or 'topk', got {method!r}")
        eff = effects or self.neuron_effects(layer)
        order = [eff.labels[i] for i in np.argsort(-np.asarray(eff.nie), kind="stable")]
        k = min(int(k), len(order))
        curve = []
        if method == "topk":
            chosen = order[:k]
            for j in range(1, k + 1):
                curve.append(float(self.set_effects(layer, [chosen[:j]], which=("nie",))["nie"][0]))
        else:
            chosen = []
            cands = order[: max(k, pool)]
            for _ in range(k):
                rest = [c for c in cands if c not in chosen]
                nie = self.set_effects(layer, [chosen + [c] for c in rest], which=("nie",))["nie"]
                best = int(np.argmax(nie))
                chosen.append(rest[best])
                curve.append(float(nie[best]))
        return {"layer": layer, "method": method, "neurons": [str(Neuron(layer, int(u))) for u in chosen],
                "nie_curve": curve, "te": self.total_effect()}

    def run(self, layers: Sequence[str] | str | None = None, heads: bool = True, neurons: bool = True,
            whole_layers: bool = True, select_k: int = 0, select_method: str = "greedy") -> MediationResult:
        """Effects of every neuron / head / whole layer of ``layers`` (default: residual layers for
        neurons, every ``layer.i.attn`` for heads)."""
        self._check_fitted()
        lays = self.adapter.resolve_layers(layers)
        res = MediationResult(self.total_effect(), [ex.summary() for ex in self.examples], positions=self.positions)
        for lay in lays:
            if neurons:
                eff = self.neuron_effects(lay)
                res.effects.append(eff)
                if select_k:
                    res.selections.append(self.select(lay, select_k, select_method, effects=eff))
            if whole_layers:
                res.effects.append(self.layer_effect(lay))
        if heads and self.hf:
            attn = [lay for lay in self.adapter.layers() if lay.endswith(".attn")]
            if layers not in (None, "hidden", "all"):
                attn = [lay for lay in attn if lay in lays or lay.rsplit(".", 1)[0] in lays]
            for lay in attn:
                res.effects.append(self.head_effects(lay))
        return res


def mediation_analysis(adapter: ModelAdapter, templates=None, professions=None, substitutes=None,
                       continuations=None, layers=None, positions: str = "last", heads: bool = True,
                       select_k: int = 0, select_method: str = "greedy", max_examples: int | None = None,
                       max_rows: int = 256) -> MediationResult:
    """One call: fit the examples, then neuron / head / layer effects (Vig et al. 2020)."""
    med = Mediation(adapter, positions=positions, max_rows=max_rows).fit(
        templates, professions, substitutes, continuations, max_examples=max_examples)
    return med.run(layers, heads=heads, select_k=select_k, select_method=select_method)
