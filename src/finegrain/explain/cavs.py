"""Testing with Concept Activation Vectors (TCAV; Kim et al. 2018, ICML).

A CAV is the normal of a linear classifier separating a layer's activations of concept examples
from those of random examples, oriented towards the concept. The classifier is finegrain's own
:class:`~finegrain.probe.LogisticProbe` (the probe family of probing, so its accuracy compares with a
probe's), on the raw activations (``standardize=False``: the CAV is a direction of the activation
space and the penalty acts on it). The conceptual sensitivity of an input is the directional
derivative of the target along the CAV, ``S = grad_a f(a) . v``; here the activation of every token of
the input moves along ``v`` so ``S = sum_t g_t . v``. The TCAV score of a set of inputs is the fraction
with ``S > 0``.

Significance, as in the paper: CAVs are learned ``n_runs`` times against different random
counterexample sets, and ``n_random`` random CAVs are learned between two random sets; the TCAV
scores of the concept CAVs and of the random CAVs are compared with a two-sided t-test.

As concepts of :func:`finegrain.explain.explain` (attribution *mass* along the CAV rather than the
sign of a derivative), CAVs are compared with random directions along which the activations are as large
(:func:`concept_cavs`, :func:`finegrain.explain.concepts.scale_matched_directions`): the TCAV
score is scale-free, the mass is not, and activations along random-vs-random CAVs are far smaller
than along concept CAVs.

Inputs are views (:class:`~finegrain.store.view.StoreView`, or a store): CAVs and spectra load the
rows they use (at most ``n_examples`` / ``max_rows``), since a probe fit and an eigen-decomposition
need them in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import ttest_ind

from finegrain.errors import ConceptError, ParameterError
from finegrain.explain.concepts import ConceptSet, DirectionConcept, layer_spectrum, layer_view
from finegrain.explain.predictions import layer_context
from finegrain.probe import LogisticProbe
from finegrain.results import Result, ResultList


def cav_probe(seed: int = 0, **params) -> LogisticProbe:
    """The probe a CAV is the normal of: :class:`~finegrain.probe.LogisticProbe` on raw activations
    (``params`` override its hyperparameters)."""
    return LogisticProbe(**{"standardize": False, "progress": False, "device": "cpu", "random_state": seed,
                            **params})


def learn_cav(X_concept: np.ndarray, X_other: np.ndarray, seed: int = 0, probe: LogisticProbe | None = None
              ) -> tuple[np.ndarray, float]:
    """``(unit CAV, training accuracy)``: the normal of a logistic-regression probe concept-vs-other
    (Kim et al. 2018), oriented towards the concept. ``probe`` (default :func:`cav_probe`) is cloned."""
    Xc, Xo = np.asarray(X_concept, dtype=np.float32), np.asarray(X_other, dtype=np.float32)
    if Xc.ndim != 2 or Xo.ndim != 2 or Xc.shape[1] != Xo.shape[1]:
        raise ConceptError(f"concept and other examples must be [n, d] with the same d; got {Xc.shape}, {Xo.shape}")
    if len(Xc) < 2 or len(Xo) < 2:
        raise ConceptError("a CAV needs at least 2 concept and 2 other examples")
    X = np.concatenate([Xc, Xo])
    y = np.r_[np.ones(len(Xc), dtype=np.int64), np.zeros(len(Xo), dtype=np.int64)]
    clf = cav_probe(seed) if probe is None else probe.clone()
    clf.fit(X, y)
    v = np.asarray(clf.coef_, dtype=np.float64)[0]
    if clf.classes_[1] != 1:  # one logit for classes_[1]: orient the normal towards the concept
        v = -v
    return v / max(np.linalg.norm(v), 1e-12), float(clf.score(X, y))


@dataclass
class CAVSet(Result):
    """CAVs of one concept at one layer: ``cavs`` ``[n_runs, d]`` (concept vs random set i) and
    ``random_cavs`` ``[n_random, d]`` (random vs random); ``accuracy`` the probes' training accuracies."""

    name: str
    layer: str
    cavs: np.ndarray
    random_cavs: np.ndarray
    accuracy: list[float] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d["cavs"] = np.asarray(d["cavs"], dtype=np.float64)
        d["random_cavs"] = np.asarray(d["random_cavs"], dtype=np.float64).reshape(-1, d["cavs"].shape[1])
        return d

    @property
    def direction(self) -> np.ndarray:
        v = self.cavs.mean(0)
        return v / max(np.linalg.norm(v), 1e-12)

    def table(self) -> str:
        acc = f"{np.mean(self.accuracy):.3f}" if self.accuracy else "-"
        cos = self.cavs @ self.direction
        return (f"CAVs {self.name} @ {self.layer}: {len(self.cavs)} concept CAVs (probe accuracy {acc}, cosine to "
                f"their mean {cos.min():.3f}..{cos.max():.3f}), {len(self.random_cavs)} random CAVs")

    def concept(self, spectrum: tuple[np.ndarray, np.ndarray] | None = None) -> DirectionConcept:
        """The CAV as a concept for :func:`finegrain.explain.explain`. With ``spectrum`` (the layer's
        activations' second-moment eigen-decomposition, :func:`layer_spectrum`) its null is random
        directions with as much activation along them; else the random CAVs (or isotropic
        directions without any)."""
        meta = {"cav_accuracy": float(np.mean(self.accuracy)) if self.accuracy else None, **self.meta}
        if spectrum is not None:
            return DirectionConcept(f"cav:{self.name}", self.layer, self.direction, meta=meta, spectrum=spectrum)
        rand = self.random_cavs if len(self.random_cavs) else None
        return DirectionConcept(f"cav:{self.name}", self.layer, self.direction, rand, meta=meta)


def learn_cavs(name: str, layer: str, X_concept: np.ndarray, X_pool: np.ndarray, n_runs: int = 10,
               n_random: int = 10, n_examples: int | None = None, seed: int = 0,
               probe: LogisticProbe | None = None) -> CAVSet:
    """Concept CAVs against ``n_runs`` random draws from ``X_pool`` and ``n_random`` random-vs-random
    CAVs (two disjoint draws from the pool; ``n_random=0``: none, for use as an explanation concept
    only). ``n_examples`` examples per side (default: as many concept examples as there are, capped
    by half the pool). ``probe``: the classifier to clone (default :func:`cav_probe`)."""
    Xc, P = np.asarray(X_concept), np.asarray(X_pool)
    if n_runs < 1 or n_random == 1 or n_random < 0:
        raise ParameterError("need n_runs >= 1 and n_random = 0 or >= 2 (the t-test needs two random scores)")
    rng = np.random.default_rng(seed)
    m = min(n_examples or len(Xc), len(Xc), len(P) // 2)
    if m < 2:
        raise ConceptError(f"too few examples for CAVs: {len(Xc)} concept, {len(P)} random")
    cavs, acc = [], []
    for r in range(n_runs):
        ci = rng.choice(len(Xc), m, replace=False)
        ri = rng.choice(len(P), m, replace=False)
        v, a = learn_cav(Xc[ci], P[ri], seed=seed + r, probe=probe)
        cavs.append(v)
        acc.append(a)
    rand = []
    for r in range(n_random):
        perm = rng.permutation(len(P))
        v, _ = learn_cav(P[perm[:m]], P[perm[m:2 * m]], seed=seed + 1000 + r, probe=probe)
        rand.append(v)
    rand_arr = np.stack(rand) if rand else np.zeros((0, Xc.shape[1]))
    return CAVSet(name, layer, np.stack(cavs), rand_arr, acc, {"n_examples": int(m)})


def _words(view) -> np.ndarray:
    return np.char.lower(np.asarray([str(w) for w in np.asarray(view.words).tolist()], dtype=str))


def _labels(view, column: str) -> np.ndarray:
    return np.asarray([str(v) for v in np.asarray(view.labels(column)).tolist()], dtype=str)


def _read(view, rows: np.ndarray | None) -> np.ndarray:
    return np.asarray(view.materialize() if rows is None else view.subset(rows).materialize(), dtype=np.float64)


def cavs_from_store(source, layer: str, column: str | None = None, label: str | None = None, n_runs: int = 10,
                    n_random: int = 10, n_examples: int = 200, seed: int = 0, words: Sequence[str] | None = None,
                    name: str | None = None, probe: LogisticProbe | None = None) -> CAVSet:
    """CAVs for the words of a view (or store) labelled ``column=label`` (or, with ``words``, the
    occurrences of those word types, case-insensitive: a concept given by examples, as in Kim et
    al. 2018) against random words of it. Reads only the rows it trains on."""
    view = layer_view(source, layer)
    if words is not None:
        wanted = {str(w).lower() for w in words}
        mask = np.isin(_words(view), sorted(wanted))
        name = name or "words:" + "|".join(sorted(wanted))
    elif column is not None and label is not None:
        mask = _labels(view, column) == str(label)
        name = name or f"{column}={label}"
    else:
        raise ParameterError("cavs_from_store needs column and label, or words")
    pos = np.flatnonzero(mask)
    if len(pos) < 2:
        raise ConceptError(f"{name}: only {len(pos)} words in the view")
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(pos, min(len(pos), n_examples), replace=False))
    pool = np.sort(rng.choice(len(mask), min(len(mask), 4 * n_examples), replace=False))
    return learn_cavs(name, layer, _read(view, pos), _read(view, pool), n_runs, n_random, n_examples, seed, probe)


def _sample_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
    """At most ``max_rows`` sorted random rows (``None``: all of them); the same for the same seed, so
    that a spectrum recomputed later matches the one the directions were built with."""
    if n_rows <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


def store_spectrum(source, layer: str, max_rows: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`layer_spectrum` of ``layer``'s word activations in a view or store (at most ``max_rows``)."""
    view = layer_view(source, layer)
    return layer_spectrum(_read(view, _sample_rows(len(view), max_rows, seed)))


def mean_difference_direction(X_concept: np.ndarray, X_other: np.ndarray) -> np.ndarray:
    """Unit vector of ``mean(X_concept) - mean(X_other)`` (the "mass-mean" concept direction of
    Marks & Tegmark 2023; with strong L2 regularisation a logistic-regression CAV tends to it)."""
    Xc, Xo = np.asarray(X_concept, dtype=np.float64), np.asarray(X_other, dtype=np.float64)
    if Xc.ndim != 2 or Xo.ndim != 2 or Xc.shape[1] != Xo.shape[1] or len(Xc) < 1 or len(Xo) < 1:
        raise ConceptError(f"concept and other examples must be [n >= 1, d] with the same d; got {Xc.shape}, "
                           f"{Xo.shape}")
    v = Xc.mean(0) - Xo.mean(0)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise ConceptError("the concept and other examples have the same mean: no direction")
    return v / n


def concept_cavs(source, layer: str, properties: Sequence[str] = (), word_concepts: dict | None = None,
                 direction: str = "mean_diff", n_runs: int = 5, n_examples: int = 200, min_count: int = 20,
                 skip_labels: Sequence[str] = ("_", "O"), max_rows: int = 20000, seed: int = 0,
                 probe: LogisticProbe | None = None) -> ConceptSet:
    """Concept directions (:class:`DirectionConcept`, named ``cav:property=label`` / ``cav:NAME``)
    for every label of ``properties`` with at least ``min_count`` words in a view (or store) and for
    every ``word_concepts`` entry ``{NAME: [word, ...]}`` (the occurrences of those words, e.g.
    ``{"negation_cue=not": ["not"]}``: a concept given by examples, as in Kim et al. 2018).

    ``direction="mean_diff"`` (default): the difference between the mean activation of the
    concept's words and that of all other words (Marks & Tegmark 2023, "mass-mean" direction);
    deterministic given the view. ``direction="cav"``: the mean of ``n_runs`` logistic-regression
    CAVs against ``n_examples`` random words each (Kim et al. 2018; ``probe`` as in :func:`learn_cavs`).
    On MiniLM (layer.3, 300 sentences, ~100 examples in 384 dims) LR CAVs vary between random
    counterexample draws enough to move a concept in and out of the top 3 of an explanation (over
    three seeds the fraction of 20 negated sentences with the negation-cue CAV top-3 and significant
    was 0.0, 0.3 and 0.4); the mean difference is deterministic.

    The null of each concept is random directions with as much activation along them
    (:func:`scale_matched_directions`, from the second moment of the layer, at most ``max_rows``
    words; see :class:`DirectionConcept` for why not random CAVs). Loads at most ``max_rows`` rows."""
    if direction not in ("mean_diff", "cav"):
        raise ParameterError(f"direction must be 'mean_diff' or 'cav', got {direction!r}")
    view = layer_view(source, layer)
    rows = _sample_rows(len(view), max_rows, seed)
    X = _read(view, rows)
    spectrum = layer_spectrum(X)
    words = _words(view)
    words = words if rows is None else words[rows]
    specs: list[tuple[str, np.ndarray, dict]] = []
    for prop in properties:
        y = _labels(view, prop)
        y = y if rows is None else y[rows]
        for lab in sorted(set(y.tolist())):
            if lab in set(skip_labels) or int((y == lab).sum()) < min_count:
                continue
            specs.append((f"{prop}={lab}", y == lab, {"column": prop, "label": lab}))
    for nm, ws in (word_concepts or {}).items():
        mask = np.isin(words, [str(w).lower() for w in ws])
        if int(mask.sum()) < min_count:
            raise ConceptError(f"word concept {nm!r}: {int(mask.sum())} occurrences of {list(ws)} in the view "
                               f"(< {min_count})")
        specs.append((str(nm), mask, {"words": list(ws)}))
    out = ConceptSet()
    rng = np.random.default_rng(seed)
    for nm, mask, kw in specs:
        meta = {"direction": direction, "n_examples": int(mask.sum()),
                **{k: v for k, v in kw.items() if k != "words"}}
        if direction == "mean_diff":
            v = mean_difference_direction(X[mask], X[~mask])
        else:
            pos, other = np.flatnonzero(mask), np.flatnonzero(~mask)
            pos = rng.choice(pos, min(len(pos), n_examples), replace=False)
            other = rng.choice(other, min(len(other), 4 * n_examples), replace=False)
            cs = learn_cavs(nm, layer, X[pos], X[other], n_runs, 0, n_examples, int(rng.integers(1 << 31)), probe)
            v = cs.direction
            meta["cav_accuracy"] = float(np.mean(cs.accuracy))
        out.append(DirectionConcept(f"cav:{nm}", layer, v, words=kw.get("words", ()), meta=meta, spectrum=spectrum))
    return out


@dataclass
class TCAVResult(Result):
    """TCAV score (mean over concept CAVs), the per-CAV scores, the random CAVs' scores and the
    two-sided t-test p-value (Kim et al. 2018); ``derivatives``: each input's directional derivative
    along the mean CAV."""

    concept: str
    layer: str
    target: str
    score: float
    scores: list[float]
    random_scores: list[float]
    p_value: float
    n_inputs: int
    derivatives: list[float]

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_dict(self) -> dict:
        return {**super().to_dict(), "significant": self.significant}

    def table(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return (f"TCAV {self.concept} @ {self.layer} for {self.target}: score {self.score:.3f} "
                f"(random {np.mean(self.random_scores):.3f} +- {np.std(self.random_scores):.3f}), "
                f"p = {self.p_value:.3g}{' *' if self.significant else ''}")

    def plot(self, path: str | os.PathLike) -> Path:
        from finegrain.viz.describe import plot_tcav  # heavy (matplotlib): imported only to draw

        return plot_tcav(self, path)


def _ttest(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.allclose(a, a.mean()) and np.allclose(b, b.mean()):
        return 1.0 if np.isclose(a.mean(), b.mean()) else 0.0
    with warnings.catch_warnings():  # a constant group (all scores 1.0) is a valid, common case
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def tcav(adapter, texts, target, cavs: CAVSet | Sequence[CAVSet], batch_size: int = 16):
    """TCAV score of ``cavs`` for ``target`` over ``texts`` with its significance against the random
    CAVs (two-sided Welch t-test on the TCAV scores). One :class:`CAVSet` gives one :class:`TCAVResult`,
    a list of them (at one layer) a list, from one pass of the model."""
    single = isinstance(cavs, CAVSet)
    sets = [cavs] if single else list(cavs)
    if not sets:
        raise ParameterError("tcav needs at least one CAVSet")
    layers = {c.layer for c in sets}
    if len(layers) != 1:
        raise ConceptError(f"the CAVs are at several layers {sorted(layers)}; run tcav once per layer")
    for c in sets:
        if len(c.random_cavs) < 2:
            raise ConceptError(f"TCAV of {c.name!r} needs >= 2 random CAVs for its t-test; learn_cavs(n_random=...)")
    ctx = layer_context(adapter, texts, target, sets[0].layer, method=None, batch_size=batch_size)
    G = ctx.grads.sum(1)  # [B, D]: the derivative when every token moves along a direction

    def score(V):
        return (G @ np.atleast_2d(V).T > 0).mean(0)

    out = ResultList()
    for c in sets:
        s, rs = score(c.cavs), score(c.random_cavs)
        out.append(TCAVResult(c.name, c.layer, str(ctx.target), float(s.mean()), [float(x) for x in s],
                              [float(x) for x in rs], _ttest(s, rs), int(G.shape[0]),
                              [float(x) for x in G @ c.direction]))
    return out[0] if single else out
