"""Ablation inside the model (Dalvi et al. 2019; Lakretz et al. 2019).

* :func:`ablation_curve`: remove the top / random / bottom *k* neurons of a ranking and measure the
  model's own output (accuracy of its head, LM loss, agreement on minimal pairs) for each *k*.
* :func:`single_unit_sweep`: ablate each unit of a layer alone and report the units whose removal
  changes the output most (Lakretz et al.'s search for "number units"). The sweep is batched: the
  evaluation batch is repeated once per unit of a chunk and copy *j* ablates unit *j*, so one
  forward pass evaluates many units.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.intervene.edits import Mean, PerRow, Zero, intervene, mean_values, neuron_list
from finegrain.intervene.scoring import Objective, repeat_batch
from finegrain.models.base import ModelAdapter, ModelError
from finegrain.neurons import Neuron

MODES = ("top", "random", "bottom")


def ranked_neurons(ranking) -> list[Neuron]:
    """Neurons of a ranking (best first): a ``finegrain.rank.Ranking`` or anything with
    ``.neurons``, or a list of :class:`Neuron` / ``"layer:unit"`` strings."""
    items = ranking.neurons if hasattr(ranking, "neurons") else ranking
    if isinstance(items, str):
        items = [s for s in items.split(",") if s.strip()]
    return [Neuron.parse(n) for n in items]


def _save_table(rows: list[dict], path: str | os.PathLike | None) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = buf.getvalue()
    if path is not None:
        with open(path, "w", newline="") as f:
            f.write(text)
    return text


def _save_json(obj: dict, path) -> str:
    text = json.dumps(obj, indent=2, default=str)
    if path is not None:
        with open(path, "w") as f:
            f.write(text)
    return text


# ---------------------------------------------------------------------------------------------
@dataclass
class AblationCurve:
    """Score of the model's output after ablating the first ``k`` neurons of each selection."""

    objective: str
    ks: list[int]
    baseline: float
    scores: dict[str, list[float]]
    method: str = "zero"
    higher_is_better: bool = True

    def rows(self) -> list[dict]:
        return [{"k": k, **{m: self.scores[m][i] for m in self.scores}} for i, k in enumerate(self.ks)]

    def to_csv(self, path=None) -> str:
        return _save_table(self.rows(), path)

    def to_json(self, path=None) -> str:
        return _save_json(asdict(self), path)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m, ys in self.scores.items():
            ax.plot(self.ks, ys, marker="o", label=f"{m} k ablated")
        ax.axhline(self.baseline, color="gray", ls="--", label="no ablation")
        ax.set_xlabel("k neurons ablated")
        ax.set_ylabel(self.objective)
        ax.set_title(title or f"{self.method} ablation")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)


def ablation_edit(neurons: Sequence[Neuron], method: str = "zero", reference=None, adapter=None):
    """The edit that removes ``neurons``: ``"zero"`` or ``"mean"`` (over ``reference``: an
    ActivationStore, texts, or a vector)."""
    if method == "zero":
        return Zero(list(neurons))
    if method == "mean":
        if reference is None:
            raise ModelError("mean ablation needs a reference (ActivationStore or texts)")
        return Mean(list(neurons), mean_values(adapter, neurons, reference))
    raise ModelError(f"unknown ablation method {method!r}; use 'zero' or 'mean'")


def ablation_curve(
    adapter: ModelAdapter,
    ranking,
    objective: Objective,
    ks: Sequence[int] = (1, 2, 5, 10, 20),
    modes: Sequence[str] = MODES,
    method: str = "zero",
    reference=None,
    seed: int = 0,
    random_repeats: int = 3,
) -> AblationCurve:
    """Ablate the top / random / bottom ``k`` neurons of ``ranking`` for each ``k`` and evaluate
    ``objective`` on the edited model (Dalvi et al. 2019, Sec. ablation; random is averaged over
    ``random_repeats`` draws)."""
    neurons = ranked_neurons(ranking)
    if not neurons:
        raise ModelError("empty ranking")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ModelError(f"unknown modes {bad}; use {MODES}")
    ks = sorted({int(k) for k in ks if 0 <= int(k) <= len(neurons)})
    if not ks:
        raise ModelError(f"no k in range 0..{len(neurons)}")
    means = None
    if method == "mean":
        means = dict(zip(neurons, mean_values(adapter, neurons, reference)))
    rng = np.random.default_rng(seed)
    baseline = objective(adapter)

    def score(sel: list[Neuron]) -> float:
        if not sel:
            return baseline
        edit = Zero(sel) if means is None else Mean(sel, np.array([means[n] for n in sel]))
        with intervene(adapter, edit):
            return objective(adapter)

    scores: dict[str, list[float]] = {m: [] for m in modes}
    draws = [rng.permutation(len(neurons)) for _ in range(max(1, random_repeats))]
    for k in tqdm(ks, desc="ablation", disable=None):
        for m in modes:
            if m == "top":
                scores[m].append(score(neurons[:k]))
            elif m == "bottom":
                scores[m].append(score(neurons[len(neurons) - k:] if k else []))
            else:
                scores[m].append(float(np.mean([score([neurons[i] for i in d[:k]]) for d in draws])))
    return AblationCurve(objective.name, ks, baseline, scores, method, objective.higher_is_better)


# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Single-unit ablation sweep over one layer. ``damage`` is positive when ablating the unit
    makes the output worse (lower accuracy, higher loss)."""

    layer: str
    objective: str
    baseline: float
    units: list[int]
    scores: list[float]
    higher_is_better: bool = True
    seconds: float = 0.0
    forwards: int = 0
    meta: dict = field(default_factory=dict)

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
        return _save_table(sorted(self.rows(), key=lambda r: -r["damage"]), path)

    def to_json(self, path=None) -> str:
        return _save_json(asdict(self), path)

    def plot(self, path, top: int = 20) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(self.units, self.damage, width=1.0)
        for n, d in self.top(min(top, 5)):
            ax.annotate(str(n.unit), (n.unit, d), fontsize=7, ha="center", va="bottom")
        ax.set_xlabel(f"unit of {self.layer}")
        ax.set_ylabel(f"damage to {self.objective}")
        ax.set_title("single-unit ablation sweep")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)


def single_unit_sweep(
    adapter: ModelAdapter,
    layer: str,
    objective: Objective,
    units: Sequence[int] | None = None,
    method: str = "zero",
    reference=None,
    max_rows: int = 512,
    batched: bool = True,
) -> SweepResult:
    """Ablate each unit of ``layer`` alone and score ``objective`` (Lakretz et al. 2019).

    Batched (default, HF models): the objective's batch of ``n`` rows is stacked ``c`` times
    (``c*n <= max_rows``) and copy ``j`` ablates unit ``j`` through one :class:`PerRow` edit, so
    ``ceil(units / c)`` forward passes cover the layer. Adapters whose objective cannot be batched
    (the char LSTM scoring through ``sequence_logprob``) fall back to one pass per unit.
    """
    size = adapter.check_layer(layer)
    units = list(range(size)) if units is None else [int(u) for u in units]
    if any(not 0 <= u < size for u in units):
        raise ModelError(f"unit out of range for {layer} ({size} units)")
    values = None
    if method == "mean":
        values = torch.as_tensor(mean_values(adapter, [Neuron(layer, u) for u in units], reference))
    elif method != "zero":
        raise ModelError(f"unknown ablation method {method!r}; use 'zero' or 'mean'")
    t0 = time.perf_counter()
    baseline = objective(adapter)
    scores: list[float] = []
    forwards = 1
    if batched and objective.batched(adapter):
        n = len(objective.batch)
        c = max(1, max_rows // n)
        with torch.no_grad():
            for start in tqdm(range(0, len(units), c), desc=f"sweep {layer}", disable=None):
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
        for j, u in enumerate(tqdm(units, desc=f"sweep {layer}", disable=None)):
            edit = Zero(Neuron(layer, u)) if values is None else Mean(Neuron(layer, u), values[j:j + 1])
            with intervene(adapter, edit):
                scores.append(objective(adapter))
            forwards += 1
    return SweepResult(layer, objective.name, baseline, units, scores, objective.higher_is_better,
                       time.perf_counter() - t0, forwards, {"method": method})


def benchmark_sweep(adapter: ModelAdapter, layer: str, objective: Objective, n_loop_units: int = 8,
                    max_rows: int = 512) -> dict:
    """Seconds per unit of a batched sweep vs one forward pass per unit vs a plain forward pass
    (for ``make bench``)."""
    with torch.no_grad():
        objective(adapter)  # warm-up
        t = time.perf_counter()
        objective(adapter)
        plain = time.perf_counter() - t
    res = single_unit_sweep(adapter, layer, objective, max_rows=max_rows)
    loop_units = list(range(min(n_loop_units, adapter.check_layer(layer))))
    loop = single_unit_sweep(adapter, layer, objective, units=loop_units, batched=False)
    return {
        "layer": layer,
        "units": len(res.units),
        "plain_forward_s": plain,
        "batched_s_per_unit": res.seconds / max(1, len(res.units)),
        "loop_s_per_unit": loop.seconds / max(1, len(loop_units)),
        "batched_forwards": res.forwards,
    }


def neurons_of_layer(adapter: ModelAdapter, layer: str) -> list[Neuron]:
    return neuron_list(adapter, layer)
