"""Probing classifiers, as scikit-learn estimators: elastic-net softmax regression (Dalvi et al. 2019,
NeuroX), binary logistic regression, ridge regression for real-valued properties, and a small MLP (for
selectivity comparisons, Hewitt & Liang 2019).

Every probe takes a view (:mod:`finegrain.store.view`: a store read lazily in row blocks, so that a matrix
larger than RAM works, or an in-memory :class:`ArrayView`) or a bare array, with the labels of the view
or an explicit ``y``; it remembers which neurons its columns are (``neurons_in_``), so rankings and
ablations read addresses from the probe.

**Convergence.** The torch probes train until the monitored loss stops improving (Prechelt 1998, "Early
stopping — but when?"): with ``early_stopping=True`` (default) the loss on a dev split — the one passed
to ``fit(..., dev=)``, else ``validation_fraction`` of the training sentences held out — and otherwise the
training loss. The linear probes' ``solver="auto"`` uses full-batch L-BFGS (float64 as scikit-learn, zero
start, strong-Wolfe line search, the L1 term smoothed) when the training matrix is in memory and small
(``LBFGS_MAX_ENTRIES``), else mini-batch Adam. Adam: when the monitored loss has not improved by ``tol``
for ``patience`` epochs (default 3) the learning rate is divided by 10 (``lr_decays`` times, default once,
from the best weights), then training stops (after the last decay, by default, at the first epoch without
a gain); ``lr="auto"`` is ``min(1e-2, 3 sqrt(batch / 128) / n_features)`` on standardised inputs (a logit
moves by about lr x sum|z| per step, so the step size is the same at every width; the square root follows
the gradient noise of larger batches). Each block's rows are shuffled once per fit and its batches taken
in a new order every epoch.
L-BFGS stops after ``patience`` iterations (default 30) without improvement or at a stationary point. The
best-dev-loss weights are kept. ``n_epochs_`` (epochs, or L-BFGS iterations), ``best_epoch_``, ``solver_``,
``lr_``, ``l2_`` and ``converged_`` (``False``: ``epochs`` ran out first; ``None``: ``tol=None``, fixed
epochs, nothing checked) say what happened.

**Regularisation.** The default ``l2="auto"`` chooses the L2 weight on the dev split where L-BFGS is used
(a path of ``AUTO_L2_GRID`` values, strong to weak, each solved to convergence and warm-started;
``l2_path_``) and then refits on all training rows when the dev split was held out of them; with Adam (large
matrices, where the data term dominates any of these penalties and early stopping regularises) it is
NeuroX's 1e-5.

**Standardisation.** Inputs are standardised per unit inside the probe (``standardize=True``), so one
learning rate suits LSTM states in [-1, 1] and transformer units with outlier variance alike, and the
penalty treats every unit on the same scale; ``coef_`` and ``intercept_`` are folded back to the input units
(``X @ coef_.T + intercept_`` are the logits), ``penalized_coef_`` are the standardised weights.
``LinearProbe.neurox()`` is NeuroX's configuration (10 epochs of Adam at lr 1e-3, batch 128,
l1 = l2 = 1e-5, raw inputs, no stopping rule) for comparisons.

**Matching scikit-learn.** ``LogisticRegression(C)`` minimises ``C * sum(CE) + ||W||^2 / 2``, i.e. mean
CE + ``||W||^2 / (2 C n)`` on ``n`` training rows. Its optimum ``W*`` is also the optimum of this probe's
``mean CE + l2 * ||W||`` (l1 = 0) when ``l2 = ||W*||_F / (C n)``: both gradients vanish there and both
objectives are convex. With ``standardize=True`` the comparison is with a ``StandardScaler`` in front of
scikit-learn's model (the penalty then acts on the same standardised weights).
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from torch import nn
from tqdm.auto import tqdm

from finegrain.errors import NotFittedError, ParameterError
from finegrain.models.kernels import cpu_has_bfloat16, onednn_usable
from finegrain.neurons import NeuronIndex
from finegrain.probe.metrics import classification_metrics
from finegrain.probe.sources import as_labelled, labelled_view
from finegrain.probe.stats import column_stats, column_stats_of_blocks, view_bounds
from finegrain.store import split_by_sentence
from finegrain.store.view import ArrayView, View, as_view


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# below this many multiply-adds per step intra-op threads only add synchronisation (and spin badly on
# a busy machine): a 128 x 384 x 13 step is 5-50x slower on 2 threads than on 1 under load; from a few
# M per step (128 x 2,688 x 13) two threads are 1.3x faster on an idle machine
SMALL_STEP_WORK = 1_000_000
SMALL_BATCH_WORK = 64_000_000  # the same for a full-batch (L-BFGS) iteration: ~4M entries x 16 classes
# solver="auto" trains a linear probe with full-batch L-BFGS when its training matrix is in memory and has at
# most this many entries (15k rows x 32 units, 4k x 128): there an iteration costs milliseconds and L-BFGS
# reaches the optimum of ill-conditioned objectives (small random models) that Adam only approaches; above,
# mini-batch Adam, which reaches a given accuracy in 5-10x fewer passes over the matrix
LBFGS_MAX_ENTRIES = 500_000
ADAM_PATIENCE = 3  # epochs without dev-loss improvement before the lr decays / training stops (2 stopped
# the memorising control task of MiniLM's 2,688 units a point early)
# after the last decay the step is small and the dev loss smooth: one epoch without a gain of tol ends it
# (patience 3 there cost MiniLM's POS probe 6 more epochs, a third of its fit, for under 0.05 points)
ADAM_FINAL_PATIENCE = 1
LBFGS_PATIENCE = 30  # L-BFGS iterations without dev-loss improvement before it stops (10 stopped early on
# noisy dev sets of a few hundred words)
LBFGS_GRAD_TOL = 1e-6  # largest |gradient| of a stationary point
L1_SMOOTHING = 1e-6  # |w| ~ sqrt(w^2 + eps^2) for L-BFGS, which needs a smooth objective
SOLVERS = ("auto", "adam", "lbfgs")
# l2="auto": with L-BFGS the L2 weight is chosen on the dev split from this grid (strong to weak, warm
# starts; LogisticRegressionCV's idea); with Adam on a large matrix the data term dominates any of them and
# early stopping regularises, so NeuroX's 1e-5 is used; without a dev split, the middle of the grid
AUTO_L2_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
AUTO_L2_ADAM = 1e-5
AUTO_LR_SCALE = 3.0  # lr="auto" = min(1e-2, 3 sqrt(batch / 128) / n_features) on standardised inputs
# batch_size="auto": n_train / 64 rows (at least 64 steps an epoch), within these bounds: 512 rows cost 0.18 s
# an epoch of MiniLM's 2,688 units x 33k rows where 128 cost 0.28 (fewer, larger products) and, at the
# square-root-scaled lr, came within 0.1 point of 128's accuracy in 12 epochs instead of 18
AUTO_BATCH_MIN, AUTO_BATCH_MAX, AUTO_BATCH_STEPS = 128, 512, 64
AUTO_L2_WITHOUT_DEV = 1e-3
LBFGS_CONVERGED_PATIENCE = 5  # iterations gaining less than tol (relative) that end one fit of the l2 path


def run_with_threads(fn, n_threads: int | None, stop: threading.Event | None = None):
    """``fn()`` with torch's intra-op thread count ``n_threads`` *in the thread that runs it*.

    OpenMP's and MKL's thread counts are per thread, so ``fn`` runs in a worker thread that sets its own:
    the caller's and the process's settings are never changed. ``None`` (or the current count) runs ``fn``
    here. A KeyboardInterrupt sets ``stop`` (checked by the training loop) and waits for the worker."""
    if n_threads is None or int(n_threads) == torch.get_num_threads():
        return fn()
    out: dict = {}

    def work() -> None:
        torch.set_num_threads(int(n_threads))  # this thread's OpenMP / MKL setting only
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    worker = threading.Thread(target=work, name="finegrain-probe-fit", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        if stop is not None:
            stop.set()
        worker.join()
        raise
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _adam(params, **kw) -> torch.optim.Optimizer:
    """Adam, fused where this torch build supports it (about 2x faster steps for small probes)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


def _linear(d_in: int, d_out: int, gen: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with its usual initialisation (Kaiming-uniform weights, U(+-1/sqrt(d_in)) bias) drawn
    from ``gen``, not from torch's global RNG (which a probe must neither read nor reseed)."""
    lin = nn.Linear(d_in, d_out, device="meta")
    # fresh parameters rather than to_empty(), whose first call imports sympy (0.7 s)
    lin.weight, lin.bias = nn.Parameter(torch.empty(d_out, d_in)), nn.Parameter(torch.empty(d_out))
    with torch.no_grad():
        nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=gen)
        bound = 1 / math.sqrt(d_in) if d_in > 0 else 0
        lin.bias.uniform_(-bound, bound, generator=gen)
    return lin


def _gather_rows(X, p: np.ndarray) -> np.ndarray:
    """``X[p]`` of an in-memory matrix as a new float32 array, gathered by torch's threads: a fresh copy of
    hundreds of MB page-faults at ~2 GB/s on a VM, 3x slower in numpy's one thread (0.7 vs 0.24 s for
    the 33k x 2,688 training split of the benchmark)."""
    if not (isinstance(X, np.ndarray) and X.dtype == np.float32 and X.flags.c_contiguous):
        return X[p]  # another dtype or layout: converting it whole first would cost a copy of every row
    out = np.empty((len(p), X.shape[1]), np.float32)  # numpy's: the copy shows in tracemalloc, as any other
    torch.index_select(torch.from_numpy(X), 0, torch.from_numpy(p.astype(np.int64)), out=torch.from_numpy(out))
    return out


class _Dropout(nn.Module):
    """Dropout whose masks come from the probe's own generator (``nn.Dropout`` draws from the global RNG)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


class _FusedAdam:
    """Adam (Kingma & Ba 2015) on a fixed list of tensors with exactly torch.optim.Adam's update
    (bias-corrected, eps outside the square root, no weight decay), in one fused kernel
    (``torch._fused_adam_``, the one behind ``torch.optim.Adam(fused=True)``) where this torch build has
    it: torch.optim.Adam's Python overhead per step was as large as a small probe's arithmetic."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m, self.v, self.t = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params], 0
        # one step counter shared by all tensors (the kernel only reads it): one add per step, not a foreach
        self._step_t = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self._steps = [self._step_t] * len(params)
        self._fused = getattr(torch, "_fused_adam_", None)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        b1, b2 = self.betas
        self.t += 1
        if self._fused is not None:
            try:
                self._step_t.add_(1)
                self._fused(self.params, grads, self.m, self.v, [], self._steps, lr=self.lr, beta1=b1, beta2=b2,
                            weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
                return
            except (RuntimeError, TypeError):  # an unsupported device or signature: the plain update
                self._fused = None
        for p, grad, m, v in zip(self.params, grads, self.m, self.v):
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = v.sqrt().div_(math.sqrt(1 - b2**self.t)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


class _MatmulNT:
    """``a @ b.T`` for float32 CPU tensors through oneDNN's inner product
    (``torch.ops.mkldnn._linear_pointwise``, what torch.compile emits on CPU), else ``torch.mm``.

    The probe's products ([13, 2688] x [2688, 128] and its transpose) run 1.3-1.5x faster there: MKL's
    sgemm takes a generic code path on non-Intel CPUs, oneDNN uses the CPU's AVX-512. The first call on
    each shape checks the result against ``torch.mm``; any error or mismatch falls back to it for good.
    """

    def __init__(self, device: torch.device):
        self._op = torch.ops.mkldnn._linear_pointwise if device.type == "cpu" and onednn_usable() else None
        self._checked: set = set()

    def __call__(self, a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """``a @ b.T``, plus ``add`` (same shape as the product; oneDNN adds it in the same pass)."""
        if self._op is not None and a.dtype == torch.float32:
            key = (a.shape, b.shape, a.stride(), b.stride(), add is None)
            if key in self._checked:
                return self._run(a, b, add)
            try:
                out = self._run(a, b, add)
                ref = self._ref(a, b, add)
                ok = out.shape == ref.shape and torch.allclose(
                    out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            except RuntimeError:
                ok = False
            if ok:
                self._checked.add(key)
                return out
            self._op = None
        return self._ref(a, b, add)

    def _run(self, a, b, add):
        if add is None:
            return self._op(a, b, None, "none", [], "")
        return self._op.binary(a, add, b, None, "add")

    @staticmethod
    def _ref(a, b, add):
        return torch.mm(a, b.t()) if add is None else torch.addmm(add, a, b.t())


def elastic_net_loss(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, l1: float, l2: float
) -> torch.Tensor:
    """Dalvi et al. 2019: mean cross-entropy + l1 * sum|W| + l2 * ||W||_2 (Frobenius, not squared).

    The bias is not penalised, so it is not an argument.
    """
    return F.cross_entropy(logits, targets) + l1 * weight.abs().sum() + l2 * torch.linalg.vector_norm(weight)


# -- the estimator base --------------------------------------------------------------------------------
def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_number(name: str, value, low: float, strict: bool = False) -> None:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or (value <= low if strict else value < low):
        raise ParameterError(f"{name} must be a number {'>' if strict else '>='} {low}, got {value!r}")


class BaseProbe(BaseEstimator):
    """What every probe shares: scikit-learn parameter handling (``get_params``/``set_params``, so
    ``sklearn.base.clone``, ``GridSearchCV``, ``cross_val_score`` and pipelines work), the neurons its
    columns are (``neurons_in_``, recorded at fit), and the checks of inputs against them."""

    def clone(self, **overrides) -> BaseProbe:
        """A fresh, unfitted probe with the same hyperparameters (optionally some changed)."""
        return type(self)(**{**self.get_params(deep=False), **overrides})

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "fitted_", False))

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call .fit(X, y) first")

    def _seed(self) -> int:
        """The seed of this fit's generators: ``random_state`` (or the deprecated ``seed``)."""
        seed = getattr(self, "seed", None)
        if seed is not None:
            warnings.warn(f"{type(self).__name__}(seed=...) is deprecated; use random_state=...",
                          DeprecationWarning, stacklevel=4)
            return int(seed)
        if self.random_state is None:
            return int(np.random.SeedSequence().entropy % (2**63))
        return int(self.random_state)

    def _check_random_state(self) -> None:
        for name in ("random_state", "seed"):
            v = getattr(self, name, None)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0):
                raise ParameterError(f"{name} must be None or a non-negative integer, got {v!r}")

    def _record_input(self, view: View) -> None:
        self.n_features_in_ = int(view.n_features)
        self.neurons_in_ = view.index

    def _input_view(self, X) -> View:
        """``X`` as a view whose columns are the ones this probe was fitted on (checked: same width, and the
        same neurons when both sides name model neurons)."""
        self._check_fitted()
        view, _ = as_view(X, block_rows=getattr(self, "block_rows", None))
        check_neurons(self, view.index)
        return view

    @property
    def neurons_(self) -> list:
        """The neuron of every input column (from ``neurons_in_``)."""
        self._check_fitted()
        return self.neurons_in_.neurons()


def check_neurons(probe, index: NeuronIndex, what: str = "X") -> NeuronIndex:
    """The neuron index that names ``probe``'s input columns, checked against ``index`` (the columns of
    data given to it): the widths must agree, and where both name model neurons (not the placeholder
    ``x:0..`` of a bare array) they must be the same neurons in the same order. Returns the index that
    names the columns (the probe's, unless it was fitted on a bare array)."""
    d = probe.n_features_in_
    if index.total != d:
        raise ParameterError(f"{what} has {index.total} columns, the probe was trained on {d}")
    mine = getattr(probe, "neurons_in_", None)
    if mine is None or mine.is_placeholder:
        return index
    if not index.is_placeholder and index != mine:
        bad = next(i for i, (a, b) in enumerate(zip(index.neurons(), mine.neurons())) if a != b)
        raise ParameterError(f"{what}'s columns are not the neurons the probe was trained on: column {bad} is "
                             f"{index.neuron(bad)}, the probe's is {mine.neuron(bad)} ({mine!r} vs {index!r})")
    return mine


class _Blocks:
    """The training (or dev) rows of a fit, as tensors in the training space (standardised when asked), with
    their labels ``y`` (class indices) in the same order.

    ``rows``: the fit's rows of an in-memory ``view`` (its held-out split is kept as positions, not copied);
    ``rng``: each block's rows are put in a random order once (the fit's shuffle: batches are then slices of a
    block, which a training step reads at memory speed, where gathering 128 random rows per step cost as much
    as the step's arithmetic). An in-memory view is gathered block by block into this fit's own float32 copy
    (:meth:`load`), standardised in place and kept (:meth:`prepare`): one copy of the rows in all. A store
    view is re-read block by block every pass, the next block read and reordered in a thread while the
    current one trains, so one block is in memory at a time."""

    def __init__(self, view: View, y_idx: np.ndarray, device: torch.device, rows: np.ndarray | None = None,
                 rng: np.random.Generator | None = None):
        self.view, self.rows = view, rows
        self.in_memory = isinstance(view, ArrayView)
        if rows is None:
            self.bounds = view.bounds()
        else:
            n, br = len(rows), view.block_rows or max(len(rows), 1)
            self.bounds = [(s, min(s + br, n)) for s in range(0, n, br)]
        self.perms = None if rng is None else [rng.permutation(b - a) for a, b in self.bounds]
        y = np.asarray(y_idx)
        if self.perms is not None:
            y = np.concatenate([y[a:b][p] for (a, b), p in zip(self.bounds, self.perms)]) if len(y) else y
        self.y = torch.as_tensor(y, dtype=torch.long, device=device)
        self.convert = None
        self.cache: list[torch.Tensor] | None = None
        self.raw: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def _positions(self, k: int) -> np.ndarray:
        a, b = self.bounds[k]
        idx = np.arange(a, b) if self.rows is None else self.rows[a:b]
        return idx if self.perms is None else idx[self.perms[k]]

    def load(self) -> list[np.ndarray]:
        """An in-memory view's blocks as this fit's own float32 arrays, in the fit's order (raw values)."""
        self.raw = [_gather_rows(self.view.X, self._positions(k)) for k in range(len(self.bounds))]
        self.view = None  # the blocks hold what training needs
        return self.raw

    def prepare(self, convert) -> None:
        """Set ``convert(Xb, private)``; an in-memory view's blocks are converted now, in place."""
        self.convert = convert
        if self.in_memory:
            raw = self.raw if self.raw is not None else self.load()
            self.cache, self.raw = [], None
            while raw:  # each array is dropped once converted: no second copy of the rows at any time
                self.cache.append(convert(raw.pop(0), True))

    def _read(self, k: int) -> np.ndarray:
        """Block ``k`` of a store view, read and put in the fit's order (a new array when reordered)."""
        Xb = self.view.read(*self.bounds[k])
        return Xb if self.perms is None else Xb[self.perms[k]]

    def iterate(self, order) -> tuple[int, int, torch.Tensor]:
        """``(start, stop, block tensor)`` in ``order`` (block numbers)."""
        if self.cache is not None:
            for b in order:
                yield *self.bounds[b], self.cache[b]
            return
        order = list(order)
        private = self.perms is not None  # a reordered block is a new array; a plain read may be shared
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(self._read, order[0]) if order else None
            for j, b in enumerate(order):
                Xb = fut.result()
                if j + 1 < len(order):
                    fut = pool.submit(self._read, order[j + 1])
                yield *self.bounds[b], self.convert(Xb, private)


class _Stopping:
    """The stopping rule of a fit (module docstring): the monitored loss (dev, else training) must improve
    by ``tol`` within ``patience`` epochs; when it does not, the best weights come back (dev) and the
    learning rate decays (``decays`` times), then training stops, converged. Records the histories and
    ``n_epochs_`` / ``best_epoch_`` / ``converged_`` on the probe."""

    def __init__(self, probe, has_dev: bool, patience: int, decays: int, final_patience: int | None = None):
        self.probe, self.has_dev, self.patience, self.decays = probe, has_dev, patience, decays
        self.final_patience = patience if final_patience is None else final_patience
        self.best = self.lowest = math.inf
        self.best_state, self.best_epoch, self.bad, self.epoch, self.decayed = None, 0, 0, -1, False
        self.converged = None if probe.tol is None else False
        probe.loss_history_, probe.dev_loss_history_ = [], []

    def update(self, epoch: int, train_loss: float, dev, bar) -> str:
        """``"go"``, ``"decay"`` (lower the learning rate) or ``"stop"`` after an epoch."""
        p = self.probe
        self.epoch = epoch
        p.loss_history_.append(train_loss)
        monitored = train_loss
        if dev is not None:
            monitored = p._dev_loss(dev)
            p.dev_loss_history_.append(monitored)
            bar.set_postfix(loss=f"{train_loss:.4f}", dev=f"{monitored:.4f}")
        else:
            bar.set_postfix(loss=f"{train_loss:.4f}")
        if p.tol is None:
            return "go"
        if monitored < self.lowest:  # the weights kept: the lowest dev loss, however small the gain
            self.lowest, self.best_epoch = monitored, epoch
            if self.has_dev:
                self.best_state = [t.detach().clone() for t in p.model_.parameters()]
        if monitored < self.best - p.tol:  # patience restarts only on a gain of more than tol
            self.best, self.bad = monitored, 0
            return "go"
        self.bad += 1
        if self.bad < (self.final_patience if self.decayed else self.patience):
            return "go"
        if self.best_state is not None:
            p._restore(self.best_state)
        if self.decays == 0:
            self.converged = True
            return "stop"
        self.decays, self.bad = self.decays - 1, 0
        self.decayed = self.decays == 0  # the last learning rate: its phase has its own patience
        return "decay"

    def finish(self, converged: bool | None = None) -> None:
        p = self.probe
        if converged is not None:
            self.converged = converged
        if self.best_state is not None:
            p._restore(self.best_state)
        p.n_epochs_ = p.n_iter_ = self.epoch + 1
        p.best_epoch_ = (self.best_epoch if p.tol is not None else self.epoch) + 1
        p.converged_ = self.converged
        if self.converged is False:
            warnings.warn(f"{type(p).__name__} did not converge in {p.epochs} epochs (the {p.monitor_} loss was "
                          f"still improving by more than tol={p.tol}); raise epochs or lr", ConvergenceWarning,
                          stacklevel=5)


class _TorchClassifier(ClassifierMixin, BaseProbe):
    """Mini-batch Adam training over the blocks of a view, with the stopping rule of the module docstring."""

    # the hyperparameters every torch probe has (set by the subclasses' __init__)
    epochs: int
    lr: float
    batch_size: int | str
    standardize: bool
    early_stopping: bool
    validation_fraction: float
    patience: int | None
    tol: float | None
    lr_decays: int
    device: str
    random_state: int | None
    block_rows: int | None
    progress: bool
    n_threads: int | None

    def _validate(self) -> None:
        _check_int("epochs", self.epochs, 1)
        if self.lr != "auto":
            _check_number("lr", self.lr, 0, strict=True)
        if self.batch_size != "auto":
            _check_int("batch_size", self.batch_size, 1)
        if self.patience is not None:
            _check_int("patience", self.patience, 1)
        _check_int("lr_decays", self.lr_decays, 0)
        if self.tol is not None:
            _check_number("tol", self.tol, 0)
        _check_number("validation_fraction", self.validation_fraction, 0)
        if self.validation_fraction >= 0.5:
            raise ParameterError(f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}")
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        if self.block_rows is not None:
            _check_int("block_rows", self.block_rows, 1)
        self._check_random_state()

    # -- subclass hooks --------------------------------------------------------------
    def _build(self, d: int, k: int, gen: torch.Generator) -> nn.Module:
        raise NotImplementedError

    def _first_linear(self, model: nn.Module) -> nn.Linear:
        return model[0] if isinstance(model, nn.Sequential) else model

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        """One optimisation step on a batch; adds the batch's summed loss to ``total`` (on device). ``xb``
        is a reused buffer: it must not be kept after the step."""
        raise NotImplementedError

    def _loss_sum(self, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of a batch (what the dev loss monitors)."""
        return F.cross_entropy(logits.float(), yb, reduction="sum")

    def _check_classes(self, k: int) -> None:
        pass

    def _init_optimizer(self) -> None:
        self.optimizer_ = _adam(self.model_.parameters(), lr=self.lr_)

    def _set_lr(self, lr: float) -> None:
        if getattr(self, "optimizer_", None) is not None:
            for group in self.optimizer_.param_groups:
                group["lr"] = lr

    def _train_dtype(self) -> torch.dtype:
        return torch.float32

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y=None, dev=None) -> _TorchClassifier:
        """Train on ``X`` (a labelled view, a store view, a store or an array) with labels ``y`` (default:
        the view's). ``dev``: a labelled view or ``(X, y)`` pair whose loss decides when to stop
        (``early_stopping=True``; without it ``validation_fraction`` of the training sentences is held out)."""
        self._validate()
        view, labels = labelled_view(X, y, what="X")
        dev_pair = None if dev is None else as_labelled(dev, "dev")
        self._stop = threading.Event()
        try:
            run_with_threads(lambda: self._fit(view, labels, dev_pair), self._fit_threads(view), self._stop)
        finally:
            del self._stop
        return self

    def _batch_size(self, n: int) -> int:
        """``batch_size``, or for ``"auto"`` ``n / AUTO_BATCH_STEPS`` rows within ``AUTO_BATCH_MIN..MAX``."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        return int(min(AUTO_BATCH_MAX, max(AUTO_BATCH_MIN, n // AUTO_BATCH_STEPS)))

    def _work_per_step(self, d: int, batch: int) -> int:
        """Rough multiply-adds of one step (the linear layer's, with a few classes), to choose threads."""
        return batch * d * 16

    def _fit_threads(self, view: View) -> int | None:
        """``n_threads``, or for ``None`` one thread for a small probe on the CPU (else torch's setting)."""
        if self.n_threads is not None:
            return int(self.n_threads)
        n, d = view.shape
        lbfgs = self._solver(view) == "lbfgs"
        work = n * d * 16 if lbfgs else self._work_per_step(d, self._batch_size(n))
        if _resolve_device(self.device).type == "cpu" and work < (SMALL_BATCH_WORK if lbfgs else SMALL_STEP_WORK):
            return 1
        return None

    def _holdout(self, view: View, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Row positions (train, dev) with ``validation_fraction`` of the sentences held out, or ``None``
        where there are too few sentences to hold any out."""
        vf = float(self.validation_fraction)
        sent = view.sent_ids
        n_sent = len(np.unique(sent))
        if vf <= 0 or n_sent < 4 or round(vf * n_sent) < 1:
            return None
        tr, dv = split_by_sentence(sent, (1 - vf, vf), seed)
        if not len(tr) or not len(dv):
            return None
        return np.asarray(tr), np.asarray(dv)

    def _convert(self, device: torch.device, dtype: torch.dtype):
        """``convert(Xb, private)``: rows as training tensors (standardised). ``private``: the rows are this
        fit's own copy, standardised in place rather than copied once more (fitting on an array costs one copy
        of its training rows, not two); otherwise the caller's array is never written."""
        shift, inv = self._shift_t, self._inv_t

        def convert(Xb: np.ndarray, private: bool) -> torch.Tensor:
            t = torch.as_tensor(np.ascontiguousarray(Xb, dtype=np.float32), device=device)
            if shift is not None:
                # in place where the tensor is not the caller's array (a private copy, or one on a GPU)
                t = t.sub_(shift).mul_(inv) if private or t.device.type != "cpu" else (t - shift).mul_(inv)
            return t.to(dtype)

        return convert

    def _fit(self, view: View, labels: np.ndarray, dev_pair) -> None:
        if len(view) == 0:
            raise ParameterError("cannot fit a probe on 0 rows")
        classes, y_idx = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ParameterError(
                f"need at least 2 classes to train a probe, got {len(classes)} ({classes.tolist()!r})")
        self._check_classes(len(classes))
        seed = self._seed()
        rng = np.random.default_rng(seed)
        device = _resolve_device(self.device)
        self.device_ = device
        self.classes_ = classes
        self._record_input(view)
        # (view, rows or None, labels) of the training and dev rows; an in-memory view's held-out split
        # stays positions into it until its blocks are gathered
        in_memory = isinstance(view, ArrayView)
        train_src, dev_src = (view, None, labels), None
        if self.early_stopping:
            if dev_pair is not None:
                dev_view, dev_y = dev_pair
                check_neurons(self, dev_view.index, "dev")
                dev_src = (dev_view, None, dev_y)
            else:
                held = self._holdout(view, seed)
                if held is not None:
                    tr, dv = held
                    train_src = (view, tr, labels[tr]) if in_memory else (view.subset(tr), None, labels[tr])
                    dev_src = (view, dv, labels[dv]) if in_memory else (view.subset(dv), None, labels[dv])
        # dev rows whose label the probe cannot output carry no loss it could lower
        if dev_src is not None:
            dv_view, dv_rows, dv_y = dev_src
            known = np.isin(dv_y, classes)
            if not known.all():
                keep = np.flatnonzero(known)
                dev_src = ((dv_view, dv_rows[keep], dv_y[keep]) if dv_rows is not None
                           else (dv_view.subset(keep), None, dv_y[keep]))
            if not known.any():
                dev_src = None
        self.monitor_ = "dev" if dev_src is not None else "train"
        n_train = len(train_src[2])
        self.solver_ = self._solver(view, n_train)
        self.batch_size_ = self._batch_size(n_train)
        dtype = self._train_dtype() if self.solver_ == "adam" else torch.float32
        # the fit's one shuffle (Adam's batches are slices of shuffled blocks; L-BFGS takes all rows at once)
        train = _Blocks(train_src[0], np.searchsorted(classes, train_src[2]), device, train_src[1],
                        rng if self.solver_ == "adam" else None)
        dev = None if dev_src is None else _Blocks(dev_src[0], np.searchsorted(classes, dev_src[2]), device,
                                                   dev_src[1])
        del train_src, dev_src
        if self.standardize:
            # an in-memory view's statistics from the fit's own gathered copy (one pass, no second copy)
            stats = column_stats_of_blocks(train.load()) if train.in_memory else column_stats(train.view)
            self.mean_, self.scale_ = stats.mean.astype(np.float32), stats.scale().astype(np.float32)
            self._shift_t = torch.as_tensor(self.mean_, device=device)
            self._inv_t = torch.as_tensor(1.0 / self.scale_, device=device)
        else:
            d = view.n_features
            self.mean_, self.scale_ = np.zeros(d, np.float32), np.ones(d, np.float32)
            self._shift_t = self._inv_t = None
        gen = torch.Generator().manual_seed(seed)
        self.model_ = self._build(view.n_features, len(classes), gen).to(device)
        self._generator = torch.Generator(device=device).manual_seed(seed + 1)
        for m in self.model_.modules():
            if isinstance(m, _Dropout):
                m.generator = self._generator
        self._start_l2(dev is not None)
        self.lr_ = self._learning_rate(view.n_features)
        if self.solver_ == "adam":
            self._init_optimizer()
        convert = self._convert(device, dtype)
        train.prepare(convert)
        if dev is not None:
            dev.prepare(convert)
        del view
        # (with an internal holdout, the L-BFGS path refits on train + held-out rows once l2 is chosen)
        try:
            if self.solver_ == "lbfgs":
                self._train_lbfgs(train, dev, refit=dev_pair is None and dev is not None)
            else:
                self._train(train, dev, rng)
        finally:
            self._cleanup()
        self._fold_standardization()
        self.model_.eval()
        self.fitted_ = True

    def _train(self, train: _Blocks, dev: _Blocks | None, rng: np.random.Generator) -> None:
        """Mini-batch Adam: one epoch per pass over the (shuffled) blocks."""
        bs = self.batch_size_
        final = None if self.patience is not None else ADAM_FINAL_PATIENCE
        rule = _Stopping(self, dev is not None, self._patience(), int(self.lr_decays), final)
        lr = self.lr_
        bar = tqdm(range(self.epochs), desc=type(self).__name__, disable=None if self.progress else True)
        for epoch in bar:
            self.model_.train()
            total, count = torch.zeros(1, device=self.device_), 0  # summed on device: no per-step sync
            order = rng.permutation(len(train.bounds))
            starts = [rng.permutation(np.arange(0, train.bounds[b][1] - train.bounds[b][0], bs)) for b in order]
            for (start, stop, Xb), firsts in zip(train.iterate(order), starts):
                yblock = train.y[start:stop]
                for a in firsts:  # the batches of a shuffled block, in a new order every epoch
                    if self._stop.is_set():
                        raise KeyboardInterrupt
                    self._step(Xb[a : a + bs], yblock[a : a + bs], total)
                    count += min(bs, len(yblock) - a)
            action = rule.update(epoch, float(total) / max(count, 1), dev, bar)
            if action == "stop":
                break
            if action == "decay":
                lr /= 10
                self._set_lr(lr)
        bar.close()
        rule.finish()

    def _patience(self) -> int:
        if self.patience is not None:
            return int(self.patience)
        return LBFGS_PATIENCE if getattr(self, "solver_", "adam") == "lbfgs" else ADAM_PATIENCE

    def _solver(self, view: View, n_rows: int | None = None) -> str:
        """The solver for fitting ``n_rows`` rows (default: all) of ``view``."""
        return "adam"

    def _objective(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The smooth full-batch training objective minimised by L-BFGS (linear probes only)."""
        raise NotImplementedError

    def _start_l2(self, has_dev: bool) -> None:
        """``l2_``, the L2 weight the fit starts with (the probes without an L2 term have none)."""

    def _learning_rate(self, d: int) -> float:
        """``lr``, or for ``"auto"``: Adam moves every weight by about lr a step, so a logit moves by about
        lr * sum|z| ~ 0.8 lr d on standardised inputs; ``min(1e-2, AUTO_LR_SCALE / d)`` keeps that step the
        same whatever the width (1e-2 for an LSTM's 128 units, 1.1e-3 for MiniLM's 2,688) at batches of 128,
        and grows with the square root of the batch beyond (the gradient's noise falls as 1 / sqrt(batch):
        Hoffer et al. 2017, Malladi et al. 2022 for Adam; 2.2e-3 for MiniLM at 512); raw inputs 1e-3."""
        if self.lr != "auto":
            return float(self.lr)
        if not self.standardize:
            return 1e-3
        return min(1e-2, AUTO_LR_SCALE * math.sqrt(self.batch_size_ / 128) / max(d, 1))

    def _train_lbfgs(self, train: _Blocks, dev: _Blocks | None, refit: bool = False) -> None:
        """Full-batch L-BFGS (strong-Wolfe line search) from zero weights, in float64 as scikit-learn: in
        float32 the line search stalls where an ill-conditioned objective (collinear units) is flat to 1e-7.

        A fixed ``l2``: one iteration per "epoch", with the stopping rule of Adam (no learning rate to decay),
        also stopping at a stationary point. ``l2="auto"``: the objective is solved to convergence for each
        ``AUTO_L2_GRID`` value (strong to weak, each fit warm-started from the last), the value with the lowest
        dev loss is kept (``l2_``, ``l2_path_``), and with an internal holdout the probe is refitted on all
        training rows at that value (``refit``)."""
        X = torch.cat([Xb for _, _, Xb in train.iterate(range(len(train.bounds)))]).double()
        y = train.y
        self.model_.double()
        with torch.no_grad():
            for t in self.model_.parameters():
                t.zero_()
        try:
            if self.l2 == "auto" and dev is not None:
                self._lbfgs_path(X, y, dev, refit)
            else:
                self._lbfgs_early_stopping(X, y, dev)
        finally:
            self.model_.float()

    def _lbfgs(self):
        # one iteration per step() call (to monitor the loss in between); max_eval must be set: its default
        # (1.25 x max_iter = 1 evaluation) leaves the line search no room, and L-BFGS stalls
        return torch.optim.LBFGS(list(self.model_.parameters()), lr=1, max_iter=1, max_eval=25, history_size=10,
                                 line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0)

    def _lbfgs_iteration(self, opt, X: torch.Tensor, y: torch.Tensor) -> tuple[float, bool]:
        """One L-BFGS iteration: ``(objective, stationary)``."""
        if self._stop.is_set():
            raise KeyboardInterrupt

        def closure():
            opt.zero_grad()
            loss = self._objective(X, y)
            loss.backward()
            return loss

        self.model_.train()
        loss = float(opt.step(closure).detach())
        return loss, max(float(t.grad.abs().max()) for t in self.model_.parameters()) < LBFGS_GRAD_TOL

    def _lbfgs_early_stopping(self, X: torch.Tensor, y: torch.Tensor, dev: _Blocks | None) -> None:
        opt = self._lbfgs()
        rule = _Stopping(self, dev is not None, self._patience(), 0)
        bar = tqdm(range(self.epochs), desc=f"{type(self).__name__} (L-BFGS)", disable=None if self.progress else True)
        stationary = False
        for it in bar:
            loss, stationary = self._lbfgs_iteration(opt, X, y)
            if rule.update(it, loss, dev, bar) == "stop" or stationary:
                break
        bar.close()
        rule.finish(True if stationary and self.tol is not None else None)

    def _lbfgs_converge(self, X: torch.Tensor, y: torch.Tensor, budget: int) -> tuple[int, float, bool]:
        """L-BFGS until stationary or the objective gains less than ``tol`` (relative) for ``patience``
        iterations: ``(iterations, objective, converged)``."""
        opt, best, bad, loss = self._lbfgs(), math.inf, 0, math.inf
        tol = 1e-4 if self.tol is None else self.tol
        for it in range(budget):
            loss, stationary = self._lbfgs_iteration(opt, X, y)
            if stationary:
                return it + 1, loss, True
            if loss < best - tol * max(1.0, abs(best)):
                best, bad = loss, 0
            else:
                bad += 1
                if bad >= LBFGS_CONVERGED_PATIENCE:
                    return it + 1, loss, True
        return budget, loss, False

    def _lbfgs_path(self, X: torch.Tensor, y: torch.Tensor, dev: _Blocks, refit: bool) -> None:
        self.loss_history_, self.dev_loss_history_, self.l2_path_ = [], [], []
        used, best, all_converged = 0, (math.inf, None, None), True
        bar = tqdm(AUTO_L2_GRID, desc=f"{type(self).__name__} (L-BFGS, l2 path)",
                   disable=None if self.progress else True)
        worse = 0
        for l2 in bar:
            self.l2_ = l2
            n_it, loss, converged = self._lbfgs_converge(X, y, max(1, self.epochs - used))
            used += n_it
            all_converged &= converged
            dev_loss = self._dev_loss(dev)
            self.loss_history_.append(loss)
            self.dev_loss_history_.append(dev_loss)
            self.l2_path_.append({"l2": l2, "iterations": n_it, "loss": loss, "dev_loss": dev_loss})
            bar.set_postfix(l2=f"{l2:g}", dev=f"{dev_loss:.4f}")
            if dev_loss < best[0]:
                best, worse = (dev_loss, l2, [t.detach().clone() for t in self.model_.parameters()]), 0
            else:
                worse += 1
                if worse >= 2:  # dev loss is U-shaped in l2: two steps past its minimum end the path
                    break
            if used >= self.epochs:
                break
        bar.close()
        self.l2_ = best[1]
        self._restore(best[2])
        if refit:  # the held-out rows chose l2; now every training row serves the fit
            Xd = torch.cat([Xb for _, _, Xb in dev.iterate(range(len(dev.bounds)))]).double()
            n_it, _, converged = self._lbfgs_converge(torch.cat([X, Xd]), torch.cat([y, dev.y]),
                                                      max(1, self.epochs - used))
            used += n_it
            all_converged &= converged
        self.n_epochs_ = self.n_iter_ = self.best_epoch_ = used
        self.converged_ = bool(all_converged)
        if not all_converged:
            warnings.warn(f"{type(self).__name__}: L-BFGS did not converge within {self.epochs} iterations along "
                          f"the l2 path; raise epochs", ConvergenceWarning, stacklevel=5)

    def _restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(self.model_.parameters(), state):
                p.copy_(s)

    @torch.no_grad()
    def _dev_loss(self, dev: _Blocks) -> float:
        self.model_.eval()
        total = torch.zeros((), device=self.device_)
        for start, stop, Xb in dev.iterate(range(len(dev.bounds))):
            total += self._loss_sum(self._training_logits(Xb), dev.y[start:stop])
        return float(total) / max(len(dev), 1)

    def _training_logits(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits of a batch in the training space (inputs already standardised)."""
        if xb.dtype == torch.float32 and self._first_linear(self.model_).weight.dtype == torch.float64:
            return self.model_(xb.double())  # the float64 L-BFGS fit
        if xb.dtype != torch.float32:
            with torch.autocast(xb.device.type, dtype=xb.dtype):
                return self.model_(xb).float()
        return self.model_(xb)

    def _cleanup(self) -> None:
        """Drop training-time state (optimizer, buffers, generators): a fitted probe pickles and copies lightly."""
        for name in ("optimizer_", "_adam", "_W", "_b", "_Wflat", "_bcol", "_pen", "_gb", "_penflat", "_l1",
                     "_minus_one", "_ones", "_mm_nt", "_generator", "_shift_t", "_inv_t"):
            self.__dict__.pop(name, None)
        for m in self.model_.modules():
            if isinstance(m, _Dropout):
                m.generator = None

    def _fold_standardization(self) -> None:
        """Turn the first layer's weights on standardised inputs into weights on the input units:
        ``W z + b`` with ``z = (x - mean) / scale`` is ``(W / scale) x + (b - W (mean / scale))``."""
        if not self.standardize:
            return
        lin = self._first_linear(self.model_)
        inv = torch.as_tensor(1.0 / self.scale_, device=lin.weight.device)
        shift = torch.as_tensor(self.mean_, device=lin.weight.device)
        with torch.no_grad():
            lin.bias.sub_(lin.weight @ (shift * inv))
            lin.weight.mul_(inv)

    # -- inference -----------------------------------------------------------------------
    @torch.no_grad()
    def decision_function(self, X) -> np.ndarray:
        """Logits ``[n, n_classes]`` (one column for the binary :class:`LogisticProbe`)."""
        view = self._input_view(X)
        self.model_.eval()
        outs = [self.model_(torch.as_tensor(view.read(a, b), device=self.device_)).float().cpu().numpy()
                for a, b in view_bounds(view, self.block_rows)]
        return np.concatenate(outs) if outs else np.zeros((0, self._n_logits()), np.float32)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` in the order of ``classes_``."""
        z = torch.as_tensor(self.decision_function(X))
        if z.shape[1] == 1:  # binary logistic: one logit for classes_[1]
            p1 = torch.sigmoid(z[:, 0])
            return torch.stack([1 - p1, p1], 1).numpy()
        return torch.softmax(z, 1).numpy()

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _n_logits(self) -> int:
        last = self.model_[-1] if isinstance(self.model_, nn.Sequential) else self.model_
        return int(last.weight.shape[0])

    def score(self, X, y=None, sample_weight=None) -> float:
        """Accuracy on ``X`` with labels ``y`` (default: the view's)."""
        view, y = labelled_view(X, y, what="X")
        pred = self.predict(view)
        return float(np.average(pred == y, weights=sample_weight))

    def evaluate(self, X, y=None) -> dict:
        """Accuracy, macro-F1 and per-class precision / recall / F1 (see ``classification_metrics``)."""
        view, y = labelled_view(X, y, what="X")
        return classification_metrics(y, self.predict(view), labels=self.classes_)

    def masked(self, keep, fill=None) -> _TorchClassifier:
        """A fitted copy of this probe that sees only the input columns ``keep`` (column numbers, or neurons
        of ``neurons_in_``): every other unit reads as ``fill`` (one value per input unit, e.g. its training
        mean; default 0). Done in the first layer's weights — the removed columns' weights are zeroed and
        their contribution at ``fill`` moves into the bias — so no masked copy of the data is ever made."""
        self._check_fitted()
        d = self.n_features_in_
        keep = np.asarray(keep)
        if keep.dtype.kind not in "iu":
            keep = np.asarray(self.neurons_in_.columns(list(keep)), dtype=np.int64)
        if len(keep) and (keep.min() < 0 or keep.max() >= d):
            raise ParameterError(f"columns to keep must be in 0..{d - 1}")
        drop = np.ones(d, dtype=bool)
        drop[keep] = False
        new = copy.copy(self)
        new.model_ = copy.deepcopy(self.model_)
        lin = self._first_linear(new.model_)
        dropped = torch.as_tensor(np.flatnonzero(drop), device=lin.weight.device)
        with torch.no_grad():
            if fill is not None:
                fill = np.asarray(fill, dtype=np.float32).reshape(-1)
                if len(fill) != d:
                    raise ParameterError(f"fill has {len(fill)} values, the probe has {d} inputs")
                f = torch.as_tensor(fill, device=lin.weight.device)[dropped]
                lin.bias.add_(lin.weight[:, dropped] @ f)
            lin.weight[:, dropped] = 0
        return new


class LinearProbe(_TorchClassifier):
    """Softmax regression with elastic-net regularisation (Dalvi et al. 2019, "What is one grain of
    sand in the desert?", AAAI; NeuroX ``train_logistic_regression_probe``).

    loss = mean cross-entropy + ``l1`` * sum|W| + ``l2`` * ||W||_2 (Frobenius norm, not squared; the
    bias is not penalised; ``l2="auto"``: chosen on the dev split, see the module docstring; the value used
    is ``l2_``), minimised until the dev loss stops improving (see the module docstring:
    ``epochs`` is the maximum; ``solver``: ``"auto"``, ``"adam"`` (mini-batches) or ``"lbfgs"`` (full batch,
    in memory)); ``batch_size="auto"`` is ``n_train / 64`` rows within 128..512 (``batch_size_``). With
    ``standardize=True`` the penalty acts on the
    weights of standardised units (``penalized_coef_``). Two classes work as well (a two-way softmax).
    ``coef_`` is ``[n_classes, n_features]`` on the input units; ``classes_`` keeps the label names;
    ``neurons_in_`` the neurons of the columns. ``block_rows`` sets the block size used when streaming
    (``None``: an in-memory array is one block). ``precision="bfloat16"``: mixed-precision training, the
    training matrix held in bfloat16 (half the memory) and the matmuls in bfloat16 with float32
    accumulation, float32 weights, softmax and Adam; about 1.5x faster where the CPU (AVX512-BF16, AMX) or
    GPU has bfloat16 units. ``n_threads``: torch's intra-op threads for the fit, set in the fitting thread only (see
    :func:`run_with_threads`; ``None``: one thread for a small probe on the CPU, else torch's setting).
    ``seed`` is the deprecated name of ``random_state``.
    """

    def __init__(
        self,
        l1: float = 1e-5,
        l2: float | str = "auto",
        epochs: int = 100,
        lr: float | str = "auto",
        batch_size: int | str = "auto",
        standardize: bool = True,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        tol: float | None = 1e-4,
        lr_decays: int = 1,
        solver: str = "auto",
        device: str = "auto",
        random_state: int | None = 0,
        block_rows: int | None = None,
        progress: bool = True,
        precision: str = "float32",
        n_threads: int | None = None,
        seed: int | None = None,
    ):
        self.l1, self.l2, self.solver = l1, l2, solver
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.standardize, self.early_stopping = standardize, early_stopping
        self.validation_fraction = validation_fraction
        self.patience, self.tol, self.lr_decays = patience, tol, lr_decays
        self.device, self.random_state, self.block_rows, self.progress = device, random_state, block_rows, progress
        self.precision, self.n_threads, self.seed = precision, n_threads, seed

    @classmethod
    def neurox(cls, **overrides) -> LinearProbe:
        """NeuroX's ``train_logistic_regression_probe`` configuration (Dalvi et al. 2019): 10 epochs of Adam
        at lr 1e-3, batch 128, l1 = l2 = 1e-5, raw (unstandardised) inputs, no stopping rule."""
        kw = dict(l1=1e-5, l2=1e-5, epochs=10, lr=1e-3, batch_size=128, standardize=False, early_stopping=False,
                  tol=None, lr_decays=0, solver="adam")
        return cls(**{**kw, **overrides})

    def _validate(self) -> None:
        super()._validate()
        _check_number("l1", self.l1, -math.inf)
        if self.l2 != "auto":
            _check_number("l2", self.l2, -math.inf)
        if self.l1 < 0 or (self.l2 != "auto" and self.l2 < 0):
            raise ParameterError(f"l1 and l2 must be >= 0, got l1={self.l1}, l2={self.l2}")
        if self.precision not in ("float32", "bfloat16"):
            raise ParameterError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.solver not in SOLVERS:
            raise ParameterError(f"solver must be one of {SOLVERS}, got {self.solver!r}")

    def _start_l2(self, has_dev: bool) -> None:
        if self.l2 != "auto":
            self.l2_ = float(self.l2)
        elif self.solver_ == "lbfgs" and has_dev:
            self.l2_ = AUTO_L2_GRID[0]  # the path starts at the strongest penalty
        else:
            self.l2_ = AUTO_L2_ADAM if self.solver_ == "adam" else AUTO_L2_WITHOUT_DEV

    def _solver(self, view: View, n_rows: int | None = None) -> str:
        if self.solver != "auto":
            return self.solver
        n = view.shape[0] if n_rows is None else n_rows
        small = isinstance(view, ArrayView) and n * view.shape[1] <= LBFGS_MAX_ENTRIES
        return "lbfgs" if small and self.precision == "float32" else "adam"

    def _smooth_penalty(self, W: torch.Tensor) -> torch.Tensor:
        """The elastic-net penalty with |w| smoothed to sqrt(w^2 + eps^2) (and ||W|| to sqrt(||W||^2 + eps^2))."""
        pen = W.new_zeros(())
        if self.l1:
            pen = pen + self.l1 * torch.sqrt(W * W + L1_SMOOTHING**2).sum()
        if self.l2_:
            pen = pen + self.l2_ * torch.sqrt((W * W).sum() + L1_SMOOTHING**2)
        return pen

    def _objective(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model_(X), y) + self._smooth_penalty(self.model_.weight)

    def _train_dtype(self) -> torch.dtype:
        if self.precision != "bfloat16":
            return torch.float32
        if self.device_.type == "cpu" and not cpu_has_bfloat16():
            warnings.warn("precision='bfloat16' on a CPU without bfloat16 units (AVX512-BF16, AMX): torch emulates "
                          "its matmuls, about 10x slower than float32 here; use precision='float32'",
                          RuntimeWarning, stacklevel=6)
        return torch.bfloat16

    def _build(self, d: int, k: int, gen: torch.Generator) -> nn.Module:
        return _linear(d, k, gen)

    def _init_optimizer(self) -> None:
        lin = self.model_
        # plain tensors sharing the parameters' storage: no detach() or module lookups per step
        self._W, self._b = lin.weight.detach(), lin.bias.detach()
        self._Wflat, self._bcol = self._W.view(-1), self._b.view(-1, 1)
        self._pen, self._gb = torch.zeros_like(self._W), torch.zeros_like(self._b)
        self._penflat = self._pen.view(-1)
        self._adam = _FusedAdam([self._W, self._b], lr=self.lr_)
        dev = self._W.device
        self._l1 = torch.tensor(float(self.l1), device=dev)
        self._minus_one = torch.full((1, self.batch_size_), -1.0, device=dev)
        self._ones = torch.ones(self.batch_size_, device=dev)
        self._mm_nt = _MatmulNT(dev)

    def _set_lr(self, lr: float) -> None:
        super()._set_lr(lr)
        if getattr(self, "_adam", None) is not None:
            self._adam.lr = lr

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        # Hand-written gradient of elastic_net_loss: avoids autograd bookkeeping, which dominates the
        # cost of these tiny matmuls (tests check it equals autograd + torch.optim.Adam). Each small op
        # costs a few microseconds of dispatch, as much as its arithmetic, so there are as few as possible.
        W, pen, n = self._W, self._pen, xb.shape[0]
        yb = yb[None, :]
        # everything in [classes, rows] layout: [k, d] @ [d, n] is ~2x faster than [n, d] @ [d, k] in
        # MKL with few classes, and a softmax over dim 0 of [k, n] ~10x faster than over dim 1 of [n, k]
        mixed = xb.dtype != torch.float32
        if mixed:  # the bias is added in float32, which also casts the logits back (one op, not three)
            logits = torch.add(torch.mm(W.to(xb.dtype), xb.t()), self._bcol)
        else:
            logits = self._mm_nt(W, xb).add_(self._bcol)
        logp = torch.log_softmax(logits, 0)
        total.addmv_(logp.gather(0, yb), self._ones[:n], alpha=-1)  # summed cross-entropy
        g = logp.exp_()  # softmax; minus the one-hot targets, over n, is d(mean CE)/d(logits)
        g.scatter_add_(0, yb, self._minus_one[:, :n]).mul_(1.0 / n)
        # the penalty's gradient l1 * sign(W) + l2 * W / ||W|| (copysign: +-l1 at W = +-0, a subgradient)
        torch.copysign(self._l1, W, out=pen)
        if self.l2_:  # W = 0 gives 0 here, and no host sync is needed
            pen.addcdiv_(W, torch.dot(self._Wflat, self._Wflat).sqrt_().clamp_min_(1e-30), value=self.l2_)
        if self.l1 or self.l2_:
            # <penalty gradient, W> = l1 * sum|W| + l2 * ||W||: the penalty's value in one op
            total.add_(torch.dot(self._penflat, self._Wflat), alpha=n)
        if mixed:
            gW = pen.add_(torch.mm(g.to(xb.dtype), xb))
        else:
            gW = self._mm_nt(g, xb.t(), add=pen)  # g @ xb + pen
        torch.mv(g, self._ones[:n], out=self._gb)
        self._adam.step([gW, self._gb])

    def _penalty(self, W: torch.Tensor) -> torch.Tensor:
        return self.l1 * W.abs().sum() + self.l2_ * torch.linalg.vector_norm(W)

    def loss(self, X, y=None) -> float:
        """The full training objective on ``(X, y)`` with the current parameters (the penalty on
        ``penalized_coef_``)."""
        self._check_fitted()
        view, y = labelled_view(X, y, what="X")
        z = torch.as_tensor(self.decision_function(view))
        return float(self._data_loss(z, y) + self._penalty(torch.as_tensor(self.penalized_coef_)))

    def _data_loss(self, z: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        return F.cross_entropy(z, torch.as_tensor(np.searchsorted(self.classes_, y)))

    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        return self.model_.weight.detach().cpu().numpy().copy()

    @property
    def intercept_(self) -> np.ndarray:
        self._check_fitted()
        return self.model_.bias.detach().cpu().numpy().copy()

    @property
    def penalized_coef_(self) -> np.ndarray:
        """``coef_ * scale_``: the weights the elastic-net penalty acts on — per standard deviation of each
        unit with ``standardize=True``, ``coef_`` itself otherwise. Rankings by probe weight use these, so a
        unit with a large variance ("rogue" dimension) neither gains nor loses rank from its scale alone."""
        return self.coef_ * self.scale_[None, :]

    def set_weights(self, coef, intercept, classes, index=None) -> LinearProbe:
        """Install given parameters (e.g. hand-set weights for a test, or a saved probe); ``index`` names
        the columns (default: the placeholder ``x:0..``)."""
        coef = np.asarray(coef, dtype=np.float32)
        if coef.ndim != 2:
            raise ParameterError(f"coef must be [n_classes, n_features], got shape {coef.shape}")
        self.classes_ = np.asarray(classes)
        d = coef.shape[1]
        self.n_features_in_ = d
        self.neurons_in_ = NeuronIndex.placeholder(d) if index is None else (
            index if isinstance(index, NeuronIndex) else NeuronIndex.from_neurons(index))
        if self.neurons_in_.total != d:
            raise ParameterError(f"index has {self.neurons_in_.total} columns, coef has {d}")
        self.mean_, self.scale_ = np.zeros(d, np.float32), np.ones(d, np.float32)
        self.l2_ = AUTO_L2_WITHOUT_DEV if self.l2 == "auto" else float(self.l2)
        self.device_ = _resolve_device(self.device)
        self.model_ = nn.Linear(d, coef.shape[0]).to(self.device_)
        with torch.no_grad():
            self.model_.weight.copy_(torch.as_tensor(coef))
            self.model_.bias.copy_(torch.as_tensor(np.asarray(intercept, dtype=np.float32)))
        self.model_.eval()
        self.fitted_ = True
        return self


class LogisticProbe(LinearProbe):
    """Binary logistic regression with the same elastic-net penalty (one logit for ``classes_[1]``).

    ``coef_`` is ``[1, n_features]`` as in scikit-learn.
    """

    def _check_classes(self, k: int) -> None:
        if k != 2:
            raise ParameterError(f"LogisticProbe is binary; got {k} classes (use LinearProbe for more)")

    def _build(self, d: int, k: int, gen: torch.Generator) -> nn.Module:
        return _linear(d, 1 if k == 2 else k, gen)

    _init_optimizer = _TorchClassifier._init_optimizer  # autograd + torch.optim.Adam (one logit)
    _set_lr = _TorchClassifier._set_lr

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        W = self.model_.weight
        self.optimizer_.zero_grad(set_to_none=True)
        z = self._training_logits(xb)[:, 0]
        loss = F.binary_cross_entropy_with_logits(z, yb.float()) + self._penalty(W)
        loss.backward()
        self.optimizer_.step()
        total.add_(loss.detach(), alpha=len(yb))

    def _loss_sum(self, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), yb.float(), reduction="sum")

    def _objective(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (F.binary_cross_entropy_with_logits(self.model_(X)[:, 0], y.float())
                + self._smooth_penalty(self.model_.weight))

    def _data_loss(self, z: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(z[:, 0], torch.as_tensor((y == self.classes_[1]).astype(np.float32)))


class MLPProbe(_TorchClassifier):
    """A small multi-layer perceptron probe (ReLU), e.g. MLP-1 / MLP-2 of Hewitt & Liang 2019, used to
    compare selectivity with the linear probe. ``hidden`` is the tuple of hidden sizes; training and the
    stopping rule as :class:`LinearProbe` (autograd, ``torch.optim.Adam`` with ``weight_decay``)."""

    def __init__(
        self,
        hidden: int | tuple[int, ...] = (256,),
        dropout: float = 0.0,
        weight_decay: float = 0.0,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 128,
        standardize: bool = True,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        tol: float | None = 1e-4,
        lr_decays: int = 1,
        device: str = "auto",
        random_state: int | None = 0,
        block_rows: int | None = None,
        progress: bool = True,
        n_threads: int | None = None,
        seed: int | None = None,
    ):
        self.hidden, self.dropout, self.weight_decay = hidden, dropout, weight_decay
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.standardize, self.early_stopping = standardize, early_stopping
        self.validation_fraction = validation_fraction
        self.patience, self.tol, self.lr_decays = patience, tol, lr_decays
        self.device, self.random_state, self.block_rows, self.progress = device, random_state, block_rows, progress
        self.n_threads, self.seed = n_threads, seed

    def _hidden_sizes(self) -> tuple[int, ...]:
        return (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)

    def _validate(self) -> None:
        super()._validate()
        hidden = self._hidden_sizes()
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in hidden):
            raise ParameterError(f"hidden sizes must be positive ints, got {self.hidden!r}")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ParameterError(f"dropout must be in [0, 1), got {self.dropout}")
        _check_number("weight_decay", self.weight_decay, 0)

    def _build(self, d: int, k: int, gen: torch.Generator) -> nn.Module:
        layers: list[nn.Module] = []
        prev = d
        for h in self._hidden_sizes():
            layers += [_linear(prev, int(h), gen), nn.ReLU()]
            if self.dropout:
                layers.append(_Dropout(self.dropout))
            prev = int(h)
        layers.append(_linear(prev, k, gen))
        return nn.Sequential(*layers)

    def _work_per_step(self, d: int, batch: int) -> int:
        sizes = (d, *self._hidden_sizes())
        return batch * sum(a * b for a, b in zip(sizes, sizes[1:])) * 3

    def _init_optimizer(self) -> None:
        self.optimizer_ = _adam(self.model_.parameters(), lr=self.lr_, weight_decay=self.weight_decay)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        self.optimizer_.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model_(xb), yb)
        loss.backward()
        self.optimizer_.step()
        total.add_(loss.detach(), alpha=len(yb))


class RidgeProbe(RegressorMixin, BaseProbe):
    """Ridge regression for real-valued properties: argmin ||y - XW^T - b||^2 + alpha ||W||_F^2
    (intercept unpenalised), solved exactly from X^T X accumulated over row blocks (streams a store).
    ``score`` is R^2 (averaged over targets)."""

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True, block_rows: int | None = 8192):
        self.alpha, self.fit_intercept, self.block_rows = alpha, fit_intercept, block_rows

    def fit(self, X, y=None) -> RidgeProbe:
        _check_number("alpha", self.alpha, 0)
        view, y = labelled_view(X, y, what="X")
        if len(view) == 0:
            raise ParameterError("cannot fit a probe on 0 rows")
        try:
            Y = np.asarray(y, dtype=np.float64)
        except ValueError as e:
            raise ParameterError("RidgeProbe needs real-valued targets (use LinearProbe for labels)") from e
        self._1d = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        d = view.n_features
        n = 0
        sx, sy = np.zeros(d), np.zeros(Y.shape[1])
        xtx, xty = np.zeros((d, d)), np.zeros((d, Y.shape[1]))
        for start, stop in view_bounds(view, self.block_rows):
            Xb = view.read(start, stop).astype(np.float64)
            Yb = Y[start:stop]
            n += stop - start
            sx += Xb.sum(0)
            sy += Yb.sum(0)
            xtx += Xb.T @ Xb
            xty += Xb.T @ Yb
        if self.fit_intercept:  # centre via sufficient statistics, so the intercept is unpenalised
            mx, my = sx / n, sy / n
            xtx = xtx - n * np.outer(mx, mx)
            xty = xty - n * np.outer(mx, my)
        else:
            mx, my = np.zeros(d), np.zeros(Y.shape[1])
        W = np.linalg.solve(xtx + self.alpha * np.eye(d), xty)  # [d, t]
        self.coef_ = W.T.astype(np.float32)
        self.intercept_ = (my - mx @ W).astype(np.float32)
        self._record_input(view)
        self.fitted_ = True
        return self

    def predict(self, X) -> np.ndarray:
        view = self._input_view(X)
        out = np.concatenate([view.read(a, b) @ self.coef_.T + self.intercept_
                              for a, b in view_bounds(view, self.block_rows)])
        return out[:, 0] if self._1d else out

    def score(self, X, y=None, sample_weight=None) -> float:
        """Coefficient of determination R^2."""
        view, y = labelled_view(X, y, what="X")
        Y = np.asarray(y, dtype=np.float64).reshape(len(view), -1)
        P = np.asarray(self.predict(view), dtype=np.float64).reshape(Y.shape)
        ss_res = ((Y - P) ** 2).sum(0)
        ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
        r2 = 1 - ss_res / np.where(ss_tot > 0, ss_tot, math.inf)
        return float(np.mean(r2))


__all__ = ["BaseProbe", "LinearProbe", "LogisticProbe", "MLPProbe", "RidgeProbe", "check_neurons",
           "elastic_net_loss", "run_with_threads"]
