"""Redundancy analysis and neuron selection (Dalvi et al. 2020, *Analyzing Redundancy in Pretrained
Transformer Models*).

1. **Correlation clustering** (CC): hierarchical clustering of neurons with distance ``1 - |rho|``,
   average linkage, cut at ``threshold`` (0.3 in the paper); one representative per cluster (the
   member with the highest mean |rho| to the rest of its cluster). Non-representatives are redundant.
2. **Layer selection** (LSelect): a linear probe on every neuron of all layers gives the *oracle*
   accuracy; a probe per layer (on the layer's CC representatives) gives layer accuracies; pick the
   lowest layer (in the order given) whose dev accuracy is ``>= (1 - delta_layer) * oracle``.
3. **Neuron selection** (FSelect): rank that layer's representatives by the probe's weight mass
   ``sum_c |w_cj|`` (standardised features) and keep the smallest top-ranked prefix whose dev accuracy
   is ``>= (1 - delta_neuron) *`` the selected layer's accuracy.

The probes are finegrain's :class:`~finegrain.probe.LinearProbe` (the probes of probing, so the
accuracies here compare with a probing run). Correlations are streamed (memory O(d^2)); the probes load
the (optionally subsampled, ``max_rows``) rows they train on, since every probe of the layer and neuron
selection is fit on the same standardised matrix. Splits are by sentence for store views.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster
from scipy.cluster.hierarchy import linkage as sp_linkage
from scipy.spatial.distance import squareform

from finegrain.errors import ParameterError
from finegrain.neurons import Neuron
from finegrain.probe import LinearProbe
from finegrain.results import Result
from finegrain.store import split_by_sentence
from finegrain.unsupervised.concepts import as_strings
from finegrain.unsupervised.correlation import (
    DEFAULT_CHUNK_ROWS,
    BlockMoments,
    Representation,
    accumulate,
)


@dataclass
class NeuronClusters(Result):
    """Correlation clusters of neurons: ``labels[i]`` is the cluster of ``neurons[i]``."""

    neurons: list[Neuron]
    labels: np.ndarray
    representatives: list[Neuron]
    threshold: float

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["neurons"] = [Neuron.parse(n) for n in d["neurons"]]
        d["representatives"] = [Neuron.parse(n) for n in d["representatives"]]
        d["labels"] = np.asarray(d["labels"], dtype=np.int64)
        return d

    @property
    def n_clusters(self) -> int:
        return len(self.representatives)

    @property
    def n_redundant(self) -> int:
        return len(self.neurons) - self.n_clusters

    def clusters(self) -> dict[int, list[Neuron]]:
        out: dict[int, list[Neuron]] = {}
        for n, lab in zip(self.neurons, self.labels):
            out.setdefault(int(lab), []).append(n)
        return out

    def cluster_of(self, neuron: Neuron | str) -> int:
        return int(self.labels[self.neurons.index(Neuron.parse(neuron))])

    def to_dict(self) -> dict:
        return {**super().to_dict(), "n_neurons": len(self.neurons), "n_clusters": self.n_clusters,
                "n_redundant": self.n_redundant,
                "clusters": {str(k): [str(n) for n in v] for k, v in self.clusters().items() if len(v) > 1}}

    def table(self, k: int = 20) -> str:
        multi = sorted((v for v in self.clusters().values() if len(v) > 1), key=len, reverse=True)
        lines = [f"{len(self.neurons)} neurons in {self.n_clusters} correlation clusters (cut at 1 - |corr| = "
                 f"{self.threshold}); {self.n_redundant} redundant (Dalvi et al. 2020)"]
        lines += [f"  {len(v):>3}: {', '.join(str(n) for n in v[:8])}{' ...' if len(v) > 8 else ''}" for v in multi[:k]]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_cluster_sizes  # heavy (matplotlib): imported only to draw

        return plot_cluster_sizes(self, path)


def cluster_from_correlation(
    corr: np.ndarray, neurons: Sequence[Neuron], threshold: float = 0.3, linkage: str = "average"
) -> NeuronClusters:
    """Cluster neurons given their correlation matrix (distance ``1 - |corr|``)."""
    if not 0 <= threshold <= 1:
        raise ParameterError(f"threshold must be in [0, 1] (a 1 - |corr| distance), got {threshold}")
    if linkage not in ("average", "complete", "single"):
        raise ParameterError(f"linkage must be 'average', 'complete' or 'single', got {linkage!r}")
    n = len(neurons)
    if corr.shape != (n, n):
        raise ParameterError(f"correlation matrix {corr.shape} does not match {n} neurons")
    a = np.abs(corr)
    if n == 1:
        labels = np.zeros(1, dtype=int)
    else:
        D = 1.0 - a
        np.fill_diagonal(D, 0.0)
        D = np.clip((D + D.T) / 2, 0.0, 1.0)
        Z = sp_linkage(squareform(D, checks=False), method=linkage)
        labels = fcluster(Z, t=threshold, criterion="distance") - 1
    reps = []
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        if len(members) == 1:
            reps.append(members[0])
        else:
            sub = a[np.ix_(members, members)]
            reps.append(members[int(np.argmax(sub.sum(axis=1)))])
    reps.sort()
    return NeuronClusters(list(neurons), np.asarray(labels), [neurons[i] for i in reps], threshold)


def cluster_neurons(
    source,
    layers: Sequence[str] | str | None = None,
    threshold: float = 0.3,
    linkage: str = "average",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> NeuronClusters:
    """Correlation clustering of all neurons of ``layers`` of a store view, store or ``{layer: array}``
    (Dalvi et al. 2020), correlations streamed."""
    rep = Representation(source, layers)
    mom = accumulate([(rep, None)], [(0, 0)], chunk_rows)
    assert isinstance(mom, BlockMoments)
    return cluster_from_correlation(mom.corr(0, 0), rep.neurons(), threshold, linkage)


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------
def default_probe(seed: int = 0) -> LinearProbe:
    """The probe of the layer and neuron selection: finegrain's :class:`LinearProbe` with its defaults."""
    return LinearProbe(progress=False, device="cpu", random_state=seed)


def probe_accuracy(Xtr, ytr, Xdev, ydev, probe: LinearProbe | None = None, seed: int = 0) -> tuple[float, object]:
    """Dev accuracy of a probe (a clone of ``probe``, default :func:`default_probe`) trained on
    ``(Xtr, ytr)``, and the fitted probe."""
    clf = default_probe(seed) if probe is None else probe.clone()
    clf.fit(Xtr, ytr)
    return (float(clf.score(Xdev, ydev)) if len(ydev) else float("nan")), clf


@dataclass
class RedundancyReport(Result):
    """What :func:`analyze_redundancy` found (accuracies on dev; ``test`` on the test split)."""

    label: str
    n_neurons: int
    n_clusters: int
    n_redundant: int
    threshold: float
    delta_layer: float
    delta_neuron: float
    oracle_accuracy: float
    layer_accuracies: dict[str, float]
    selected_layer: str
    selected_layer_accuracy: float
    n_layer_neurons: int
    ranking: list[Neuron]
    selected_neurons: list[Neuron]
    selected_accuracy: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)

    @property
    def n_needed(self) -> int:
        return len(self.selected_neurons)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["ranking"] = [Neuron.parse(n) for n in d["ranking"]]
        d["selected_neurons"] = [Neuron.parse(n) for n in d["selected_neurons"]]
        d["curve"] = [(int(k), float(a)) for k, a in d.get("curve", [])]
        return d

    def to_dict(self) -> dict:
        return {**super().to_dict(), "n_needed": self.n_needed}

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_redundancy  # heavy (matplotlib): imported only to draw

        return plot_redundancy(self, path)

    def table(self) -> str:
        return self.summary()

    def summary(self) -> str:
        lines = [
            f"redundancy analysis for label {self.label!r} (Dalvi et al. 2020)",
            f"neurons            {self.n_neurons}",
            f"clusters (t={self.threshold})  {self.n_clusters}  -> {self.n_redundant} redundant "
            f"({100 * self.n_redundant / max(self.n_neurons, 1):.1f}%)",
            f"oracle accuracy    {self.oracle_accuracy:.4f} (all neurons, dev)",
            "layer accuracies   " + ", ".join(f"{k}={v:.4f}" for k, v in self.layer_accuracies.items()),
            f"selected layer     {self.selected_layer} ({self.selected_layer_accuracy:.4f}, "
            f"{self.n_layer_neurons} neurons after clustering; delta_layer={self.delta_layer})",
            f"neurons needed     {self.n_needed} (accuracy {self.selected_accuracy:.4f}; "
            f"delta_neuron={self.delta_neuron})",
        ]
        if self.test:
            lines.append("test accuracy      " + ", ".join(f"{k}={v:.4f}" for k, v in self.test.items()))
        return "\n".join(lines)


_FRACTIONS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)


def analyze_redundancy(
    source,
    label: str | Sequence[str] | np.ndarray,
    layers: Sequence[str] | None = None,
    threshold: float = 0.3,
    delta_layer: float = 0.01,
    delta_neuron: float = 0.01,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    max_rows: int | None = 20000,
    probe: LinearProbe | None = None,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    clusters: NeuronClusters | None = None,
) -> RedundancyReport:
    """The full Dalvi et al. 2020 pipeline: CC -> LSelect -> FSelect (see module docstring).

    ``source``: a store view (or store) or ``{layer: array}``; ``label``: a label column of the view, one
    label per row, or ``None`` for the view's own label (``store.view(label=...)``). ``layers`` are in
    bottom-to-top order (default: the source's order). ``max_rows`` caps the rows the probes
    train/evaluate on (whole sentences for store views). ``probe``: the classifier cloned for every
    fit (default :func:`default_probe`); features are standardised on the training split first."""
    for name, v in (("delta_layer", delta_layer), ("delta_neuron", delta_neuron)):
        if not 0 <= v < 1:
            raise ParameterError(f"{name} is a fraction in [0, 1) (0.01 = 1%), got {v}")
    if len(splits) != 3:
        raise ParameterError(f"splits must be (train, dev, test) fractions, got {splits}")
    rep = Representation(source, layers)
    if label is None or isinstance(label, str):
        if rep.view is None:
            raise ParameterError("a label column name needs a store view; pass one label per row for arrays")
        if label is None and not rep.view.has_labels:
            raise ParameterError("the view has no label: pass label= (a label column) or make the view with label=")
        y_all = as_strings(rep.view.labels(label))
        label_name = label or rep.view.label
    else:
        y_all = as_strings(label)
        label_name = "labels"
        if len(y_all) != rep.n_rows:
            raise ParameterError(f"{len(y_all)} labels for {rep.n_rows} rows")
    if len(np.unique(y_all)) < 2:
        raise ParameterError(f"label {label_name!r} has fewer than 2 classes")

    if clusters is None:
        clusters = cluster_neurons(rep, threshold=threshold, chunk_rows=chunk_rows)
    rng = np.random.default_rng(seed)
    sids = rep.sent_ids if rep.sent_ids is not None else np.arange(rep.n_rows)
    rows = np.arange(rep.n_rows)
    if max_rows is not None and rep.n_rows > max_rows:
        # whole sentences, in random order, until the cap
        uniq, inv = np.unique(sids, return_inverse=True)
        perm = rng.permutation(len(uniq))
        m = max(3, int(np.searchsorted(np.cumsum(np.bincount(inv)[perm]), max_rows)))
        rows = np.flatnonzero(np.isin(sids, uniq[perm[:m]]))
    tr, dv, te = (rows[g] for g in split_by_sentence(sids[rows], splits, seed))
    X = rep.load(rows=rows)
    pos = {r: i for i, r in enumerate(rows)}
    itr, idv, ite = ([pos[r] for r in g] for g in (tr, dv, te))
    y = y_all[rows]
    index = {n: k for k, n in enumerate(rep.neurons())}

    # standardised on the training split, so that weight masses compare across units of any scale
    mu, sd = X[itr].mean(0), X[itr].std(0)
    sd[sd == 0] = 1.0
    X = ((X - mu) / sd).astype(np.float32)
    Xtr, Xdv, Xte = X[itr], X[idv], X[ite]
    del X
    ytr, ydv, yte = y[itr], y[idv], y[ite]

    def run(cols):
        acc, model = probe_accuracy(Xtr[:, cols], ytr, Xdv[:, cols], ydv, probe, seed)
        return acc, model, float(model.score(Xte[:, cols], yte)) if len(yte) else float("nan")

    all_cols = list(range(Xtr.shape[1]))
    oracle, _, oracle_test = run(all_cols)
    reps_by_layer: dict[str, list[Neuron]] = {lay: [] for lay in rep.layers}
    for n in clusters.representatives:
        if n.layer in reps_by_layer:
            reps_by_layer[n.layer].append(n)
    layer_acc: dict[str, float] = {}
    layer_test: dict[str, float] = {}
    models = {}
    for lay in rep.layers:
        cols = [index[n] for n in reps_by_layer[lay]]
        if not cols:
            continue
        layer_acc[lay], models[lay], layer_test[lay] = run(cols)
    chosen = next((lay for lay, a in layer_acc.items() if a >= (1 - delta_layer) * oracle), None)
    if chosen is None:
        chosen = max(layer_acc, key=layer_acc.__getitem__)
    cand = reps_by_layer[chosen]
    weight = np.abs(np.atleast_2d(models[chosen].coef_)).sum(axis=0)
    order = np.argsort(-weight, kind="stable")
    ranking = [cand[i] for i in order]
    target = (1 - delta_neuron) * layer_acc[chosen]
    curve: list[tuple[int, float]] = []
    ks = sorted({max(1, int(round(f * len(ranking)))) for f in _FRACTIONS})
    sel_k, sel_acc, sel_test = len(ranking), layer_acc[chosen], layer_test[chosen]
    for k in ks:
        acc, _, test_acc = run([index[n] for n in ranking[:k]])
        curve.append((k, acc))
        if acc >= target:
            sel_k, sel_acc, sel_test = k, acc, test_acc
            break
    selected = ranking[:sel_k]
    return RedundancyReport(
        label=label_name,
        n_neurons=len(clusters.neurons),
        n_clusters=clusters.n_clusters,
        n_redundant=clusters.n_redundant,
        threshold=clusters.threshold,
        delta_layer=delta_layer,
        delta_neuron=delta_neuron,
        oracle_accuracy=oracle,
        layer_accuracies=layer_acc,
        selected_layer=chosen,
        selected_layer_accuracy=layer_acc[chosen],
        n_layer_neurons=len(cand),
        ranking=ranking,
        selected_neurons=selected,
        selected_accuracy=sel_acc,
        curve=curve,
        test={"oracle": oracle_test, "selected_layer": layer_test[chosen], "selected_neurons": sel_test},
    )
