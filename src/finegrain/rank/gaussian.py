"""Gaussian probe and greedy dimension selection (Torroba Hennigen, Williams & Cotterell 2020,
"Intrinsic probing through dimension selection", EMNLP).

One Gaussian per class with the MAP estimate under a Normal-inverse-Wishart prior whose mean is the
empirical mean of all data, kappa0 = 0.01, nu0 = d + 2 and Lambda0 = diag(empirical covariance);
class priors are class frequencies. A subset of dimensions uses the sub-mean / sub-covariance of the
full fit (no refit), which makes greedy forward selection cheap: adding dimension j multiplies each
class density by the conditional Gaussian p(x_j | x_S), evaluated for all candidates at once.

Everything streams: the fit accumulates each class's count, sum and scatter matrix block by block (memory
``n_classes x d x d`` float64, independent of the number of rows), and scoring and selection read the dev
rows block by block (selection passes over them once per selected dimension). Because the prior is built
from the data's own mean and variances, the probe's class posteriors — and so this ranking — do not change
when a unit is rescaled: outlier ("rogue") dimensions (Timkey & van Schijndel 2021) get no weight from
their scale alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from finegrain.errors import NotFittedError, ParameterError
from finegrain.probe.sources import as_labelled, as_labels, labelled_view
from finegrain.probe.stats import view_bounds
from finegrain.rank.ranking import Ranking, column_neurons
from finegrain.store.view import as_view

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
    mu = mu_n, Sigma = Lambda_n / (nu_n + d + 2). The scatter matrices S_c are accumulated over row blocks
    (shifted by the first block's mean, so large means do not cancel the variance away).
    """

    def __init__(self, kappa0: float = 0.01, nu0: float | None = None):
        self.kappa0 = kappa0
        self.nu0 = nu0

    def fit(self, X, y=None) -> GaussianProbe:
        if not self.kappa0 > 0:
            raise ParameterError(f"kappa0 must be > 0, got {self.kappa0}")
        view, y = labelled_view(X, y, what="X")
        classes, yi = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ParameterError(f"need at least 2 classes, got {len(classes)}")
        n, d = view.shape
        C = len(classes)
        nu0 = d + 2 if self.nu0 is None else self.nu0
        if nu0 <= d - 1:
            raise ParameterError(f"nu0 must be > d - 1 = {d - 1}, got {nu0}")
        shift = None
        sums, scatter = np.zeros((C, d)), np.zeros((C, d, d))
        for start, stop in view_bounds(view):
            Xb = view.read(start, stop).astype(np.float64)
            if shift is None:
                shift = Xb.mean(0)
            Xb -= shift
            yb = yi[start:stop]
            for c in np.unique(yb):
                Z = Xb[yb == c]
                sums[c] += Z.sum(0)
                scatter[c] += Z.T @ Z
        counts = np.bincount(yi, minlength=C).astype(np.float64)
        xbar = sums / counts[:, None]  # class means minus the shift
        mu0 = sums.sum(0) / n
        lam0 = np.einsum("cii->i", scatter) / n - mu0**2  # diag of the empirical covariance
        self.classes_, self.d_ = classes, d
        self.counts_ = counts
        self.log_prior_ = np.log(counts / n)
        self.n_features_in_ = d
        self.neurons_in_ = view.index
        self._lam0 = lam0
        self.means_ = np.zeros((C, d))
        self._delta, self._shrink, self._denom = [], [], []
        diag = np.zeros((C, d))
        for c in range(C):
            nc = counts[c]
            S = scatter[c] - nc * np.outer(xbar[c], xbar[c])  # scatter about the class mean
            scatter[c] = S
            kn, nun = self.kappa0 + nc, nu0 + nc
            self.means_[c] = shift + (self.kappa0 * mu0 + nc * xbar[c]) / kn
            delta = xbar[c] - mu0
            self._delta.append(delta)
            self._shrink.append(self.kappa0 * nc / kn)
            self._denom.append(nun + d + 2)
            diag[c] = (lam0 + np.diag(S) + self._shrink[c] * delta**2) / self._denom[c]
        self._scatter = scatter
        self.var_ = diag
        self.fitted_ = True
        return self

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError("GaussianProbe is not fitted yet; call .fit(X, y) first")

    def covariance(self, c: int, rows: Sequence[int], cols: Sequence[int] | None = None) -> np.ndarray:
        """Block ``Sigma_c[rows, cols]`` of class ``c`` (index into ``classes_``)."""
        self._check_fitted()
        rows = np.asarray(rows, dtype=np.int64)
        cols = rows if cols is None else np.asarray(cols, dtype=np.int64)
        delta = self._delta[c]
        block = self._scatter[c][np.ix_(rows, cols)] + self._shrink[c] * np.outer(delta[rows], delta[cols])
        block += np.equal.outer(rows, cols) * self._lam0[rows][:, None]
        return block / self._denom[c]

    def _dims(self, dims) -> np.ndarray:
        return np.arange(self.d_) if dims is None else np.asarray(dims, dtype=np.int64)

    def _view(self, X):
        view, _ = as_view(X)
        if view.n_features != self.d_:
            raise ParameterError(f"X has {view.n_features} columns, the probe was fitted on {self.d_}")
        return view

    def log_joint(self, X, dims=None) -> np.ndarray:
        """``[n, n_classes]``: log p(c) + log N(x_dims; mu_c, Sigma_c) on the chosen dimensions (streams X)."""
        self._check_fitted()
        dims = self._dims(dims)
        view = self._view(X)
        chol = []
        for c in range(len(self.classes_)):
            L = np.linalg.cholesky(self.covariance(c, dims))
            chol.append((L, 2 * np.log(np.diag(L)).sum()))
        out = np.empty((len(view), len(self.classes_)))
        for start, stop in view_bounds(view):
            Xb = view.read(start, stop).astype(np.float64)[:, dims]
            for c, (L, logdet) in enumerate(chol):
                z = np.linalg.solve(L, (Xb - self.means_[c, dims]).T)
                out[start:stop, c] = self.log_prior_[c] - 0.5 * (len(dims) * _LOG2PI + logdet + (z**2).sum(0))
        return out

    def predict_log_proba(self, X, dims=None) -> np.ndarray:
        lj = self.log_joint(X, dims)
        m = lj.max(1, keepdims=True)
        return lj - (m + np.log(np.exp(lj - m).sum(1, keepdims=True)))

    def predict_proba(self, X, dims=None) -> np.ndarray:
        return np.exp(self.predict_log_proba(X, dims))

    def predict(self, X, dims=None) -> np.ndarray:
        return self.classes_[np.argmax(self.log_joint(X, dims), 1)]

    def score(self, X, y=None, dims=None) -> float:
        view, y = labelled_view(X, y, what="X")
        return float(np.mean(self.predict(view, dims) == as_labels(y)))

    def _label_idx(self, y) -> np.ndarray:
        y = as_labels(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if bad.any():
            raise ParameterError(f"labels unseen in training: {sorted(set(y[bad].tolist()))[:5]}")
        return idx

    def log_likelihood(self, X, y=None, dims=None) -> float:
        """Mean log p(y | x_dims) in nats."""
        view, y = labelled_view(X, y, what="X")
        lp = self.predict_log_proba(view, dims)
        return float(lp[np.arange(len(lp)), self._label_idx(y)].mean())

    def prior_entropy(self) -> float:
        p = np.exp(self.log_prior_)
        return float(-(p * np.log2(p)).sum())

    def mutual_information(self, X, y=None, dims=None) -> float:
        """I(Y; X_dims) ~ H(Y) - H(Y | X_dims) in bits, with H(Y|X) the dev cross-entropy."""
        return self.prior_entropy() + self.log_likelihood(X, y, dims) / np.log(2)


@dataclass
class _Conditional:
    """Per class, the conditional Gaussian of every candidate dimension given the selected ones:
    ``x_j | x_S ~ N(mu_j + (x_S - mu_S) A[:, j], v_j)``."""

    A: list[np.ndarray]  # [k, d] per class
    v: list[np.ndarray]  # [d] per class


def _conditionals(probe: GaussianProbe, rows: list[np.ndarray], selected: list[int]) -> _Conditional:
    A, v = [], []
    for c in range(len(probe.classes_)):
        var = probe.var_[c]
        if selected:
            B = rows[c]  # Sigma_c[S, :]
            a = np.linalg.solve(B[:, selected], B)
            vc = var - (B * a).sum(0)
        else:
            a, vc = np.zeros((0, probe.d_)), var.copy()
        A.append(a)
        v.append(np.maximum(vc, 1e-9 * var + 1e-12))
    return _Conditional(A, v)


def _cond_loglik(probe, cond: _Conditional, c: int, Xb: np.ndarray, selected: list[int], cols) -> np.ndarray:
    """``[rows, len(cols)]`` log N(x_j; conditional mean, conditional variance) of class ``c``."""
    mu = probe.means_[c]
    v = cond.v[c][cols]
    if selected:
        m = mu[cols] + (Xb[:, selected] - mu[selected]) @ cond.A[c][:, cols]
    else:
        m = mu[cols]
    return -0.5 * (_LOG2PI + np.log(v) + (Xb[:, cols] - m) ** 2 / v)


def greedy_select(
    probe: GaussianProbe,
    dev,
    y_dev=None,
    criterion: str = "loglik",
    max_dims: int | None = None,
    chunk: int = 1024,
    progress: bool = True,
) -> tuple[list[int], list[float], np.ndarray]:
    """Forward selection of dimensions on the dev split (a labelled view, or ``dev`` + ``y_dev``).

    Returns ``(selected columns, criterion value after each addition, last step's candidate values
    for every column)``. ``criterion``: ``loglik`` (mean log p(y|x_S)), ``accuracy`` (ties broken by
    loglik) or ``mi`` (H(Y) + loglik, in bits). One pass over the dev rows per selected dimension.
    """
    if criterion not in CRITERIA:
        raise ParameterError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    view, y_dev = labelled_view(dev, y_dev, what="dev")
    yi = probe._label_idx(y_dev)
    n, d = view.shape
    if d != probe.d_:
        raise ParameterError(f"dev matrix has {d} columns, the probe was fitted on {probe.d_}")
    C = len(probe.classes_)
    max_dims = min(d, 50) if max_dims is None else min(int(max_dims), d)
    cur = np.tile(probe.log_prior_, (n, 1))  # [n, C] log p(c, x_S)
    rows: list[np.ndarray] = [np.zeros((0, d)) for _ in range(C)]  # Sigma_c[S, :]
    selected: list[int] = []
    curve: list[float] = []
    values = np.zeros(d)
    pending = None  # (j, its conditionals, the selection before it): added to `cur` at the next pass
    bounds = view_bounds(view)
    for _ in tqdm(range(max_dims), desc="gaussian selection", disable=None if progress else True):
        cond = _conditionals(probe, rows, selected)
        ll_sum, correct = np.zeros(d), np.zeros(d)
        for start, stop in bounds:
            Xb = view.read(start, stop).astype(np.float64)
            yb = yi[start:stop]
            cb = cur[start:stop]
            if pending is not None:  # chain rule: log p(c, x_S, x_j) = log p(c, x_S) + log p(x_j | x_S, c)
                j, pcond, psel = pending
                for c in range(C):
                    cb[:, c] += _cond_loglik(probe, pcond, c, Xb, psel, [j])[:, 0]
            for c0 in range(0, d, chunk):
                cols = np.arange(c0, min(c0 + chunk, d))
                lse, best = None, None
                true = np.zeros((len(yb), len(cols)))
                arg = np.zeros((len(yb), len(cols)), dtype=np.int64)
                for c in range(C):
                    lj = cb[:, c : c + 1] + _cond_loglik(probe, cond, c, Xb, selected, cols)
                    lse = _logsumexp_add(lse, lj)
                    true[yb == c] = lj[yb == c]
                    if best is None:
                        best = lj
                    else:
                        better = lj > best
                        best = np.where(better, lj, best)
                        arg[better] = c
                ll_sum[cols] += (true - lse).sum(0)
                correct[cols] += (arg == yb[:, None]).sum(0)
        ll = ll_sum / n
        if criterion == "accuracy":
            # accuracies move in steps of 1/n, loglik (scaled below one step) breaks ties
            values = correct / n + (1.0 / (n + 1)) * (1 / (1 + np.exp(-ll)))
        elif criterion == "mi":
            values = probe.prior_entropy() + ll / np.log(2)
        else:
            values = ll
        values[selected] = -np.inf
        j = int(np.argmax(values))
        curve.append(float(values[j]))
        pending = (j, cond, list(selected))
        for c in range(C):  # extend Sigma_c[S, :] with dimension j
            rows[c] = np.vstack([rows[c], probe.covariance(c, [j], np.arange(d))])
        selected.append(j)
    return selected, curve, values


def gaussian_ranking(
    train,
    dev,
    criterion: str = "loglik",
    max_dims: int | None = None,
    kappa0: float = 0.01,
    progress: bool = True,
) -> Ranking:
    """Greedy Gaussian-probe ranking (Torroba Hennigen et al. 2020) of the neurons of ``train`` (a labelled
    view or ``(X, y)`` pair; the probe is fitted there) selected on ``dev`` (same form).

    The first ``max_dims`` (default ``min(d, 50)``) neurons are in greedy selection order, scored by
    their marginal gain of the dev ``criterion``; the rest follow, ordered by the criterion they would
    reach if added at the last step. ``meta["curve"]`` is the criterion after each addition.
    """
    train_view, y_train = as_labelled(train, "train")
    dev_view, y_dev = as_labelled(dev, "dev")
    if dev_view.index != train_view.index and not (dev_view.index.is_placeholder or train_view.index.is_placeholder):
        raise ParameterError("train and dev must have the same neurons (columns)")
    probe = GaussianProbe(kappa0=kappa0).fit(train_view, y_train)
    selected, curve, last = greedy_select(probe, dev_view, y_dev, criterion, max_dims, progress=progress)
    neurons = column_neurons(train_view.index)
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


__all__ = ["CRITERIA", "GaussianProbe", "gaussian_ranking", "greedy_select"]
