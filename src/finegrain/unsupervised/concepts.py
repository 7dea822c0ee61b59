"""Latent concept discovery (Dalvi et al. 2022, *Discovering Latent Concepts Learned in BERT*).

Word representations of one layer are clustered (agglomerative Ward, as in the paper, or k-means);
each cluster is a *latent concept*, described by its words and by its alignment with known label
columns: for every column the majority label and the cluster's purity (share of members carrying
it), and the label that best matches the cluster by F1 (precision = share of the cluster carrying
the label, recall = share of that label's tokens falling in the cluster). Following the paper, a
cluster *aligns* with a label when its purity is ``>= purity_threshold`` (90%).

Token selection follows the paper: optionally cap the number of occurrences kept per word type
(``max_per_type``) and optionally ``dedupe`` (one vector per word type: the mean of its kept
occurrences, labelled with its majority label). Only the selected rows are loaded (clustering needs
them in memory; the words and labels come from the view's index columns). New vectors are assigned to
the nearest centroid (``predict``), e.g. to say which concept a token falls into.

Each cluster is a :class:`LatentCluster`; :func:`finegrain.explain.latent_concepts` turns them into
explanation concepts (:class:`finegrain.explain.LatentConcept`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans

from finegrain.errors import NotFittedError, ParameterError
from finegrain.results import Result
from finegrain.unsupervised.correlation import Representation

MAX_AGGLOMERATIVE = 30000


@dataclass
class LabelAlignment:
    """How one cluster relates to one label column."""

    majority: str
    purity: float
    best_label: str
    precision: float
    recall: float
    f1: float
    aligned: bool


@dataclass
class LatentCluster:
    """One latent concept: a cluster of a layer's word representations, its most frequent words and its
    alignment with each label column."""

    id: int
    size: int
    words: list[tuple[str, int]]
    alignment: dict[str, LabelAlignment] = field(default_factory=dict)

    def top_words(self, k: int = 10) -> list[str]:
        return [w for w, _ in self.words[:k]]

    def aligned_labels(self) -> dict[str, str]:
        return {col: a.majority for col, a in self.alignment.items() if a.aligned}


class LatentConcepts(Result):
    """Cluster a layer's word representations into latent concepts (:class:`LatentCluster`).

    >>> lc = LatentConcepts(n_clusters=50).fit(store.view(layers=["layer.6"]), label_columns=["pos"])
    >>> lc.clusters[0].top_words(), lc.clusters[0].alignment["pos"]
    >>> lc.predict(vectors)          # nearest-centroid concept id per vector
    """

    def __init__(
        self,
        n_clusters: int = 50,
        method: str = "agglomerative",
        max_per_type: int | None = 10,
        dedupe: bool = False,
        max_tokens: int | None = 20000,
        purity_threshold: float = 0.9,
        top_words: int = 20,
        seed: int = 0,
    ):
        if n_clusters < 1:
            raise ParameterError(f"n_clusters must be >= 1, got {n_clusters}")
        if method not in ("agglomerative", "kmeans"):
            raise ParameterError(f"method must be 'agglomerative' (Ward) or 'kmeans', got {method!r}")
        if max_per_type is not None and max_per_type < 1:
            raise ParameterError(f"max_per_type must be >= 1 or None, got {max_per_type}")
        if not 0 < purity_threshold <= 1:
            raise ParameterError(f"purity_threshold must be in (0, 1], got {purity_threshold}")
        self.n_clusters = int(n_clusters)
        self.method = method
        self.max_per_type = max_per_type
        self.dedupe = dedupe
        self.max_tokens = max_tokens
        self.purity_threshold = purity_threshold
        self.top_words = top_words
        self.seed = seed
        self.layer: str | None = None
        self.label_columns: list[str] = []
        self.centroids: np.ndarray | None = None
        self.clusters: list[LatentCluster] = []
        self.rows: np.ndarray = np.zeros(0, dtype=int)
        self.words_: list[str] = []
        self.labels_: np.ndarray = np.zeros(0, dtype=int)

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        source,
        layer: str | None = None,
        n_clusters: int | None = None,
        label_columns: Sequence[str] = (),
        words: Sequence[str] | None = None,
        labels: dict[str, Sequence[str]] | None = None,
    ) -> LatentConcepts:
        """Fit on ``layer`` of a store view or store (its words and label columns are used), or on a
        ``[rows, d]`` array with ``words`` (and optional ``labels`` = ``{column: per-row labels}``)."""
        if n_clusters is not None:
            if n_clusters < 1:
                raise ParameterError(f"n_clusters must be >= 1, got {n_clusters}")
            self.n_clusters = int(n_clusters)
        rep = Representation(source, None if layer is None else [layer])
        if len(rep.layers) != 1:
            raise ParameterError(f"pick one layer to cluster (layer=...); have {rep.layers}")
        self.layer = rep.layers[0]
        if rep.view is not None:
            all_words = as_strings(rep.view.words) if words is None else as_strings(words)
            cols = list(label_columns)
            all_labels = {c: as_strings(rep.view.labels(c)) for c in cols}
        else:
            if words is None:
                raise ParameterError("fitting on an array needs words=[one word per row]")
            all_words = as_strings(words)
            labels = dict(labels or {})
            cols = list(label_columns) or list(labels)
            missing = [c for c in cols if c not in labels]
            if missing:
                raise ParameterError(f"no labels given for column(s) {missing}")
            all_labels = {c: as_strings(labels[c]) for c in cols}
        if len(all_words) != rep.n_rows:
            raise ParameterError(f"{len(all_words)} words for {rep.n_rows} rows")
        for c, lab in all_labels.items():
            if len(lab) != rep.n_rows:
                raise ParameterError(f"label column {c!r} has {len(lab)} labels for {rep.n_rows} rows")
        self.label_columns = cols

        rows = self._select_rows(all_words)
        X = rep.load(rows=rows, dtype=np.float64)
        w = all_words[rows]
        labs = {c: v[rows] for c, v in all_labels.items()}
        if self.dedupe:
            X, w, labs, rows = _dedupe(X, w, labs, rows)
        if len(X) < self.n_clusters:
            raise ParameterError(f"{len(X)} tokens selected but n_clusters={self.n_clusters}; lower n_clusters")
        if self.method == "agglomerative" and len(X) > MAX_AGGLOMERATIVE:
            raise ParameterError(
                f"Ward clustering of {len(X)} tokens needs O(n^2) memory; lower max_tokens / max_per_type "
                "or use method='kmeans'"
            )
        assign = self._cluster(X)
        self.rows, self.words_, self.labels_ = rows, [str(x) for x in w], assign
        self.centroids = np.stack([X[assign == k].mean(axis=0) for k in range(self.n_clusters)])
        self.clusters = self._describe(assign, w, labs)
        return self

    def _select_rows(self, words: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(words))
        if self.max_per_type is not None:
            seen: Counter[str] = Counter()
            keep = []
            for r in order:
                wd = words[r]
                if seen[wd] < self.max_per_type:
                    seen[wd] += 1
                    keep.append(r)
            order = np.asarray(keep, dtype=int)
        if self.max_tokens is not None and len(order) > self.max_tokens:
            order = order[: self.max_tokens]
        return np.sort(order)

    def _cluster(self, X: np.ndarray) -> np.ndarray:
        if self.n_clusters == 1:
            return np.zeros(len(X), dtype=int)
        if self.method == "kmeans":
            km = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=self.seed)
            return km.fit_predict(X).astype(int)
        return AgglomerativeClustering(n_clusters=self.n_clusters, linkage="ward").fit_predict(X).astype(int)

    def _describe(self, assign: np.ndarray, words: np.ndarray, labs: dict[str, np.ndarray]) -> list[LatentCluster]:
        totals = {c: Counter(v.tolist()) for c, v in labs.items()}
        out = []
        for k in range(self.n_clusters):
            m = assign == k
            size = int(m.sum())
            wc = Counter(words[m].tolist()).most_common(self.top_words)
            al = {}
            for c, v in labs.items():
                cnt = Counter(v[m].tolist())
                maj, maj_n = cnt.most_common(1)[0]
                best, best_f1, best_p, best_r = maj, -1.0, 0.0, 0.0
                for lab, n in cnt.items():
                    p, r = n / size, n / totals[c][lab]
                    f1 = 2 * p * r / (p + r)
                    if f1 > best_f1:
                        best, best_f1, best_p, best_r = lab, f1, p, r
                purity = maj_n / size
                al[c] = LabelAlignment(
                    str(maj), purity, str(best), best_p, best_r, best_f1, purity >= self.purity_threshold
                )
            out.append(LatentCluster(k, size, [(str(a), int(b)) for a, b in wc], al))
        return out

    # -- use -----------------------------------------------------------------------------
    def _fitted(self) -> np.ndarray:
        if self.centroids is None:
            raise NotFittedError("LatentConcepts is not fitted; call fit() or load from JSON first")
        return self.centroids

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Concept id (nearest centroid, Euclidean) of each row of ``vectors`` ``[n, d]``."""
        C = self._fitted()
        V = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        if V.shape[1] != C.shape[1]:
            raise ParameterError(f"vectors have {V.shape[1]} dims but the concepts were fit on {C.shape[1]}")
        d2 = (V**2).sum(1)[:, None] - 2 * V @ C.T + (C**2).sum(1)[None, :]
        return d2.argmin(axis=1)

    def alignment_summary(self, column: str) -> dict:
        """Share of clusters aligned with a label of ``column`` and which labels have a cluster."""
        if column not in self.label_columns:
            raise ParameterError(f"no alignment for {column!r}; fitted with {self.label_columns}")
        aligned = [c for c in self.clusters if c.alignment[column].aligned]
        return {
            "column": column,
            "n_clusters": len(self.clusters),
            "n_aligned": len(aligned),
            "fraction_aligned": len(aligned) / max(len(self.clusters), 1),
            "labels_covered": sorted({c.alignment[column].majority for c in aligned}),
        }

    def summary(self, k: int = 8, max_clusters: int | None = None) -> str:
        lines = [
            f"latent concepts of {self.layer}: {len(self.clusters)} clusters ({self.method}) over "
            f"{len(self.labels_)} tokens (Dalvi et al. 2022)"
        ]
        for c in sorted(self.clusters, key=lambda c: -c.size)[:max_clusters]:
            al = "; ".join(
                f"{col}={a.majority} {100 * a.purity:.0f}%{' ALIGNED' if a.aligned else ''}"
                for col, a in c.alignment.items()
            )
            lines.append(f"  c{c.id:<4} n={c.size:<6} {' '.join(c.top_words(k))}" + (f"  [{al}]" if al else ""))
        for col in self.label_columns:
            s = self.alignment_summary(col)
            lines.append(
                f"{col}: {s['n_aligned']}/{s['n_clusters']} clusters aligned (purity >= "
                f"{self.purity_threshold}); labels covered: {', '.join(s['labels_covered']) or '-'}"
            )
        return "\n".join(lines)

    def table(self) -> str:
        return self.summary()

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_latent_concepts  # heavy (matplotlib): imported only to draw

        return plot_latent_concepts(self, path)

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "type": type(self).__name__,
            "format": "finegrain-latent-concepts",
            "version": 1,
            "params": {
                "n_clusters": self.n_clusters,
                "method": self.method,
                "max_per_type": self.max_per_type,
                "dedupe": self.dedupe,
                "max_tokens": self.max_tokens,
                "purity_threshold": self.purity_threshold,
                "top_words": self.top_words,
                "seed": self.seed,
            },
            "layer": self.layer,
            "label_columns": self.label_columns,
            "centroids": self._fitted().tolist(),
            "clusters": [asdict(c) for c in self.clusters],
            "rows": [int(r) for r in self.rows],
            "words": self.words_,
            "assignments": [int(a) for a in self.labels_],
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int | None = None) -> str:
        """The fitted clusters as JSON (written atomically to ``path`` when given)."""
        return super().to_json(path, indent=indent)

    @classmethod
    def from_dict(cls, d) -> LatentConcepts:
        if d.get("format") != "finegrain-latent-concepts":
            raise ParameterError("not a finegrain latent-concepts JSON document")
        obj = cls(**d["params"])
        obj.layer = d["layer"]
        obj.label_columns = list(d["label_columns"])
        obj.centroids = np.asarray(d["centroids"], dtype=np.float64)
        obj.clusters = [
            LatentCluster(
                c["id"],
                c["size"],
                [(str(w), int(n)) for w, n in c["words"]],
                {k: LabelAlignment(**v) for k, v in c["alignment"].items()},
            )
            for c in d["clusters"]
        ]
        obj.rows = np.asarray(d.get("rows", []), dtype=int)
        obj.words_ = list(d.get("words", []))
        obj.labels_ = np.asarray(d.get("assignments", []), dtype=int)
        return obj


def as_strings(values) -> np.ndarray:
    """A fixed-width ``str`` array (stores hand back numpy ``StringDType`` arrays)."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return np.asarray([str(v) for v in values], dtype=str)


def _dedupe(X, words, labs, rows):
    """One vector per word type: mean of its occurrences, majority label, first row index."""
    uniq, inv = np.unique(words, return_inverse=True)
    k = len(uniq)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, inv, X)
    Xd = sums / np.bincount(inv, minlength=k)[:, None]
    first = np.full(k, len(rows), dtype=int)
    np.minimum.at(first, inv, np.arange(len(rows)))
    new_labs = {}
    for c, v in labs.items():
        per = [Counter() for _ in range(k)]
        for i, lab in zip(inv, v):
            per[i][lab] += 1
        new_labs[c] = np.asarray([p.most_common(1)[0][0] for p in per])
    return Xd, uniq, new_labs, rows[first]
