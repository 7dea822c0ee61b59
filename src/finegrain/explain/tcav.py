"""Testing with Concept Activation Vectors (TCAV; Kim et al. 2018, ICML).

A CAV is the normal of a linear classifier separating a layer's activations of concept examples
from those of random examples, oriented towards the concept. The conceptual sensitivity of an
input is the directional derivative of the target along the CAV, ``S = grad_a f(a) . v``; here the
activation of every token of the input moves along ``v`` so ``S = sum_t g_t . v``. The TCAV score
of a set of inputs is the fraction with ``S > 0``.

Significance, as in the paper: CAVs are learned ``n_runs`` times against different random
counterexample sets, and ``n_random`` random CAVs are learned between two random sets; the TCAV
scores of the concept CAVs and of the random CAVs are compared with a two-sided t-test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finegrain.explain.concepts import ConceptError, DirectionConcept


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

    def concept(self) -> DirectionConcept:
        """The CAV as a concept for :func:`finegrain.explain.explain`."""
        return DirectionConcept(f"cav:{self.name}", self.layer, self.direction, self.random_cavs,
                                meta={"cav_accuracy": float(np.mean(self.accuracy)) if self.accuracy else None,
                                      **self.meta})


def learn_cavs(name: str, layer: str, X_concept: np.ndarray, X_pool: np.ndarray, n_runs: int = 10,
               n_random: int = 10, n_examples: int | None = None, seed: int = 0, C: float = 1.0) -> CAVSet:
    """Concept CAVs against ``n_runs`` random draws from ``X_pool`` and ``n_random`` random-vs-random
    CAVs (two disjoint draws from the pool). ``n_examples`` examples per side (default: as many
    concept examples as there are, capped by half the pool)."""
    Xc, P = np.asarray(X_concept), np.asarray(X_pool)
    if n_runs < 1 or n_random < 2:
        raise ValueError("need n_runs >= 1 and n_random >= 2 (the t-test needs two random scores)")
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
    return CAVSet(name, layer, np.stack(cavs), np.stack(rand), acc, {"n_examples": int(m)})


def cavs_from_store(store, layer: str, column: str, label: str, n_runs: int = 10, n_random: int = 10,
                    n_examples: int = 200, seed: int = 0) -> CAVSet:
    """CAVs for the words of ``store`` labelled ``column=label`` against random words of the store."""
    y = np.asarray([str(v) for v in np.asarray(store.labels(column)).tolist()])
    pos = np.flatnonzero(y == str(label))
    if len(pos) < 2:
        raise ConceptError(f"{column}={label}: only {len(pos)} words in the store")
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(pos, min(len(pos), n_examples), replace=False))
    pool = np.sort(rng.choice(len(y), min(len(y), 4 * n_examples), replace=False))
    Xc = store.matrix([layer], rows=pos)
    Xp = store.matrix([layer], rows=pool)
    return learn_cavs(f"{column}={label}", layer, Xc, Xp, n_runs, n_random, n_examples, seed)


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

    target = parse_target(target, adapter)
    ctx = layer_context(adapter, texts, target, cavs.layer, method=None, batch_size=batch_size)
    G = ctx.grads.sum(1)  # [B, D]: the derivative when every token moves along a direction

    def score(V):
        return (G @ np.atleast_2d(V).T > 0).mean(0)

    s = score(cavs.cavs)
    rs = score(cavs.random_cavs)
    return TCAVResult(cavs.name, cavs.layer, str(target), float(s.mean()), [float(x) for x in s],
                      [float(x) for x in rs], _ttest(s, rs), int(G.shape[0]), [float(x) for x in G @ cavs.direction])
