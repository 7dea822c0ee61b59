"""Causal mediation analysis of neurons and attention heads (Vig et al. 2020).

For a prompt ``u`` ("The nurse said that") and two continuations (" he" / " she"),
``y(u) = p(anti-stereotypical | u) / p(stereotypical | u)``, where which continuation is
stereotypical is decided by the model's own preference on the base prompt. The *set-gender*
intervention replaces the profession with the anti-stereotypical gendered word ("woman").

* total effect      TE  = y(set-gender) / y(base) − 1
* indirect effect   NIE = y(base input, mediator set to its value under set-gender) / y(base) − 1
* direct effect     NDE = y(set-gender input, mediator held at its base value) / y(base) − 1

TE ≠ NDE + NIE in general. Mediators are single neurons, attention heads (all units of a head in
``layer.i.attn``) or whole layers, at the *mediator positions*: ``"last"`` (the last prompt token /
LSTM step, works whatever the fillers' lengths), ``"slot"`` (the filler's tokens; Vig et al.
intervene there and keep one-token professions) or ``"all"`` (every token; the base and
set-gender prompts must have the same token count). For HF decoders the per-unit interventions
are batched: the prompt is repeated once per candidate mediator and copy *j* edits mediator *j*.

**Character LMs.** Pronouns are scored followed by a word boundary (" he" then a space, punctuation
or the end of the text; :mod:`finegrain.intervene.scoring`), so " her" and " help" do not count as
" he". Models that recompute their states for every prediction (textgenrnn reads a fresh
40-character window per predicted character) hold a different value of the mediator in each window;
the mediator is set, in each window, to its value under the other input *in the same window*
(:func:`~finegrain.intervene.scoring.continuation_scores_by_position`), so that setting a mediator to
its own value changes nothing, as it must.

**Plausibility** (:meth:`MediationResult.caveats`): the numbers describe gender bias only if the model
tracks gender at all. Every result checks, and says in ``caveats`` (printed by the CLI, in the JSON and
in ``table()``) when it fails: (1) *gender sensitivity*: for most templates the odds of the female
over the male pronoun after the female word ("The woman said that") are at least ``min_gender_ratio``
times those after the male word; (2) *TE's sign*: setting the anti-stereotypical gender should raise
y (TE > 0; for a fixed ``set_gender``, the sign each profession's stereotype predicts) for at least
``min_sign_share`` of the prompts; (3) *no mediator's |NIE| or |NDE| exceeds* ``max_effect_ratio`` × |TE|
(an effect many times the total means the edit pushes the model off its distribution, not that the
mediator carries the effect); (4) every profession having the same stereotype is noted: then the
"stereotype" is the model's pronoun prior.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.data.generate import gender_continuations, gender_substitutes, mediation_templates, professions
from finegrain.errors import NotFittedError, ParameterError
from finegrain.intervene.ablation import rows_to_csv
from finegrain.intervene.edits import Hook, PerRow, intervene
from finegrain.intervene.scoring import (
    ContinuationBatch,
    boundary_ids,
    continuation_logprobs,
    continuation_scores,
    continuation_scores_by_position,
    encode_continuations,
    is_hf_causal,
    is_lstm_lm,
    repeat_batch,
)
from finegrain.models.base import ModelAdapter, ModelError, eval_mode
from finegrain.neurons import Neuron
from finegrain.results import Result

log = logging.getLogger(__name__)

POSITIONS = ("last", "slot", "all")
#: default thresholds of the plausibility criteria (module docstring)
CRITERIA = {"min_gender_ratio": 2.0, "min_sign_share": 0.8, "max_effect_ratio": 5.0}


def builtin_gender_data() -> tuple[list[str], list[str], dict[str, str], dict[str, str]]:
    """``(templates, professions, substitutes, continuations)`` of the built-in resources
    (:mod:`finegrain.data.generate`: Vig et al. 2020's templates, ~100 professions, man/woman, he/she)."""
    return mediation_templates(), professions(), gender_substitutes(), gender_continuations()


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
    pos: list = field(default_factory=list, repr=False)  # HF: [base mask [2,Tb], alt mask [2,Ta]]
    idx: list = field(default_factory=list, repr=False)  # HF: [base->alt index [2,Tb], alt->base [2,Ta]]
    cache: list = field(default_factory=list, repr=False)  # [base {layer: values}, alt {layer: values}]

    @property
    def te(self) -> float:
        return float(np.expm1(self.log_y_alt - self.log_y_base))

    def summary(self) -> dict:
        return {"template": self.template, "profession": self.profession, "base": self.base, "alt": self.alt,
                "stereotypical": self.stereotypical, "anti": self.anti, "y_base": float(np.exp(self.log_y_base)),
                "y_alt": float(np.exp(self.log_y_alt)), "te": self.te}


@dataclass
class Effects(Result):
    """Mean NIE / NDE over examples of each candidate mediator of one layer (``labels`` name
    them: unit indices, head indices, or "all")."""

    layer: str
    kind: str = field()  # "neuron" | "head" | "layer" | "set" (a field, not Result's class-level kind)
    labels: list = field()
    nie: list[float] = field()
    nde: list[float] = field()

    def top(self, k: int = 10) -> list[tuple[object, float]]:
        order = np.argsort(-np.asarray(self.nie), kind="stable")[:k]
        return [(self.labels[i], float(self.nie[i])) for i in order]

    def table(self, k: int = 10) -> str:
        head = f"{self.kind} mediators of {self.layer} ({len(self.labels)}): largest NIE first"
        rows = [f"  {self._name(lab):<22} NIE {self.nie[i]:+.4f}  NDE {self.nde[i]:+.4f}"
                for lab, i in ((self.labels[j], j) for j in np.argsort(-np.asarray(self.nie), kind="stable")[:k])]
        return "\n".join([head, *rows])

    def _name(self, label) -> str:
        if self.kind == "neuron":
            return str(Neuron(self.layer, int(label)))
        if self.kind == "head":
            return f"{self.layer} head {label}"
        return f"{self.layer} ({label})"


@dataclass
class MediationResult(Result):
    """Tables of effects with the plausibility checks of the module docstring: ``caveats`` lists, in
    words, every criterion the run fails (empty when all pass); ``gender_checks`` holds, per template,
    the pronoun odds after the two gendered words."""

    te: float
    examples: list[dict]
    effects: list[Effects] = field(default_factory=list)
    selections: list[dict] = field(default_factory=list)
    positions: str = "last"
    gender_checks: list[dict] = field(default_factory=list)
    set_gender: str = "anti"
    word_boundary: bool = False
    criteria: dict = field(default_factory=lambda: dict(CRITERIA))
    lstm_state: str | None = None
    caveats: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.caveats:
            self.caveats = self.check()

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = dict(d)
        d["effects"] = [e if isinstance(e, Effects) else Effects.from_dict(e) for e in d.get("effects", [])]
        return d

    # -- plausibility ------------------------------------------------------------------------
    def check(self) -> list[str]:
        """The caveats of the plausibility criteria (module docstring) this result fails."""
        c = {**CRITERIA, **self.criteria}
        out = []
        if self.gender_checks:
            ratios = np.exp([g["log_ratio"] for g in self.gender_checks])
            ok = ratios >= c["min_gender_ratio"]
            if ok.mean() <= 0.5:
                a, b = self.gender_checks[0].get("groups", ["male", "female"])
                out.append(
                    f"the model barely tracks gender: after the {b} word the odds of the {b} over the {a} "
                    f"pronoun are {_span(ratios)} times those after the {a} word (criterion: at least "
                    f"{c['min_gender_ratio']:g} for most templates; {int(ok.sum())} of {len(ok)} pass), so these "
                    "effects do not measure gender bias")
        if self.examples:
            te = np.array([e["te"] for e in self.examples], dtype=float)
            expected = np.array([1.0 if self.set_gender in ("anti", e["anti"]) else -1.0 for e in self.examples])
            share = float(np.mean(np.sign(te) == expected))
            if share < c["min_sign_share"]:
                if share == 0:
                    what = ("TE has the wrong sign for every prompt: setting the gender word makes the pronoun of "
                            "that gender less likely relative to the other, the opposite of gender tracking")
                else:
                    what = (f"TE's sign is inconsistent across professions: {share:.0%} of {len(te)} prompts have "
                            f"the sign gender tracking predicts (criterion: {c['min_sign_share']:.0%})")
                out.append(f"{what} (TE per prompt from {te.min():+.3f} to {te.max():+.3f})")
            stereo = {e["stereotypical"] for e in self.examples}
            profs = {e["profession"] for e in self.examples}
            if len(stereo) == 1 and len(profs) >= 4:
                out.append(f"every one of the {len(profs)} professions is '{stereo.pop()}'-stereotyped: the "
                           "'stereotype' is the model's pronoun prior after any subject, not a property of the "
                           "professions")
        big = []
        ref = max(abs(self.te), 1e-12)
        for e in self.effects:
            for name, vals in (("NIE", e.nie), ("NDE", e.nde)):
                for lab, v in zip(e.labels, vals):
                    if v is not None and np.isfinite(v) and abs(v) > c["max_effect_ratio"] * ref:
                        big.append((abs(v), e, lab, v, name))
        if big:
            big.sort(key=lambda x: -x[0])
            _, e, lab, v, name = big[0]
            hint = (" (an LSTM hidden state set without its cell state is a state the model never has; "
                    "lstm_state='hc' sets both)" if self.lstm_state == "h" else "")
            out.append(f"{len(big)} effect(s) over {c['max_effect_ratio']:g} x |TE| = {abs(self.te):.4f} (largest: "
                       f"{e._name(lab)}, {name} {v:+.4f} = {abs(v) / ref:.1f} x |TE|): such an edit moves the model "
                       f"off its distribution (or TE is close to 0); it is not a share of the total effect{hint}")
        return out

    # -- views -------------------------------------------------------------------------------
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
        """One row per mediator: kind, layer, label, NIE, NDE and the mean TE."""
        return rows_to_csv(self.rows(), path)

    def table(self) -> str:
        lines = [f"causal mediation (Vig et al. 2020), positions={self.positions!r}, "
                 f"{len(self.examples)} prompts; mean TE = {self.te:+.4f}"
                 + (" (pronouns scored up to a word boundary)" if self.word_boundary else "")
                 + (f"; LSTM mediators: {'h and c' if self.lstm_state == 'hc' else 'h only'}"
                    if self.lstm_state else "")]
        for ex in self.examples:
            lines.append(f"  {ex['base']!r:<34} stereotype {ex['stereotypical']:<7} y {ex['y_base']:.4f} -> "
                         f"{ex['y_alt']:.4f} ({ex['alt']!r}); TE {ex['te']:+.4f}")
        for g in self.gender_checks:
            lines.append(f"  gender check {g.get('template', '')!r}: pronoun odds ratio between the two gendered "
                         f"words {np.exp(g['log_ratio']):.3f}")
        for e in self.by_kind("layer"):
            lines.append(f"  {e.layer:<14} whole layer   NIE {e.nie[0]:+.4f}  NDE {e.nde[0]:+.4f}")
        for e in self.by_kind("neuron") + self.by_kind("head"):
            lines.append(e.table(5))
        for sel in self.selections:
            lines.append(f"  {sel['layer']} {sel['method']}: {', '.join(sel['neurons'])} "
                         f"NIE {sel['nie_curve'][-1]:+.4f}")
        if self.caveats:
            lines.append("CAVEATS (read before the numbers):")
            lines.extend(f"  - {c}" for c in self.caveats)
        return "\n".join(lines)

    def heatmap(self, path, kind: str = "neuron", top: int = 50) -> Path:
        """``kind="neuron"``: layers x neuron rank (each layer's NIEs sorted, top ``top``);
        ``kind="head"``: layers x heads."""
        from finegrain.viz.intervene import plot_effect_heatmap  # heavy (matplotlib): imported only to draw

        effs = self.by_kind(kind)
        if not effs:
            raise ParameterError(f"no {kind} effects to plot")
        if kind == "neuron":
            width = min(top, max(len(e.nie) for e in effs))
            M = np.full((len(effs), width), np.nan)
            for i, e in enumerate(effs):
                v = np.sort(np.asarray(e.nie, dtype=float))[::-1][:width]
                M[i, : len(v)] = v
            xlabel = "neuron rank by NIE"
        else:
            width = max(len(e.nie) for e in effs)
            M = np.full((len(effs), width), np.nan)
            for i, e in enumerate(effs):
                M[i, : len(e.nie)] = e.nie
            xlabel = kind
        caveat = f"caveat: {len(self.caveats)} plausibility check(s) failed, see the table" if self.caveats else ""
        return plot_effect_heatmap(M, [e.layer for e in effs], path, xlabel,
                                   f"natural indirect effect ({kind}); TE = {self.te:.3g}", caveat)

    def plot(self, path) -> Path:
        return self.heatmap(path, "neuron" if self.by_kind("neuron") else "head")

    def has_plot(self) -> bool:
        return bool(self.by_kind("neuron") or self.by_kind("head"))


def _unchanged(act, step):
    return None


def _no_edits(t):
    return None


def _span(x: np.ndarray) -> str:
    return f"{x.min():.2f}" if np.ptp(x) < 0.005 else f"{x.min():.2f} to {x.max():.2f}"


# ---------------------------------------------------------------------------------------------
class Mediation:
    """Causal mediation analysis on one adapter (Vig et al. 2020).

    >>> med = Mediation(model).fit()                  # builtin templates x professions
    >>> med.total_effect(); med.neuron_effects("layer.3"); med.head_effects("layer.3.attn")
    >>> med.select("layer.3", k=5, method="greedy")
    >>> print(med.run("layer.3").table())             # effects with the plausibility caveats

    ``lstm_state`` (LSTMs): a mediator of ``lstm.k`` is the whole state of its units, the hidden state ``h``
    and the cell ``c`` together (``"hc"``, default), or ``h`` alone (``"h"``, the hook point as named), which
    combines one input's ``h`` with the other's ``c``, a state the model never has (on textgenrnn the
    whole-layer NIE of ``lstm.2`` is then over 2000 times TE). ``lstm.k.cell`` is always ``c`` alone.
    ``criteria`` overrides the thresholds of :data:`CRITERIA` (module docstring).
    """

    def __init__(self, adapter: ModelAdapter, positions: str = "last", set_gender: str = "anti",
                 max_rows: int = 256, progress: bool | None = None, word_boundary: bool | None = None,
                 criteria: dict | None = None, lstm_state: str = "hc"):
        if positions not in POSITIONS:
            raise ParameterError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.hf = is_hf_causal(adapter)
        if not self.hf and not is_lstm_lm(adapter):
            raise ModelError(f"{adapter.name}: mediation needs a HF causal LM (task='causal-lm') or an LSTM LM")
        if not self.hf and positions == "slot":
            raise ParameterError("positions='slot' needs a tokenizer with offsets (HF); use 'last' or 'all'")
        if max_rows < 1:
            raise ParameterError(f"max_rows must be >= 1, got {max_rows}")
        if lstm_state not in ("h", "hc"):
            raise ParameterError(f"lstm_state must be 'h' or 'hc', got {lstm_state!r}")
        bad = set(criteria or {}) - set(CRITERIA)
        if bad:
            raise ParameterError(f"unknown criteria {sorted(bad)}; use {sorted(CRITERIA)}")
        self.adapter = adapter
        self.positions = positions
        self.lstm_state = lstm_state
        self.set_gender = set_gender
        self.max_rows = int(max_rows)
        self.disable = None if progress is None else not progress
        self.word_boundary = bool(boundary_ids(adapter, word_boundary))
        self.criteria = {**CRITERIA, **(criteria or {})}
        self.examples: list[Example] = []
        self.skipped: list[tuple[str, str]] = []
        self.gender_checks: list[dict] = []

    # -- setup ---------------------------------------------------------------------------
    def fit(self, templates: Sequence[str] | None = None, professions: Sequence[str] | None = None,
            substitutes: dict[str, str] | None = None, continuations: dict[str, str] | None = None,
            max_examples: int | None = None) -> Mediation:
        """Build the examples, measure each profession's stereotype on the model, and the gender check
        of every template (the pronoun odds after each gendered word)."""
        t0, p0, s0, c0 = builtin_gender_data()
        templates = [t.replace("{profession}", "{}") for t in (templates or t0)]
        professions = list(professions or p0)
        substitutes = dict(substitutes or s0)
        continuations = dict(continuations or c0)
        if set(substitutes) != set(continuations) or len(substitutes) != 2:
            raise ParameterError(
                f"substitutes {substitutes} and continuations {continuations} must name the same two groups")
        groups = list(continuations)
        if self.set_gender not in ("anti", *groups):
            raise ParameterError(f"set_gender must be 'anti' or one of {groups}")
        for t in templates:
            if t.count("{}") != 1:
                raise ParameterError(f"template {t!r} must contain exactly one slot ('{{}}' or '{{profession}}')")
        pairs = [(t, p) for t in templates for p in professions]
        if max_examples:
            pairs = pairs[: int(max_examples)]
        bases = [t.format(p) for t, p in pairs]
        self.groups, self.continuations, self.substitutes = groups, continuations, substitutes
        with eval_mode(self.adapter):
            lp = {g: self._logprobs(bases, [continuations[g]] * len(bases)) for g in groups}
            self.gender_checks = self._gender_checks(list(dict.fromkeys(t for t, _ in pairs)))
            self.examples, self.skipped = [], []
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
            raise ParameterError(f"no usable mediation prompts (positions={self.positions!r}); first problem: "
                                 f"{self.skipped[0] if self.skipped else 'none given'}")
        return self

    def _logprobs(self, prefixes, continuations) -> np.ndarray:
        return continuation_logprobs(self.adapter, prefixes, continuations, word_boundary=self.word_boundary)

    def _gender_checks(self, templates: list[str]) -> list[dict]:
        """Per template: log of [p(c_a | word_a) / p(c_b | word_a)] / [p(c_a | word_b) / p(c_b | word_b)]
        for the two groups a, b (positive: the pronoun follows the subject's gender)."""
        a, b = self.groups
        prompts = [t.format(self.substitutes[g]) for t in templates for g in (a, b)]
        pa = self._logprobs(prompts, [self.continuations[a]] * len(prompts)).reshape(-1, 2)
        pb = self._logprobs(prompts, [self.continuations[b]] * len(prompts)).reshape(-1, 2)
        out = []
        for i, t in enumerate(templates):
            odds_a, odds_b = pa[i, 0] - pb[i, 0], pa[i, 1] - pb[i, 1]  # log odds of a over b after word a / b
            out.append({"template": t, "groups": [a, b], f"log_odds_after_{a}": float(odds_a),
                        f"log_odds_after_{b}": float(odds_b), "log_ratio": float(odds_a - odds_b)})
        return out

    def _conts(self, ex: Example) -> list[str]:
        return [self.continuations[ex.anti], self.continuations[ex.stereotypical]]

    def _prepare(self, ex: Example) -> str | None:
        conts = self._conts(ex)
        cbs = [encode_continuations(self.adapter, [u, u], conts, self.word_boundary) for u in (ex.base, ex.alt)]
        with torch.no_grad():
            if self.hf:
                lb, la = (continuation_scores(self.adapter, cb).double().cpu().numpy() for cb in cbs)
            else:  # the scorer the effects use (one prediction window at a time), so TE and NIE agree to the bit
                lb, la = ([float(continuation_scores_by_position(self.adapter, cb, r, _no_edits)[0]) for r in range(2)]
                          for cb in cbs)
        ex.log_y_base, ex.log_y_alt = float(lb[0] - lb[1]), float(la[0] - la[1])
        ex.cb, ex.cache = cbs, [{}, {}]
        if not self.hf:
            steps = [cb.prefix_lens[0] for cb in cbs]
            if self.positions == "all" and steps[0] != steps[1]:
                return f"'all' positions need equal lengths ({steps[0]} vs {steps[1]} steps)"
            return None
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
        ex.pos, ex.idx = masks, idx
        return None

    def _acts(self, ex: Example, which: int, layer: str):
        """The mediator's values under input ``which`` (0 base, 1 set-gender). HF: ``[2, T, D]`` of one
        forward. LSTMs: ``{(row, j): value}`` for the ``j``-th predicted position of each row, read in
        the computation that predicts it: ``[D]`` at the last prompt step (``"last"``) or ``[steps, D]``
        over the prompt (``"all"``)."""
        if layer not in ex.cache[which]:
            with torch.no_grad():
                if self.hf:
                    _, c = self.adapter.run_with_cache(ex.cb[which].batch, [layer])
                    ex.cache[which][layer] = c[layer]
                else:
                    ex.cache[which][layer] = self._lstm_values(ex.cb[which], layer)
        return ex.cache[which][layer]

    def _lstm_values(self, cb: ContinuationBatch, layer: str) -> dict:
        out = {}
        for r in range(len(cb)):
            ctx = cb.prefix_lens[r]
            ids = cb.batch.inputs["input_ids"][r:r + 1, : int(cb.batch.attention_mask[r].sum())]
            for j, t in enumerate(cb.positions(r)):
                seen: dict[int, torch.Tensor] = {}

                def grab(act, step, seen=seen, ctx=ctx):
                    if step < ctx:
                        seen[step] = act[0].detach().clone()

                with self.adapter.hooks({layer: grab}):
                    self.adapter.model.logits_at(ids, [t])
                if self.positions == "last":
                    out[(r, j)] = seen[ctx - 1]
                else:  # a window holds only its last steps: the others are never edited in it
                    blank = torch.zeros_like(next(iter(seen.values())))
                    out[(r, j)] = torch.stack([seen.get(s, blank) for s in range(ctx)])
        return out

    # -- effects -------------------------------------------------------------------------
    def total_effect(self) -> float:
        """Mean TE over examples."""
        self._check_fitted()
        return float(np.mean([ex.te for ex in self.examples]))

    def _check_fitted(self) -> None:
        if not self.examples:
            raise NotFittedError("call fit() first")

    def set_effects(self, layer: str, sets: Sequence[Sequence[int]] | torch.Tensor,
                    which: Sequence[str] = ("nie", "nde")) -> dict[str, np.ndarray]:
        """Mean NIE / NDE over examples of each unit set in ``layer`` (all sets the same size)."""
        self._check_fitted()
        size = self.adapter.check_layer(layer)
        sets = torch.as_tensor(sets, dtype=torch.long)
        if sets.dim() == 1:
            sets = sets[:, None]
        if sets.numel() and (int(sets.min()) < 0 or int(sets.max()) >= size):
            raise ParameterError(f"unit out of range for {layer} ({size} units)")
        out = {}
        with eval_mode(self.adapter):
            for w in which:
                if w not in ("nie", "nde"):
                    raise ParameterError(f"unknown effect {w!r}; use 'nie' or 'nde'")
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
                lp = continuation_scores(self.adapter, cb.repeated(n, big), out).double().view(n, 2)
                res.append((lp[:, 0] - lp[:, 1]).cpu().numpy())
        log_y = np.concatenate(res)
        return np.expm1(log_y - ex.log_y_base)

    def _state_layers(self, layer: str) -> list[str]:
        """The hook points one LSTM mediator spans: ``lstm.k`` alone, or with ``lstm_state="hc"`` the
        hidden and the cell state of the same units (the unit's whole state)."""
        parts = layer.split(".")
        if self.lstm_state == "hc" and len(parts) == 2 and parts[0] == "lstm":
            return [layer, f"{layer}.cell"]
        return [layer]

    def _effects_lstm(self, ex: Example, layer: str, sets: torch.Tensor, w: str) -> np.ndarray:
        tgt = 0 if w == "nie" else 1
        cb = ex.cb[tgt]
        points = self._state_layers(layer)
        src = {lay: self._acts(ex, 1 - tgt, lay) for lay in points}
        res = []
        with torch.no_grad():
            for chunk in sets.split(self.max_rows):
                lp = []
                for r in range(2):
                    ctx = cb.prefix_lens[r]
                    width = int(cb.batch.attention_mask[r].sum())
                    start = cb.positions(r)[0]

                    def edits_at(t, r=r, ctx=ctx, width=width, start=start, chunk=chunk):
                        out = []
                        for lay in points:
                            v = src[lay][(r, t - start)]
                            if self.positions == "last":
                                out.append(PerRow(lay, chunk, v[chunk], positions=[[ctx - 1]] * len(chunk)))
                                continue
                            vals = v.new_zeros(len(chunk), width, chunk.shape[1])
                            vals[:, :ctx] = v[:, chunk].permute(1, 0, 2)
                            out.append(PerRow(lay, chunk, vals, positions=[list(range(ctx))] * len(chunk)))
                        return out

                    lp.append(continuation_scores_by_position(self.adapter, cb, r, edits_at, len(chunk)).double())
                res.append((lp[0] - lp[1]).cpu().numpy() - self._lstm_reference(ex, tgt, points, len(chunk)))
        return np.expm1(np.concatenate(res))

    def _lstm_reference(self, ex: Example, tgt: int, points: list[str], rows: int) -> np.ndarray:
        """log y of input ``tgt`` scored exactly as the edited runs are (the same ``rows`` copies, hooks that
        change nothing at the same points), minus the offset to the base input's log y, so that an edit that
        changes nothing has an effect of exactly 0 (float reductions of an LSTM depend on the batch size, the
        row and on stepping)."""
        key = ("reference", tuple(points), rows)
        if key not in ex.cache[tgt]:
            noop = [Hook(lay, _unchanged) for lay in points]
            with torch.no_grad():
                lp = [continuation_scores_by_position(self.adapter, ex.cb[tgt], r, lambda t: noop, rows).double()
                      for r in range(2)]
            offset = (ex.log_y_alt if tgt else ex.log_y_base) - ex.log_y_base
            ex.cache[tgt][key] = (lp[0] - lp[1]).cpu().numpy() - offset
        return ex.cache[tgt][key]

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
            raise ParameterError(f"method must be 'greedy' or 'topk', got {method!r}")
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k}")
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

    def result(self, effects: Sequence[Effects] = (), selections: Sequence[dict] = ()) -> MediationResult:
        """A :class:`MediationResult` of the fitted examples with ``effects``, its caveats checked."""
        self._check_fitted()
        return MediationResult(self.total_effect(), [ex.summary() for ex in self.examples], list(effects),
                               list(selections), self.positions, self.gender_checks, self.set_gender,
                               self.word_boundary, dict(self.criteria), None if self.hf else self.lstm_state)

    def run(self, layers: Sequence[str] | str | None = None, heads: bool = True, neurons: bool = True,
            whole_layers: bool = True, select_k: int = 0, select_method: str = "greedy") -> MediationResult:
        """Effects of every neuron / head / whole layer of ``layers`` (default: residual layers for
        neurons, every ``layer.i.attn`` for heads), with the plausibility caveats."""
        self._check_fitted()
        lays = self.adapter.resolve_layers(layers)
        effects, selections = [], []
        for lay in lays:
            if neurons:
                eff = self.neuron_effects(lay)
                effects.append(eff)
                if select_k:
                    selections.append(self.select(lay, select_k, select_method, effects=eff))
            if whole_layers:
                effects.append(self.layer_effect(lay))
        if heads and self.hf:
            attn = [lay for lay in self.adapter.layers() if lay.endswith(".attn")]
            if layers not in (None, "hidden", "all"):
                attn = [lay for lay in attn if lay in lays or lay.rsplit(".", 1)[0] in lays]
            for lay in attn:
                effects.append(self.head_effects(lay))
        return self.result(effects, selections)


def mediation_analysis(adapter: ModelAdapter, templates=None, professions=None, substitutes=None,
                       continuations=None, layers=None, positions: str = "last", heads: bool = True,
                       select_k: int = 0, select_method: str = "greedy", max_examples: int | None = None,
                       max_rows: int = 256, word_boundary: bool | None = None) -> MediationResult:
    """One call: fit the examples, then neuron / head / layer effects (Vig et al. 2020)."""
    med = Mediation(adapter, positions=positions, max_rows=max_rows, word_boundary=word_boundary).fit(
        templates, professions, substitutes, continuations, max_examples=max_examples)
    return med.run(layers, heads=heads, select_k=select_k, select_method=select_method)
