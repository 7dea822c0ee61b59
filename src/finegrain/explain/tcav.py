"""Testing with Concept Activation Vectors (TCAV; Kim et al. 2018, ICML).

A CAV is the normal of a linear classifier separating a layer's activations of concept examples
from those of random examples, oriented towards the concept. The conceptual sensitivity of an
input is the directional derivative of the target along the CAV, ``S = grad_a f(a) . v``; here the
activation of every token of the input moves along ``v`` so ``S = sum_t g_t . v``. The TCAV score
of a set of inputs is the fraction with ``S > 0``.

Significance, as in the paper: CAVs are learned ``n_runs`` times against different random
counterexample sets, and ``n_random`` random CAVs are learned between two random sets; the TCAV
scores of the concept CAVs and of the random CAVs are compared with a two-sided t-test.

As concepts of :func:`finegrain.explain.explain` (attribution *mass* along the CAV rather than the
sign of a derivative), CAVs are compared with random directions along which the activations are as large
(:func:`concept_cavs`, :func:`finegrain.explain.concepts.scale_matched_directions`): the TCAV
score is scale-free, the mass is not, and activations along random-vs-random CAVs are far smaller
than along concept CAVs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.explain.concepts import ConceptError, ConceptSet, DirectionConcept, layer_spectrum


def learn_cav(X_concept: np.ndarray, X_other: np.ndarray, C: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """``(unit CAV, training accuracy)`` from a logistic regression concept-vs-other (Kim et al. 2018)."""
    from sklearn.linear_model import LogisticRegression

    Xc, Xo = np.asarray(X_concept, dtype=np.float64), np.asarray(X_other, dtype=np.float64)
    if Xc.ndim != 2 or Xo.ndim != 2 or Xc.shape[1] != Xo.shape[1]:
        raise ConceptError(f"concept and other examples must be [n, d] with the same d; got {Xc.shape}, {Xo.shape}")
    if len(Xc) < 2 or len(Xo) < 2:
        raise ConceptError("a CAV needs at least 2 concept and 2 other examples")
    X = np.concatenate([Xc, Xo])
    y = np.r_[np.ones(len(Xc)), np.zeros(len(Xo))]
    clf = LogisticRegression(C=C, max_iter=500, random_state=seed).fit(X, y)
    v = clf.coef_[0]
    return v / max(np.linalg.norm(v), 1e-12), float(clf.score(X, y))


@dataclass
class CAVSet:
    """CAVs of one concept at one layer: ``cavs`` ``[n_runs, d]`` (concept vs random set i) and
    ``random_cavs`` ``[n_random, d]`` (random vs random)."""

    name: str
    layer: str
    cavs: np.ndarray
    random_cavs: np.ndarray
    accuracy: list[float] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def direction(self) -> np.ndarray:
        v = self.cavs.mean(0)
        return v / max(np.linalg.norm(v), 1e-12)

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
               n_random: int = 10, n_examples: int | None = None, seed: int = 0, C: float = 1.0) -> CAVSet:
    """Concept CAVs against ``n_runs`` random draws from ``X_pool`` and ``n_random`` random-vs-random
    CAVs (two disjoint draws from the pool; ``n_random=0``: none, for use as an explanation concept
    only). ``n_examples`` examples per side (default: as many concept examples as there are, capped
    by half the pool)."""
    Xc, P = np.asarray(X_concept), np.asarray(X_pool)
    if n_runs < 1 or n_random == 1 or n_random < 0:
        raise ValueError("need n_runs >= 1 and n_random = 0 or >= 2 (the t-test needs two random scores)")
    rng = np.random.default_rng(seed)
    m = min(n_examples or len(Xc), len(Xc), len(P) // 2)
    if m < 2:
        raise ConceptError(f"too few examples for CAVs: {len(Xc)} concept, {len(P)} random")
    cavs, acc = [], []
    for r in range(n_runs):
        ci = rng.choice(len(Xc), m, replace=False)
        ri = rng.choice(len(P), m, replace=False)
        v, a = learn_cav(Xc[ci], P[ri], C=C, seed=seed + r)
        cavs.append(v)
        acc.append(a)
    rand = []
    for r in range(n_random):
        perm = rng.permutation(len(P))
        v, _ = learn_cav(P[perm[:m]], P[perm[m:2 * m]], C=C, seed=seed + 1000 + r)
        rand.append(v)
    rand_arr = np.stack(rand) if rand else np.zeros((0, Xc.shape[1]))
    return CAVSet(name, layer, np.stack(cavs), rand_arr, acc, {"n_examples": int(m)})


def _store_words(store) -> np.ndarray:
    return np.asarray([str(w).lower() for w in np.asarray(store.words).tolist()])


def cavs_from_store(store, layer: str, column: str | None = None, label: str | None = None, n_runs: int = 10,
                    n_random: int = 10, n_examples: int = 200, seed: int = 0, words: Sequence[str] | None = None,
                    name: str | None = None) -> CAVSet:
    """CAVs for the words of ``store`` labelled ``column=label`` (or, with ``words``, the
    occurrences of those word types, case-insensitive: a concept given by examples, as in Kim et
    al. 2018) against random words of the store."""
    if words is not None:
        wanted = {str(w).lower() for w in words}
        mask = np.isin(_store_words(store), sorted(wanted))
        name = name or "words:" + "|".join(sorted(wanted))
    elif column is not None and label is not None:
        y = np.asarray([str(v) for v in np.asarray(store.labels(column)).tolist()])
        mask = y == str(label)
        name = name or f"{column}={label}"
    else:
        raise ValueError("cavs_from_store needs column and label, or words")
    pos = np.flatnonzero(mask)
    if len(pos) < 2:
        raise ConceptError(f"{name}: only {len(pos)} words in the store")
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(pos, min(len(pos), n_examples), replace=False))
    pool = np.sort(rng.choice(len(mask), min(len(mask), 4 * n_examples), replace=False))
    Xc = store.matrix([layer], rows=pos)
    Xp = store.matrix([layer], rows=pool)
    return learn_cavs(name, layer, Xc, Xp, n_runs, n_random, n_examples, seed)


def _sample_rows(store, max_rows: int, seed: int) -> np.ndarray | None:
    """At most ``max_rows`` sorted random rows of ``store`` (``None``: all of them); the same for the
    same seed, so that a spectrum recomputed later matches the one the directions were built with."""
    n_rows = store.n_rows
    if n_rows <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


def store_spectrum(store, layer: str, max_rows: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`layer_spectrum` of ``layer``'s word activations in ``store`` (at most ``max_rows``)."""
    return layer_spectrum(store.matrix([layer], rows=_sample_rows(store, max_rows, seed)))


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


def concept_cavs(store, layer: str, properties: Sequence[str] = (), word_concepts: dict | None = None,
                 direction: str = "mean_diff", n_runs: int = 5, n_examples: int = 200, min_count: int = 20,
                 skip_labels: Sequence[str] = ("_", "O"), max_rows: int = 20000, seed: int = 0) -> ConceptSet:
    """Concept directions (:class:`DirectionConcept`, named ``cav:property=label`` / ``cav:NAME``)
    for every label of ``properties`` with at least ``min_count`` words in ``store`` and for every
    ``word_concepts`` entry ``{NAME: [word, ...]}`` (the occurrences of those words, e.g.
    ``{"negation_cue=not": ["not"]}``: a concept given by examples, as in Kim et al. 2018).

    ``direction="mean_diff"`` (default): the difference between the mean activation of the
    concept's words and that of all other words (Marks & Tegmark 2023, "mass-mean" direction);
    deterministic given the store. ``direction="cav"``: the mean of ``n_runs`` logistic-regression
    CAVs against ``n_examples`` random words each (Kim et al. 2018). On MiniLM (layer.3, 300
    sentences, ~100 examples in 384 dims) LR CAVs vary between random counterexample draws
    enough to move a concept in and out of the top 3 of an explanation (over three seeds the
    fraction of 20 negated sentences with the negation-cue CAV top-3 and significant was 0.0, 0.3
    and 0.4); the mean difference is deterministic.

    The null of each concept is random directions with as much activation along them
    (:func:`scale_matched_directions`, from the second moment of the store's layer, at most
    ``max_rows`` words; see :class:`DirectionConcept` for why not random CAVs)."""
    if direction not in ("mean_diff", "cav"):
        raise ValueError(f"direction must be 'mean_diff' or 'cav', got {direction!r}")
    rows = _sample_rows(store, max_rows, seed)
    X = np.asarray(store.matrix([layer], rows=rows), dtype=np.float64)
    spectrum = layer_spectrum(X)
    words = _store_words(store)
    words = words if rows is None else words[rows]
    specs: list[tuple[str, np.ndarray, dict]] = []
    for prop in properties:
        y = np.asarray([str(v) for v in np.asarray(store.labels(prop)).tolist()])
        y = y if rows is None else y[rows]
        for lab in sorted(set(y.tolist())):
            if lab in set(skip_labels) or int((y == lab).sum()) < min_count:
                continue
            specs.append((f"{prop}={lab}", y == lab, {"column": prop, "label": lab}))
    for nm, ws in (word_concepts or {}).items():
        mask = np.isin(words, [str(w).lower() for w in ws])
        if int(mask.sum()) < min_count:
            raise ConceptError(f"word concept {nm!r}: {int(mask.sum())} occurrences of {list(ws)} in the store "
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
            cs = learn_cavs(nm, layer, X[pos], X[other], n_runs, 0, n_examples, int(rng.integers(1 << 31)))
            v = cs.direction
            meta["cav_accuracy"] = float(np.mean(cs.accuracy))
        out.append(DirectionConcept(f"cav:{nm}", layer, v, words=kw.get("words", ()), meta=meta, spectrum=spectrum))
    return out


@dataclass
class TCAVResult:
    """TCAV score (mean over concept CAVs), the per-CAV scores, the random CAVs' scores and the
    two-sided t-test p-value (Kim et al. 2018)."""

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
        from dataclasses import asdict

        return {**asdict(self), "significant": self.significant}

    def __str__(self) -> str:
        return (f"TCAV {self.concept} @ {self.layer} for {self.target}: score {self.score:.3f} "
                f"(random {np.mean(self.random_scores):.3f} +- {np.std(self.random_scores):.3f}), "
                f"p = {self.p_value:.3g}{' *' if self.significant else ''}")


def _ttest(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.allclose(a, a.mean()) and np.allclose(b, b.mean()):
        return 1.0 if np.isclose(a.mean(), b.mean()) else 0.0
    import warnings

    with warnings.catch_warnings():  # a constant group (all scores 1.0) is a valid, common case
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def tcav(adapter, texts, target, cavs: CAVSet, batch_size: int = 16) -> TCAVResult:
    """TCAV score of ``cavs`` for ``target`` over ``texts`` with its significance against the random
    CAVs (two-sided Welch t-test on the TCAV scores)."""
    from finegrain.attribute import parse_target
    from finegrain.explain.explain import layer_context

    if len(cavs.random_cavs) < 2:
        raise ConceptError(f"TCAV of {cavs.name!r} needs >= 2 random CAVs for its t-test; learn_cavs(n_random=...)")
    target = parse_target(target, adapter)
    ctx = layer_context(adapter, texts, target, cavs.layer, method=None, batch_size=batch_size)
    G = ctx.grads.sum(1)  # [B, D]: the derivative when every token moves along a direction

    def score(V):
        return (G @ np.atleast_2d(V).T > 0).mean(0)

    s = score(cavs.cavs)
    rs = score(cavs.random_cavs)
    return TCAVResult(cavs.name, cavs.layer, str(target), float(s.mean()), [float(x) for x in s],
                      [float(x) for x in rs], _ttest(s, rs), int(G.shape[0]), [float(x) for x in G @ cavs.direction])
