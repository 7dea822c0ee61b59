"""Control tasks and selectivity (Hewitt & Liang 2019, "Designing and interpreting probes with
control tasks", EMNLP).

A control task gives every word *type* (case-sensitive) one random label drawn from the task's
empirical label distribution; every token of the type carries it, in every split. A probe that reaches
high control accuracy memorises word identity; selectivity = task accuracy - control accuracy, with
the same probe and hyperparameters, measures how much of the task accuracy the representation (rather
than the probe) explains. Shuffling labels per token is a different, wrong, baseline.

:func:`selectivity_layers` is :func:`finegrain.probe.probe_layers` with its control tasks (the same
probes, trained once), shown as selectivity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.errors import ParameterError
from finegrain.probe.baselines import control_labels, control_mapping
from finegrain.probe.layers import ALL, LayerProbeResult, probe_layers, view_words
from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.probe.sources import as_labelled
from finegrain.results import Result


@dataclass
class Selectivity(Result):
    """One task-vs-control comparison with the identical probe (Hewitt & Liang 2019)."""

    task_acc: float
    control_acc: float
    selectivity: float
    probe: str
    task_converged: bool | None = None
    control_converged: bool | None = None

    def table(self) -> str:
        return (f"task {self.task_acc:.4f}  control {self.control_acc:.4f}  selectivity {self.selectivity:+.4f}"
                f"  ({self.probe})")


def selectivity(train, test, probe: BaseProbe | None = None, control=None, seed: int = 0, dev=None) -> Selectivity:
    """Train ``probe`` (cloned twice: identical hyperparameters) on the task and on its control task over
    ``train`` (a labelled view, or ``(X, y)`` pair); report ``test`` accuracies and selectivity = task -
    control.

    Control labels come from the views' words — one mapping over train and test together, drawn from the
    training label distribution, so a word type has the same control label in both — unless given as
    ``control=(train_control, test_control)`` (or with ``dev``, a third entry).
    """
    probe = probe if probe is not None else LinearProbe()
    tr, y_tr = as_labelled(train, "train")
    te, y_te = as_labelled(test, "test")
    dv, y_dv = as_labelled(dev, "dev") if dev is not None else (None, None)
    if control is None:
        parts = [(tr, y_tr), (te, y_te)] + ([(dv, y_dv)] if dv is not None else [])
        words = [view_words(v) for v, _ in parts]
        if any(w is None for w in words):
            raise ParameterError("control tasks assign labels per word type: the views need words "
                                 "(a word-level store view, or ArrayView(..., words=...)), or pass control=")
        mapping = control_mapping(np.concatenate(words), np.concatenate([y for _, y in parts]), seed,
                                  dist_rows=np.arange(len(y_tr)))
        control = [np.array([mapping[w] for w in ws], dtype=y_tr.dtype) for ws in words]
    control = list(control)
    if len(control) != (3 if dv is not None else 2):
        raise ParameterError("control= needs one label array per split: (train, test) or (train, test, dev)")
    for c, y, name in zip(control, (y_tr, y_te, y_dv), ("train", "test", "dev")):
        if len(c) != len(y):
            raise ParameterError(f"control has {len(c)} {name} labels for {len(y)} rows")
    task = probe.clone().fit(tr, y_tr, dev=None if dv is None else (dv, y_dv))
    ctrl = probe.clone().fit(tr, control[0], dev=None if dv is None else (dv, control[2]))
    task_acc, control_acc = task.score(te, y_te), ctrl.score(te, control[1])
    return Selectivity(task_acc=float(task_acc), control_acc=float(control_acc),
                       selectivity=float(task_acc - control_acc), probe=repr(probe),
                       task_converged=getattr(task, "converged_", None),
                       control_converged=getattr(ctrl, "converged_", None))


@dataclass
class SelectivityResult(Result):
    """Per-layer task / control accuracy and selectivity (``rows`` is pandas-friendly; every row also has
    ``above_baseline`` and ``converged`` from the probing it comes from), and the test ``baselines``."""

    label: str
    probe: str
    seed: int
    rows: list[dict] = field(default_factory=list)
    baselines: dict = field(default_factory=dict)

    @classmethod
    def from_layers(cls, result: LayerProbeResult, seed: int = 0) -> SelectivityResult:
        """The selectivity view of a :class:`LayerProbeResult` whose control tasks were run."""
        rows = []
        for r in result.rows:
            if r.get("control_acc") is None:
                raise ParameterError(f"layer {r['layer']} has no control accuracy: probe with control=True")
            rows.append({"layer": r["layer"], "task_acc": r["test_acc"], "control_acc": r["control_acc"],
                         "selectivity": r["selectivity"], "above_baseline": r.get("above_baseline"),
                         "converged": r.get("converged"), "control_converged": r.get("control_converged")})
        return cls(label=result.label, probe=result.probe, seed=seed, rows=rows, baselines=dict(result.baselines))

    def table(self) -> str:
        base = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in self.baselines.items() if v is not None)
        head = f"{'layer':<16} {'task':>7} {'control':>8} {'selectivity':>12} {'above baseline':>15}"
        lines = [f"{self.label}: {self.probe}; baselines (test): {base or '-'}", head, "-" * len(head)]
        for r in self.rows:
            above = {True: "yes", False: "NO", None: "-"}[r.get("above_baseline")]
            lines.append(f"{r['layer']:<16} {r['task_acc']:>7.4f} {r['control_acc']:>8.4f} "
                         f"{r['selectivity']:>+12.4f} {above:>15}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike):
        """Selectivity per layer (PNG)."""
        from finegrain.viz import plot_selectivity  # heavy: matplotlib, imported when a plot is drawn

        return plot_selectivity({r["layer"]: r["selectivity"] for r in self.rows}, path,
                                title=f"{self.label}: selectivity per layer")


def selectivity_layers(
    data,
    label: str | None = None,
    layers: Sequence[str] | None = None,
    probe: BaseProbe | None = None,
    splits=None,
    seed: int = 0,
    include_all: bool = False,
    stream: bool = False,
    progress: bool = True,
) -> SelectivityResult:
    """Selectivity for every layer of a store (or labelled store view): :func:`probe_layers` with control
    tasks (train on the train split, stop on dev, report on the test split; splits by sentence; words from
    the store's ``word`` column, one control mapping for all rows)."""
    res = probe_layers(data, label, layers=layers, probe=probe, splits=splits, include_all=include_all,
                       stream=stream, seed=seed, control=True, progress=progress)
    if any(r.get("control_acc") is None for r in res.rows):
        raise ParameterError("control tasks assign labels per word type: they need a word-level store")
    return SelectivityResult.from_layers(res, seed=seed)


__all__ = ["ALL", "Selectivity", "SelectivityResult", "control_labels", "control_mapping", "selectivity",
           "selectivity_layers"]
