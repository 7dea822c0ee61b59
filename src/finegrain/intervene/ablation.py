"""Ablation inside the model (Dalvi et al. 2019; Lakretz et al. 2019).

* :func:`model_ablation_curve`: remove the top / random / bottom *k* neurons of a ranking *inside
  the model* and measure the model's own output (accuracy of its head, LM loss, agreement on minimal
  pairs) for each *k*. (The probe-side ablation, which zeroes columns of the probe's input, is
  :mod:`finegrain.evaluate`'s.)
* :func:`single_unit_sweep`: ablate each unit of a layer alone and report the units whose removal
  changes the output most (Lakretz et al.'s search for "number units"). The sweep is batched — the
  evaluation batch is repeated once per unit of a chunk and copy *j* ablates unit *j* — and shares the
  layers below the edited one (:func:`finegrain.intervene.resume.shared_prefix`): they are computed
  once for all copies.
* :func:`sweep_agreement`: how well a cheap estimate of every unit's effect (attribution patching,
  Nanda 2023) ranks the units the exact sweep ranks.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from finegrain.errors import ParameterError
from finegrain.intervene.edits import Mean, PerRow, Zero, intervene, mean_values
from finegrain.intervene.resume import shared_prefix
from finegrain.intervene.scoring import Objective, repeat_batch
from finegrain.models.base import ModelAdapter, eval_mode
from finegrain.neurons import Neuron
from finegrain.results import Result, plain_table, write_text_atomic

MODES = ("top", "random", "bottom")
METHODS = ("zero", "mean")


def ranked_neurons(ranking) -> list[Neuron]:
    """Neurons of a ranking (best first): a ``finegrain.rank.Ranking`` or anything with
    ``.neurons``, or a list of :class:`Neuron` / ``"layer:unit"`` strings."""
    items = ranking.neurons if hasattr(ranking, "neurons") else ranking
    if isinstance(items, str):
        items = [s for s in items.split(",") if s.strip()]
    return [Neuron.parse(n) for n in items]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"unknown ablation method {method!r}; use one of {METHODS}")


def rows_to_csv(rows: Sequence[dict], path=None) -> str:
    """``rows`` (dicts with the same keys) as CSV text, also written (atomically) to ``path`` if given."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if path is not None:
        write_text_atomic(path, buf.getvalue())
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
@dataclass
class ModelAblationCurve(Result):
    """The model's own score after ablating the first ``k`` neurons of each selection of a ranking
    (``scores[mode][i]`` for ``ks[i]``; ``random`` is the mean over ``random_repeats`` draws and
    ``spread["random"]`` their standard deviation)."""

    objective: str
    ks: list[int]
    baseline: float
    scores: dict[str, list[float]]
    method: str = "zero"
    higher_is_better: bool = True
    spread: dict[str, list[float]] = field(default_factory=dict)
    random_repeats: int = 0
    n_neurons: int = 0

    def rows(self) -> list[dict]:
        return [{"k": k, **{m: self.scores[m][i] for m in self.scores}} for i, k in enumerate(self.ks)]

    def to_csv(self, path=None) -> str:
        """One row per ``k``: the score of each selection."""
        return rows_to_csv(self.rows(), path)

    def table(self) -> str:
        modes = list(self.scores)
        rows = []
        for i, k in enumerate(self.ks):
            row = [k]
            for m in modes:
                sd = self.spread.get(m)
                row.append(f"{self.scores[m][i]:.4f}" + (f" ± {sd[i]:.4f}" if sd else ""))
            rows.append(row)
        head = (f"{self.method} ablation inside the model; {self.objective} without ablation = {self.baseline:.4f} "
                f"({'higher' if self.higher_is_better else 'lower'} is better)")
        return head + "\n" + plain_table(["k", *modes], rows, ".4f", "right")

    def plot(self, path) -> Path:
        from finegrain.viz.intervene import plot_model_ablation  # heavy (matplotlib): imported only to draw

        return plot_model_ablation(self.ks, self.scores, self.baseline, path, self.objective, self.spread,
                                   f"{self.method} ablation inside the model")


def ablation_edit(neurons: Sequence[Neuron], method: str = "zero", reference=None, adapter=None):
    """The edit that removes ``neurons``: ``"zero"`` or ``"mean"`` (over ``reference``: an
    ActivationStore, texts, or a vector)."""
    _check_method(method)
    if method == "zero":
        return Zero(list(neurons))
    if reference is None:
        raise ParameterError("mean ablation needs a reference (an ActivationStore, texts or a vector of means)")
    return Mean(list(neurons), mean_values(adapter, neurons, reference))


def model_ablation_curve(
    adapter: ModelAdapter,
    ranking,
    objective: Objective,
    ks: Sequence[int] = (1, 2, 5, 10, 20),
    modes: Sequence[str] = MODES,
    method: str = "zero",
    reference=None,
    random_state: int = 0,
    random_repeats: int = 3,
    progress: bool | None = None,
) -> ModelAblationCurve:
    """Ablate the top / random / bottom ``k`` neurons of ``ranking`` inside the model for each ``k``
    and evaluate ``objective`` on the edited model (Dalvi et al. 2019, ablation; random is averaged
    over ``random_repeats`` draws of ``k`` neurons of the ranking, with their standard deviation).
    ``method``: ``"zero"`` or ``"mean"`` (the neurons' means over ``reference``)."""
    neurons = ranked_neurons(ranking)
    if not neurons:
        raise ParameterError("empty ranking")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ParameterError(f"unknown modes {bad}; use {MODES}")
    _check_method(method)
    if random_repeats < 1 and "random" in modes:
        raise ParameterError(f"random_repeats must be >= 1, got {random_repeats}")
    ks = sorted({int(k) for k in ks if 0 <= int(k) <= len(neurons)})
    if not ks:
        raise ParameterError(f"no k in range 0..{len(neurons)}")
    with eval_mode(adapter):
        means = None
        if method == "mean":
            if reference is None:
                raise ParameterError("mean ablation needs a reference (an ActivationStore, texts or a vector)")
            means = dict(zip(neurons, mean_values(adapter, neurons, reference)))
        rng = np.random.default_rng(random_state)
        baseline = objective(adapter)

        def score(sel: list[Neuron]) -> float:
            if not sel:
                return baseline
            edit = Zero(sel) if means is None else Mean(sel, np.array([means[n] for n in sel]))
            with intervene(adapter, edit):
                return objective(adapter)

        scores: dict[str, list[float]] = {m: [] for m in modes}
        spread: dict[str, list[float]] = {}
        draws = [rng.permutation(len(neurons)) for _ in range(max(1, random_repeats))]
        for k in tqdm(ks, desc="ablation", disable=None if progress is None else not progress):
            for m in modes:
                if m == "top":
                    scores[m].append(score(neurons[:k]))
                elif m == "bottom":
                    scores[m].append(score(neurons[len(neurons) - k:] if k else []))
                else:
                    vals = [score([neurons[i] for i in d[:k]]) for d in draws]
                    scores[m].append(float(np.mean(vals)))
                    spread.setdefault(m, []).append(float(np.std(vals)))
    return ModelAblationCurve(objective.name, ks, baseline, scores, method, objective.higher_is_better, spread,
                              random_repeats if "random" in modes else 0, len(neurons))


# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult(Result):
    """Single-unit ablation sweep over one layer. ``damage`` is positive when ablating the unit
    makes the output worse (lower accuracy, higher loss). ``shared_layers``: how many blocks / LSTM
    layers below the edit were computed once for all units."""

    layer: str
    objective: str
    baseline: float
    units: list[int]
    scores: list[float]
    higher_is_better: bool = True
    seconds: float = 0.0
    forwards: int = 0
    method: str = "zero"
    shared_layers: int = 0

    @property
    def damage(self) -> np.ndarray:
        s = np.asarray(self.scores) - self.baseline
        return -s if self.higher_is_better else s

    def top(self, k: int = 10) -> list[tuple[Neuron, float]]:
        """The ``k`` units whose ablation hurts the output most (largest damage first)."""
        order = np.argsort(-self.damage, kind="stable")[:k]
        return [(Neuron(self.layer, self.units[i]), float(self.damage[i])) for i in order]

    def rows(self) -> list[dict]:
        d = self.damage
        return [{"neuron": str(Neuron(self.layer, u)), "score": s, "damage": float(d[i])}
                for i, (u, s) in enumerate(zip(self.units, self.scores))]

    def to_csv(self, path=None) -> str:
        """One row per unit, the most damaging first."""
        return rows_to_csv(sorted(self.rows(), key=lambda r: -r["damage"]), path)

    def table(self, k: int = 20) -> str:
        head = (f"{self.method} ablation of each unit of {self.layer} alone ({len(self.units)} units); "
                f"{self.objective} without ablation = {self.baseline:.4f}; {self.seconds:.2f} s, "
                f"{self.forwards} forward passes" + (f", {self.shared_layers} lower layers shared"
                                                     if self.shared_layers else ""))
        d = self.damage
        rows = [[str(n), self.scores[self.units.index(n.unit)], dmg] for n, dmg in self.top(k)]
        tail = f"\nmean damage {float(d.mean()):+.4f}, median {float(np.median(d)):+.4f}" if len(d) else ""
        return head + "\n" + plain_table(["neuron", self.objective, "damage"], rows, ".4f", "right") + tail

    def plot(self, path) -> Path:
        from finegrain.viz.intervene import plot_sweep  # heavy (matplotlib): imported only to draw

        return plot_sweep(self.units, self.damage, path, self.layer, self.objective)


def _sweep_values(adapter, layer, units, method, reference):
    _check_method(method)
    if method == "zero":
        return None
    if reference is None:
        raise ParameterError("mean ablation needs a reference (an ActivationStore, texts or a vector)")
    return torch.as_tensor(mean_values(adapter, [Neuron(layer, u) for u in units], reference))


def single_unit_sweep(
    adapter: ModelAdapter,
    layer: str,
    objective: Objective,
    units: Sequence[int] | None = None,
    method: str = "zero",
    reference=None,
    max_rows: int = 512,
    batched: bool = True,
    share_prefix: bool = True,
    progress: bool | None = None,
) -> SweepResult:
    """Ablate each unit of ``layer`` alone and score ``objective`` (Lakretz et al. 2019).

    Batched (objectives that score stacked copies: LM loss, accuracy, agreement on HF decoders and
    LSTM LMs): the objective's batch of ``n`` rows is stacked ``c`` times (``c*n <= max_rows``) and
    copy ``j`` ablates unit ``j`` through one :class:`PerRow` edit, so ``ceil(units / c)`` forward
    passes cover the layer. With ``share_prefix`` the layers below ``layer`` run once for all
    copies (:func:`~finegrain.intervene.resume.shared_prefix`; identical values). Other objectives
    fall back to one pass per unit.
    """
    size = adapter.check_layer(layer)
    units = list(range(size)) if units is None else [int(u) for u in units]
    if any(not 0 <= u < size for u in units):
        raise ParameterError(f"unit out of range for {layer} ({size} units)")
    if max_rows < 1:
        raise ParameterError(f"max_rows must be >= 1, got {max_rows}")
    disable = None if progress is None else not progress
    with eval_mode(adapter):
        values = _sweep_values(adapter, layer, units, method, reference)
        t0 = time.perf_counter()
        scores: list[float] = []
        forwards = 1
        shared = 0
        if batched and objective.batched(adapter):
            n = len(objective.batch)
            c = max(1, max_rows // n)
            with torch.no_grad(), shared_prefix(adapter, layer, objective.batch, share_prefix) as prefix:
                baseline = objective.reduce(objective.row_scores(adapter, prefix.output))
                shared = prefix.skipped
                for start in tqdm(range(0, len(units), c), desc=f"sweep {layer}", disable=disable):
                    chunk = units[start:start + c]
                    big = repeat_batch(objective.batch, len(chunk))
                    per_row = torch.tensor(chunk).repeat_interleave(n)[:, None]
                    vals = None if values is None else values[start:start + len(chunk)].repeat_interleave(n)[:, None]
                    with intervene(adapter, PerRow(layer, per_row, vals)):
                        out = adapter.forward(big)
                    rows = objective.row_scores(adapter, out).reshape(len(chunk), -1)
                    scores.extend(objective.reduce(r) for r in rows)
                    forwards += 1
        else:
            baseline = objective(adapter)
            for j, u in enumerate(tqdm(units, desc=f"sweep {layer}", disable=disable)):
                edit = Zero(Neuron(layer, u)) if values is None else Mean(Neuron(layer, u), values[j:j + 1])
                with intervene(adapter, edit):
                    scores.append(objective(adapter))
                forwards += 1
    return SweepResult(layer, objective.name, baseline, units, scores, objective.higher_is_better,
                       time.perf_counter() - t0, forwards, method, shared)


def benchmark_sweep(adapter: ModelAdapter, layer: str, objective: Objective, n_loop_units: int = 8,
                    max_rows: int = 512, units: Sequence[int] | None = None, repeats: int = 3) -> dict:
    """Seconds per unit of the sweep with the lower layers shared, batched without sharing, and one
    forward pass per unit, against a plain forward pass of the objective's batch (medians of
    ``repeats``; for ``make bench``). ``units`` limits the batched sweeps (default: the whole layer)."""
    with torch.no_grad(), eval_mode(adapter):
        objective(adapter)  # warm-up
        plain = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            objective(adapter)
            plain.append(time.perf_counter() - t)
    runs = {}
    for name, share in (("shared", True), ("unshared", False)):
        secs = []
        for _ in range(max(1, repeats)):
            res = single_unit_sweep(adapter, layer, objective, units=units, max_rows=max_rows, share_prefix=share,
                                    progress=False)
            secs.append(res.seconds / max(1, len(res.units)))
        runs[name] = (float(np.median(secs)), res)
    loop_units = list(range(min(n_loop_units, adapter.check_layer(layer))))
    loop = single_unit_sweep(adapter, layer, objective, units=loop_units, batched=False, progress=False)
    plain_s = float(np.median(plain))
    shared_s, res = runs["shared"]
    return {
        "layer": layer,
        "units": len(res.units),
        "plain_forward_s": plain_s,
        "batched_s_per_unit": shared_s,
        "unshared_s_per_unit": runs["unshared"][0],
        "loop_s_per_unit": loop.seconds / max(1, len(loop_units)),
        "batched_forwards": res.forwards,
        "shared_layers": res.shared_layers,
        "plain_forwards_per_unit": shared_s / plain_s,
        "unshared_plain_forwards_per_unit": runs["unshared"][0] / plain_s,
    }


# ---------------------------------------------------------------------------------------------
@dataclass
class SweepAgreement(Result):
    """How an estimate of every unit's effect agrees with the exact single-unit sweep: Pearson and
    Spearman correlation over units, and the share of the exact top-``k`` units (by |effect|) that are
    also the estimate's top ``k``."""

    layer: str
    method: str
    n_units: int
    pearson: float
    spearman: float
    k: int
    top_k_overlap: float

    def table(self) -> str:
        return (f"{self.method} vs the exact single-unit sweep of {self.layer} ({self.n_units} units): "
                f"Pearson {self.pearson:+.3f}, Spearman {self.spearman:+.3f}, top-{self.k} overlap "
                f"{self.top_k_overlap:.2f}")


def sweep_agreement(sweep: SweepResult, estimate: Sequence[float], k: int = 10,
                    method: str = "estimate") -> SweepAgreement:
    """Compare the exact effect of ablating each unit (``sweep.scores - sweep.baseline``) with an
    ``estimate`` of it, one value per ``sweep.units`` in that order — e.g. attribution patching's
    first-order estimate (a_ablated − a) · ∂m/∂a (Nanda 2023), whose agreement with the exact sweep
    issue 19 asks to report."""
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    exact = np.asarray(sweep.scores, dtype=np.float64) - sweep.baseline
    if est.shape != exact.shape:
        raise ParameterError(f"the estimate has {est.size} values, the sweep {exact.size} units")
    if exact.size < 2:
        raise ParameterError("agreement needs at least two units")
    k = max(1, min(int(k), exact.size))
    top_exact = set(np.argsort(-np.abs(exact), kind="stable")[:k].tolist())
    top_est = set(np.argsort(-np.abs(est), kind="stable")[:k].tolist())
    constant = np.ptp(exact) == 0 or np.ptp(est) == 0
    pearson = float("nan") if constant else float(stats.pearsonr(exact, est)[0])
    spearman = float("nan") if constant else float(stats.spearmanr(exact, est)[0])
    return SweepAgreement(sweep.layer, method, int(exact.size), pearson, spearman, k, len(top_exact & top_est) / k)
