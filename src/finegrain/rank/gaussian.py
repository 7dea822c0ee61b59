"""Gaussian probe and greedy dimension selection (Torroba Hennigen, Williams & Cotterell 2020,
"Intrinsic probing through dimension selection", EMNLP).

One Gaussian per class with the MAP estimate under a Normal-inverse-Wishart prior whose mean is the
empirical mean of all data, kappa0 = 0.01, nu0 = d + 2 and Lambda0 = diag(empirical covariance);
class priors are class frequencies. A subset of dimensions uses the sub-mean / sub-covariance of the
full fit (no refit), which makes greedy forward selection cheap: adding dimension j multiplies each
class density by the conditional Gaussian p(x_j | x_S), evaluated for all candidates at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from finegrain.probe.sources import as_labels, as_source, source_index
from finegrain.rank.ranking import Ranking, column_neurons

_LOG2PI = float(np.log(2 * np.pi))
CRITERIA = ("loglik", "accuracy", "mi")


def _logsumexp_add(acc: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    if acc is None:
        return x.copy()
    m = np.maximum(acc, x)
    return m + np.log(np.exp(acc - m) + np.exp(x - m))


class GaussianProbe:
    """Generative classifier p(c) N(x; mu_c, Sigma_c) with the MAP Normal-inverse-Wishart fit.

    Posterior (Murphy 2007): kappa_n = kappa0 + n_c, nu_n = nu0 + n_c,
    mu_n = (kappa0 mu0 + n_c xbar) / kappa_n,
    Lambda_n = Lambda0 + S_c + kappa0 n_c / kappa_n (xbar - mu0)(xbar - mu0)^T; the MAP (joint mode) is
    mu = mu_n, Sigma = Lambda_n / (nu_n + d + 2). Covariance blocks are computed on demand from the
    centred class data, so a d x d matrix per class is never stored.
    """

    def __init__(self, kappa0: float = 0.01, nu0: float | None = None):
        self.kappa0 = kappa0
        self.nu0 = nu0

    def fit(self, X, y) -> GaussianProbe:
        if self.kappa0 <= 0:
            raise ValueError(f"kappa0 must be > 0, got {self.kappa0}")
        X = np.asarray(as_source(X).materialize(), dtype=np.float64)
        y = as_labels(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels; they must match")
        classes, yi = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes, got {len(classes)}")
        n, d = X.shape
        nu0 = d + 2 if self.nu0 is None else self.nu0
        if nu0 <= d - 1:
            raise ValueError(f"nu0 must be > d - 1 = {d - 1}, got {nu0}")
        mu0 = X.mean(0)
        lam0 = X.var(0)  # diag of the empirical covariance
        self.classes_, self.d_ = classes, d
        self.counts_ = np.bincount(yi, minlength=len(classes)).astype(np.float64)
        self.log_prior_ = np.log(self.counts_ / n)
        self.means_ = np.zeros((len(classes), d))
        self._centred, self._delta, self._shrink, self._denom = [], [], [], []
        self._lam0 = lam0
        diag = np.zeros((len(classes), d))
        for c in range(len(classes)):
            Xc = X[yi == c]
            nc = len(Xc)
            xbar = Xc.mean(0)
            kn, nun = self.kappa0 + nc, nu0 + nc
            self.means_[c] = (self.kappa0 * mu0 + nc * xbar) / kn
            Z = Xc - xbar
            delta = xbar - mu0
            shrink = self.kappa0 * nc / kn
            denom = nun + d + 2
            self._centred.append(Z)
            self._delta.append(delta)
            self._shrink.append(shrink)
            self._denom.append(denom)
            diag[c] = (lam0 + (Z**2).sum(0) + shrink * delta**2) / denom
        self.var_ = diag
        self.fitted_ = True
        return self

    def covariance(self, c: int, rows: Sequence[int], cols: Sequence[int] | None = None) -> np.ndarray:
        """Block ``Sigma_c[rows, cols]`` of class ``c`` (index into ``classes_``)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = rows if cols is None else np.asarray(cols, dtype=np.int64)
        Z, delta = self._centred[c], self._delta[c]
        block = Z[:, rows].T @ Z[:, cols] + self._shrink[c] * np.outer(delta[rows], delta[cols])
        block += np.equal.outer(rows, cols) * self._lam0[rows][:, None]
        return block / self._denom[c]

    def _dims(self, dims) -> np.ndarray:
        return np.arange(self.d_) if dims is None else np.asarray(dims, dtype=np.int64)

    def log_joint(self, X, dims=None) -> np.ndarray:
        """``[n, n_classes]``: log p(c) + log N(x_dims; mu_c, Sigma_c) on the chosen dimensions."""
        if not getattr(self, "fitted_", False):
            raise RuntimeError("GaussianProbe is not fitted yet; call .fit(X, y) first")
        dims = self._dims(dims)
        X = np.asarray(as_source(X).materialize(), dtype=np.float64)[:, dims]
        out = np.empty((len(X), len(self.classes_)))
        for c in range(len(self.classes_)):
            L = np.linalg.cholesky(self.covariance(c, dims))
            z = np.linalg.solve(L, (X - self.means_[c, dims]).T)
            logdet = 2 * np.log(np.diag(L)).sum()
            out[:, c] = self.log_prior_[c] - 0.5 * (len(dims) * _LOG2PI + logdet + (z**2).sum(0))
        return out

    def predict_log_proba(self, X, dims=None) -> np.ndarray:
        lj = self.log_joint(X, dims)
        m = lj.max(1, keepdims=True)
        return lj - (m + np.log(np.exp(lj - m).sum(1, keepdims=True)))

    def predict_proba(self, X, dims=None) -> np.ndarray:
        return np.exp(self.predict_log_proba(X, dims))

    def predict(self, X, dims=None) -> np.ndarray:
        return self.classes_[np.argmax(self.log_joint(X, dims), 1)]

    def score(self, X, y, dims=None) -> float:
        return float(np.mean(self.predict(X, dims) == as_labels(y)))

    def _label_idx(self, y) -> np.ndarray:
        y = as_labels(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if bad.any():
            raise ValueError(f"labels unseen in training: {sorted(set(y[bad].tolist()))[:5]}")
        return idx

    def log_likelihood(self, X, y, dims=None) -> float:
        """Mean log p(y | x_dims) in nats."""
        lp = self.predict_log_proba(X, dims)
        return float(lp[np.arange(len(lp)), self._label_idx(y)].mean())

    def prior_entropy(self) -> float:
        p = np.exp(self.log_prior_)
        return float(-(p * np.log2(p)).sum())

    def mutual_information(self, X, y, dims=None) -> float:
        """I(Y; X_dims) ~ H(Y) - H(Y | X_dims) in bits, with H(Y|X) the dev cross-entropy."""
        return self.prior_entropy() + self.log_likelihood(X, y, dims) / np.log(2)


def greedy_select(
    probe: GaussianProbe,
    X_dev,
    y_dev,
    criterion: str = "loglik",
    max_dims: int | None = None,
    chunk: int = 1024,
    progress: bool = True,
) -> tuple[list[int], list[float], np.ndarray]:
    """Forward selection of dimensions on the dev split.

    Returns ``(selected columns, criterion value after each addition, last step's candidate values
    for every column)``. ``criterion``: ``loglik`` (mean log p(y|x_S)), ``accuracy`` (ties broken by
    loglik) or ``mi`` (H(Y) + loglik, in bits).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    X = np.asarray(as_source(X_dev).materialize(), dtype=np.float64)
    yi = probe._label_idx(y_dev)
    n, d = X.shape
    if d != probe.d_:
        raise ValueError(f"dev matrix has {d} columns, the probe was fitted on {probe.d_}")
    C = len(probe.classes_)
    max_dims = min(d, 50) if max_dims is None else min(int(max_dims), d)
    cur = np.tile(probe.log_prior_, (n, 1))  # [n, C] log p(c, x_S)
    rows: list[np.ndarray] = [np.zeros((0, d)) for _ in range(C)]  # Sigma_c[S, :]
    selected: list[int] = []
    curve: list[float] = []
    values = np.zeros(d)
    for _ in tqdm(range(max_dims), desc="gaussian selection", disable=None if progress else True):
        values = np.full(d, -np.inf)
        for c0 in range(0, d, chunk):
            cols = np.arange(c0, min(c0 + chunk, d))
            lse = None
            true = np.zeros((n, len(cols)))
            best = np.full((n, len(cols)), -np.inf)
            arg = np.zeros((n, len(cols)), dtype=np.int64)
            for c in range(C):
                mu, var = probe.means_[c], probe.var_[c]
                if selected:
                    Sss = rows[c][:, selected]
                    B = rows[c][:, cols]
                    A = np.linalg.solve(Sss, B)  # [k, m]
                    v = var[cols] - (B * A).sum(0)
                    m = mu[cols] + (X[:, selected] - mu[selected]) @ A
                else:
                    v, m = var[cols].copy(), np.broadcast_to(mu[cols], (n, len(cols)))
                v = np.maximum(v, 1e-9 * var[cols] + 1e-12)
                lj = cur[:, c : c + 1] - 0.5 * (_LOG2PI + np.log(v) + (X[:, cols] - m) ** 2 / v)
                lse = _logsumexp_add(lse, lj)
                true[yi == c] = lj[yi == c]
                better = lj > best
                best = np.where(better, lj, best)
                arg[better] = c
            ll = (true - lse).mean(0)
            if criterion == "accuracy":
                # accuracies move in steps of 1/n, loglik (scaled below one step) breaks ties
                acc = (arg == yi[:, None]).mean(0)
                values[cols] = acc + (1.0 / (n + 1)) * (1 / (1 + np.exp(-ll)))
            elif criterion == "mi":
                values[cols] = probe.prior_entropy() + ll / np.log(2)
            else:
                values[cols] = ll
        values[selected] = -np.inf
        j = int(np.argmax(values))
        curve.append(float(values[j]))
        # extend Sigma_c[S, :] and the running joint log-density with dimension j (chain rule)
        for c in range(C):
            mu, var = probe.means_[c], probe.var_[c]
            if selected:
                b = rows[c][:, [j]]
                a = np.linalg.solve(rows[c][:, selected], b)
                v = max(float(var[j] - (b * a).sum()), 1e-9 * var[j] + 1e-12)
                m = mu[j] + ((X[:, selected] - mu[selected]) @ a)[:, 0]
            else:
                v, m = float(var[j]), mu[j]
            cur[:, c] += -0.5 * (_LOG2PI + np.log(v) + (X[:, j] - m) ** 2 / v)
            rows[c] = np.vstack([rows[c], probe.covariance(c, [j], np.arange(d))])
        selected.append(j)
    return selected, curve, values


def gaussian_ranking(
    X_train,
    y_train,
    X_dev,
    y_dev,
    criterion: str = "loglik",
    max_dims: int | None = None,
    index=None,
    kappa0: float = 0.01,
    progress: bool = True,
) -> Ranking:
    """Greedy Gaussian-probe ranking (Torroba Hennigen et al. 2020).

    The first ``max_dims`` (default ``min(d, 50)``) neurons are in greedy selection order, scored by
    their marginal gain of the dev ``criterion``; the rest follow, ordered by the criterion they would
    reach if added at the last step. ``meta["curve"]`` is the criterion after each addition.
    """
    probe = GaussianProbe(kappa0=kappa0).fit(X_train, y_train)
    selected, curve, last = greedy_select(probe, X_dev, y_dev, criterion, max_dims, progress=progress)
    d = probe.d_
    neurons = column_neurons(index if index is not None else source_index(X_train))
    if len(neurons) != d:
        raise ValueError(f"index describes {len(neurons)} neurons, X has {d} columns")
    # criterion of the prior alone (no dimension), so the first gain is measured against it
    yi = probe._label_idx(y_dev)
    base_ll = float(probe.log_prior_[yi].mean())
    if criterion == "accuracy":
        base = float(np.mean(yi == np.argmax(probe.log_prior_)))
    elif criterion == "mi":
        base = probe.prior_entropy() + base_ll / np.log(2)
    else:
        base = base_ll
    gains = np.diff([base, *curve])
    chosen = set(selected)
    rest = [int(j) for j in np.argsort(-last, kind="stable") if j not in chosen]
    prev = curve[-1] if curve else base
    rest_scores = [float(last[j] - prev) if np.isfinite(last[j]) else float("-inf") for j in rest]
    return Ranking(
        neurons=[neurons[j] for j in [*selected, *rest]],
        scores=[*gains.tolist(), *rest_scores],
        method=f"gaussian-{criterion}",
        meta={
            "paper": "Torroba Hennigen et al. 2020",
            "criterion": criterion,
            "n_selected": len(selected),
            "curve": curve,
            "kappa0": kappa0,
        },
    )
