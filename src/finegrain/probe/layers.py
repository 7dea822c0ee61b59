"""Layer-wise probing (Dalvi et al. 2019; Durrani et al. 2020): one probe per layer plus one on all layers
concatenated, in one call, with the baselines every accuracy is shown beside (issue 14).

Every row carries the probe's train / dev / test accuracy, whether its training converged, the control-task
accuracy and selectivity of the identical probe (Hewitt & Liang 2019), and its margin over the majority and
word-type baselines with a 95% paired-bootstrap interval over test sentences. ``above_baseline`` is true
only when both intervals lie above zero; :meth:`LayerProbeResult.best_layer` never names a layer that is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from finegrain.errors import ParameterError
from finegrain.probe.baselines import (
    CONFIDENCE,
    N_BOOTSTRAP,
    control_labels,
    majority_label,
    paired_bootstrap,
    word_type_predictions,
)
from finegrain.probe.metrics import classification_metrics
from finegrain.probe.probes import BaseProbe, LinearProbe
from finegrain.results import Result
from finegrain.store import ActivationStore, split_by_sentence
from finegrain.store.view import ArrayView, StoreView, View

ALL = "all"


# -- inputs ---------------------------------------------------------------------------------------------
def base_view(data, label: str | None) -> View:
    """The labelled view whose rows a layer-wise analysis splits: all rows of a store, or a given view."""
    if isinstance(data, ActivationStore):
        if label is None:
            raise ParameterError(f"name the label column to probe (one of {data.label_columns})")
        return data.view(label=label)
    if isinstance(data, View):
        if label is not None and label != data.label:
            data = data.with_label(label)
        if not data.has_labels:
            raise ParameterError("the view has no labels: make it with label=... or pass label=")
        return data
    raise ParameterError(f"expected an ActivationStore or a view, got {type(data).__name__}")


def resolve_splits(data, splits=None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Row positions of (train, dev, test) — always by sentence — in a store (store row ids) or a view.

    ``splits`` is ``None`` (80/10/10), a tuple of fractions, or a tuple of row-position arrays made by
    the caller (e.g. ``store.split(...)``); 2 arrays mean (train, test) with no dev split.
    """
    sent = np.asarray(data.sent_ids)
    if splits is None:
        return split_by_sentence(sent, (0.8, 0.1, 0.1), seed=seed)
    splits = tuple(splits)
    if all(np.isscalar(s) for s in splits):
        return split_by_sentence(sent, tuple(float(s) for s in splits), seed=seed)
    out = tuple(np.asarray(s) for s in splits)
    if len(out) not in (2, 3):
        raise ParameterError(f"splits must be (train, test) or (train, dev, test) row arrays, got {len(out)}")
    seen: dict[int, int] = {}
    for i, rows in enumerate(out):
        if len(rows) and (rows.min() < 0 or rows.max() >= len(sent)):
            raise ParameterError(f"split {i} has row positions outside 0..{len(sent) - 1}")
        for sid in np.unique(sent[rows]):
            if seen.setdefault(int(sid), i) != i:
                raise ParameterError(
                    f"sentence {int(sid)} appears in splits {seen[int(sid)]} and {i}; split by sentence")
    return out


def layer_view(base: View, layers: Sequence[str]) -> View:
    """The columns of ``layers`` of ``base`` (a store view of whole layers reads them as layers)."""
    if isinstance(base, StoreView) and base.index == base.store.neuron_index(base.index.layers):
        return StoreView(base.store, list(layers), rows=base.rows, block_rows=base.block_rows, label=base.label)
    cols = [c for lay in layers for c in base.index.layer_columns(lay)]
    return base.select(columns=cols)


def in_memory(view: View, labels=None) -> ArrayView:
    """``view`` read into memory (same neurons, sentences and labels): what a probe trains on for many epochs."""
    y = view.labels() if labels is None else labels
    return ArrayView(view.materialize(), y, index=view.index, sent_ids=view.sent_ids)


def view_words(view: View) -> np.ndarray | None:
    """The word of every row, or ``None`` where the view has none (sentence-level stores, bare arrays)."""
    if isinstance(view, StoreView) and view.level != "word":
        return None
    try:
        return np.asarray(view.words).astype(str)
    except ParameterError:
        return None


# -- one row --------------------------------------------------------------------------------------------
def _fit_score(probe: BaseProbe, train: View, y_tr, dev: View | None, y_dv, test: View, y_te):
    p = probe.clone()
    p.fit(train, y_tr, dev=None if dev is None else (dev, y_dv))
    pred = p.predict(test)
    return p, pred


def probe_group(train: View, dev: View | None, test: View, name: str, probe: BaseProbe,
                baselines: dict[str, np.ndarray] | None = None, control: dict[str, np.ndarray] | None = None,
                stream: bool = False, seed: int = 0) -> dict:
    """One row of :func:`probe_layers`: fit a clone of ``probe`` on ``train`` (stopping on ``dev``), score
    it, and compare it with the baselines' test predictions (``{name: predictions}``); with ``control``
    (``{"train", "dev", "test"}`` control labels) also the identical probe on the control task."""
    y_tr, y_te = train.labels(), test.labels()
    y_dv = None if dev is None else dev.labels()
    tr = train if stream else in_memory(train)
    dv = None if dev is None else in_memory(dev)
    p, pred = _fit_score(probe, tr, y_tr, dv, y_dv, test, y_te)
    m_test = classification_metrics(y_te, pred, labels=p.classes_)
    correct = pred == y_te
    row = {
        "layer": name,
        "n_neurons": int(train.n_features),
        "train_acc": p.score(tr, y_tr),
        "dev_acc": None if dv is None else p.score(dv, y_dv),
        "test_acc": m_test["accuracy"],
        "test_macro_f1": m_test["macro_f1"],
        "test_per_class": m_test["per_class"],
        "n_epochs": getattr(p, "n_epochs_", None),
        "best_epoch": getattr(p, "best_epoch_", None),
        "converged": getattr(p, "converged_", None),
    }
    groups = test.sent_ids
    above = True
    for bname, bpred in (baselines or {}).items():
        cmp = paired_bootstrap(correct, bpred == y_te, groups=groups, seed=seed)
        row[f"vs_{bname}"] = cmp
        above = above and cmp["low"] > 0
    row["above_baseline"] = bool(above) if baselines else None
    if control is not None:
        c, cpred = _fit_score(probe, tr, control["train"], dv, None if dv is None else control["dev"], test,
                              control["test"])
        row["control_acc"] = float(np.mean(cpred == control["test"]))
        row["selectivity"] = row["test_acc"] - row["control_acc"]
        row["control_converged"] = getattr(c, "converged_", None)
    return row


# -- the result -------------------------------------------------------------------------------------------
def _fmt(v, spec: str = ".4f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


@dataclass
class LayerProbeResult(Result):
    """Accuracy per layer (and for all layers concatenated) with its baselines; ``rows`` is pandas-friendly.

    ``baselines``: test accuracy of the majority class and of the word-type lookup (``None`` where the rows
    have no words). Per row (``rows[i]``): ``train_acc``, ``dev_acc``, ``test_acc``, ``test_macro_f1``,
    ``n_epochs`` / ``best_epoch`` / ``converged`` of the probe's training, ``control_acc`` and
    ``selectivity`` (when control tasks were run), ``vs_majority`` / ``vs_word_type`` — the accuracy
    difference with a 95% paired-bootstrap interval (``{"diff", "low", "high"}``) — and ``above_baseline``:
    true only when every such interval lies above zero. Reports read ``above_baseline`` and
    :meth:`best_layer` (``None`` when no layer is above its baselines) before calling a layer "best" or
    building rankings on it.
    """

    label: str
    probe: str
    rows: list[dict] = field(default_factory=list)
    split_sizes: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    confidence: float = CONFIDENCE
    n_bootstrap: int = N_BOOTSTRAP

    def accuracy(self, split: str = "test") -> dict[str, float]:
        return {r["layer"]: r[f"{split}_acc"] for r in self.rows}

    def above_baseline(self) -> dict[str, bool | None]:
        return {r["layer"]: r.get("above_baseline") for r in self.rows}

    def row(self, layer: str) -> dict:
        for r in self.rows:
            if r["layer"] == layer:
                return r
        raise ParameterError(f"no row for layer {layer!r}; have {[r['layer'] for r in self.rows]}")

    def _best(self) -> tuple[str | None, str]:
        layers = [r for r in self.rows if r["layer"] != ALL]
        if not layers:
            return None, "no per-layer probes were trained"
        base = ", ".join(f"{k.replace('_', '-')} {v:.4f}" for k, v in self.baselines.items() if v is not None)
        top = max(layers, key=lambda r: r["test_acc"])
        ok = [r for r in layers if r.get("above_baseline")]
        if not ok:
            if all(r.get("above_baseline") is None for r in layers):
                return None, "no baselines were computed, so no layer can be called best"
            return None, (f"no layer's probe beats the baselines ({base}) beyond the {self.confidence:.0%} "
                          f"paired-bootstrap interval; the highest test accuracy is {top['test_acc']:.4f} "
                          f"({top['layer']})")
        key = "dev_acc" if all(r.get("dev_acc") is not None for r in ok) else "test_acc"
        best = max(ok, key=lambda r: (r[key], r["test_acc"]))
        reason = (f"{best['layer']}: highest {key.replace('_acc', '')} accuracy ({best[key]:.4f}) among the "
                  f"{len(ok)} of {len(layers)} layers above the baselines ({base})")
        if best.get("converged") is False:
            reason += "; its probe did not converge"
        return best["layer"], reason

    def best_layer(self) -> str | None:
        """The layer whose probe has the highest dev accuracy (test where there is no dev split) among the
        layers *above baseline*; ``None`` when none is (see :meth:`best_layer_reason` for why)."""
        return self._best()[0]

    def best_layer_reason(self) -> str:
        """One sentence: why :meth:`best_layer` chose its layer, or why it chose none."""
        return self._best()[1]

    def table(self) -> str:
        sizes = "/".join(str(self.split_sizes.get(k, 0)) for k in ("train", "dev", "test"))
        base = ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in self.baselines.items())
        lines = [f"{self.label}: {self.probe}  (train/dev/test rows {sizes})",
                 f"baselines (test accuracy): {base or '-'}"]
        head = (f"{'layer':<16} {'neurons':>7} {'train':>7} {'dev':>7} {'test':>7} {'macroF1':>7} {'control':>7} "
                f"{'select':>7} {'vs maj':>7} {'vs word':>7} {'epochs':>6} {'conv':>5} {'above':>5}")
        lines += [head, "-" * len(head)]
        for r in self.rows:
            vm, vw = r.get("vs_majority"), r.get("vs_word_type")
            conv = {True: "yes", False: "NO", None: "-"}[r.get("converged")]
            above = {True: "yes", False: "NO", None: "-"}[r.get("above_baseline")]
            lines.append(
                f"{r['layer']:<16} {r['n_neurons']:>7} {r['train_acc']:>7.4f} {_fmt(r.get('dev_acc')):>7} "
                f"{r['test_acc']:>7.4f} {r['test_macro_f1']:>7.4f} {_fmt(r.get('control_acc')):>7} "
                f"{_fmt(r.get('selectivity'), '+.4f'):>7} {_fmt(vm and vm['diff'], '+.4f'):>7} "
                f"{_fmt(vw and vw['diff'], '+.4f'):>7} {_fmt(r.get('n_epochs'), 'd'):>6} {conv:>5} {above:>5}")
        lines.append(f"best layer: {self.best_layer() or 'none'} — {self.best_layer_reason()}")
        not_conv = [r["layer"] for r in self.rows if r.get("converged") is False]
        if not_conv:
            lines.append(f"NOT CONVERGED (raise epochs): {', '.join(not_conv)}")
        return "\n".join(lines)

    def plot(self, path):
        """Test accuracy per layer with the control task and the majority / word-type baselines (PNG)."""
        from finegrain.viz import plot_layer_accuracy  # heavy: matplotlib, imported when a plot is drawn

        acc = self.accuracy("test")
        ctrl = {r["layer"]: r["control_acc"] for r in self.rows if r.get("control_acc") is not None}
        base = {k.replace("_", " "): v for k, v in self.baselines.items() if v is not None}
        return plot_layer_accuracy({self.label: acc}, path, control={self.label: ctrl} if ctrl else None,
                                   majority=base or None,
                                   title=f"{self.label}: {self.probe.split('(')[0]} per layer")


# -- the analysis -------------------------------------------------------------------------------------------
@dataclass
class LayerProbeTask:
    """Everything :func:`probe_layers` computes once, shared by its rows (and by the Ray version's tasks)."""

    base: View
    train: np.ndarray
    dev: np.ndarray | None
    test: np.ndarray
    groups: list[tuple[str, list[str]]]
    baselines: dict[str, np.ndarray]
    baseline_acc: dict[str, float | None]
    control: np.ndarray | None

    def views(self, lays: Sequence[str]) -> tuple[View, View | None, View]:
        v = layer_view(self.base, lays)
        return v.subset(self.train), None if self.dev is None else v.subset(self.dev), v.subset(self.test)

    def control_parts(self) -> dict[str, np.ndarray] | None:
        if self.control is None:
            return None
        c = self.control
        return {"train": c[self.train], "dev": None if self.dev is None else c[self.dev], "test": c[self.test]}

    def split_sizes(self) -> dict:
        return {"train": len(self.train), "dev": 0 if self.dev is None else len(self.dev), "test": len(self.test)}


def prepare_layers(data, label: str | None = None, layers: Sequence[str] | None = None, splits=None,
                   include_all: bool = True, seed: int = 0, control: bool = True) -> LayerProbeTask:
    """Splits, groups of layers, baselines and control labels of :func:`probe_layers` (computed once)."""
    base = base_view(data, label)
    layers = list(layers) if layers is not None else list(base.index.layers)
    if not layers:
        raise ParameterError("no layers to probe")
    for lay in layers:
        if lay not in base.index.layers:
            raise ParameterError(f"layer {lay!r} is not in the data; it has {base.index.layers}")
    parts = resolve_splits(base, splits, seed)
    train, test = parts[0], parts[-1]
    dev = parts[1] if len(parts) == 3 else None
    if len(train) == 0 or len(test) == 0:
        raise ParameterError(f"empty split: {len(train)} training and {len(test)} test rows")
    y = base.labels()
    words = view_words(base)
    baselines = {"majority": np.full(len(test), majority_label(y[train]), dtype=y.dtype)}
    if words is not None:
        baselines["word_type"] = word_type_predictions(words[train], y[train], words[test])
    acc = {k: float(np.mean(v == y[test])) for k, v in baselines.items()}
    acc.setdefault("word_type", None)
    ctrl = control_labels(words, y, seed, dist_rows=train) if control and words is not None else None
    groups: list[tuple[str, list[str]]] = [(lay, [lay]) for lay in layers]
    if include_all and len(layers) > 1:
        groups.append((ALL, layers))
    return LayerProbeTask(base, train, dev, test, groups, baselines, acc, ctrl)


def probe_layers(
    data,
    label: str | None = None,
    layers: Sequence[str] | None = None,
    probe: BaseProbe | None = None,
    splits=None,
    include_all: bool = True,
    stream: bool = False,
    seed: int = 0,
    control: bool = True,
    progress: bool = True,
) -> LayerProbeResult:
    """Train one probe per layer (and on all ``layers`` concatenated) and report accuracies beside their
    baselines (Dalvi et al. 2019 / Durrani et al. 2020 layer-wise analysis).

    ``data``: an :class:`ActivationStore` (with ``label``, a label column) or a labelled view. ``probe`` is a
    template (default ``LinearProbe()``), cloned for every layer so that all share hyperparameters; it stops
    on the dev split. Splits are by sentence (:func:`resolve_splits`). The majority and word-type baselines
    are computed once (they do not depend on the layer); ``control=True`` (default: it doubles the probes
    trained) also trains the identical probe on a control task per layer (Hewitt & Liang 2019; needs the
    words, so word-level data). ``stream=True`` reads the training rows block by block from the store at
    every epoch instead of loading them (for matrices larger than memory).
    """
    probe = probe if probe is not None else LinearProbe()
    task = prepare_layers(data, label, layers, splits, include_all, seed, control)
    result = LayerProbeResult(label=task.base.label, probe=repr(probe), split_sizes=task.split_sizes(),
                              baselines=task.baseline_acc)
    for name, lays in tqdm(task.groups, desc="layers", disable=None if progress else True, leave=False):
        train, dev, test = task.views(lays)
        result.rows.append(probe_group(train, dev, test, name, probe, task.baselines, task.control_parts(),
                                       stream, seed))
    return result


__all__ = ["ALL", "LayerProbeResult", "LayerProbeTask", "base_view", "in_memory", "layer_view", "prepare_layers",
           "probe_group", "probe_layers", "resolve_splits", "view_words"]
