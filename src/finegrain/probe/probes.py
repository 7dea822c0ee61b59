"""Probing classifiers: elastic-net softmax regression (Dalvi et al. 2019, NeuroX), binary logistic
regression, ridge regression for real-valued properties, and a small MLP (for selectivity comparisons,
Hewitt & Liang 2019).

All take ``X`` as a numpy array, an :class:`ActivationStore` or a :class:`StoreSource` (a store read
lazily in row blocks, so that a matrix larger than RAM works), and ``y`` as one label per row.
"""

from __future__ import annotations

import inspect
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from finegrain.probe.metrics import classification_metrics
from finegrain.probe.sources import ArraySource, StoreSource, as_labels, as_source


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextmanager
def _small_work_threads(device: torch.device, work: int):
    """Run tiny CPU problems single-threaded: intra-op threads only add synchronisation (and spin
    badly on a busy machine) when each matmul is a few hundred kFLOP; from a few MFLOP per step (a
    128 x 2,688 x 13 probe) two threads are 1.3x faster on an idle machine. Restores the setting after."""
    if device.type != "cpu" or work >= 1_000_000:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _adam(params, **kw) -> torch.optim.Optimizer:
    """Adam, fused where this torch build supports it (about 2x faster steps for small probes)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


class _FlatAdam:
    """Adam (Kingma & Ba 2015) on one flat tensor, with exactly torch.optim.Adam's update
    (bias-corrected, eps outside the square root, no weight decay)."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v, self.t = torch.zeros_like(param), torch.zeros_like(param), 0
        self._steps = torch.zeros((), dtype=torch.float32, device=param.device)
        # the one-kernel update behind torch.optim.Adam(fused=True), where this torch build has it
        self._fused = getattr(torch, "_fused_adam_", None)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        if self._fused is not None:
            try:
                self._steps += 1
                self._fused([self.param], [grad], [self.m], [self.v], [], [self._steps], lr=self.lr, beta1=b1,
                            beta2=b2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
                return
            except (RuntimeError, TypeError):  # an unsupported device or signature: the plain update
                self._fused = None
                self._steps -= 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = self.v.sqrt().div_(math.sqrt(1 - b2**self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))


def elastic_net_loss(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, l1: float, l2: float
) -> torch.Tensor:
    """Dalvi et al. 2019: mean cross-entropy + l1 * sum|W| + l2 * ||W||_2 (Frobenius, not squared).

    The bias is not penalised, so it is not an argument.
    """
    return F.cross_entropy(logits, targets) + l1 * weight.abs().sum() + l2 * torch.linalg.vector_norm(weight)


class BaseProbe:
    """scikit-learn-like parameter handling shared by all probes."""

    def get_params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def clone(self, **overrides) -> BaseProbe:
        """A fresh, unfitted probe with the same hyperparameters (optionally some changed)."""
        return type(self)(**{**self.get_params(), **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call .fit(X, y) first")


def _check_xy(src: ArraySource, y, what: str = "y") -> np.ndarray:
    if y is None:
        raise ValueError(f"{what} is required (one label per row of X)")
    y = as_labels(y)
    if y.ndim == 0:
        raise ValueError(f"{what} must be a sequence of labels, got a scalar")
    if len(y) != src.shape[0]:
        raise ValueError(f"X has {src.shape[0]} rows but {what} has {len(y)} labels; they must match")
    if src.shape[0] == 0:
        raise ValueError("cannot fit a probe on 0 rows")
    return y


class _TorchClassifier(BaseProbe):
    """Mini-batch Adam training over the blocks of a source (see ``sources.py`` for the shuffling)."""

    epochs: int
    lr: float
    batch_size: int
    device: str
    seed: int
    block_rows: int | None
    progress: bool

    def _validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    # -- subclass hooks --------------------------------------------------------------
    def _work_per_step(self, d: int) -> int:
        """Rough work of one step (the linear layer's, with a few classes), to choose the thread count."""
        return self.batch_size * d * 16

    def _build(self, d: int, k: int) -> nn.Module:
        raise NotImplementedError

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, xb: torch.Tensor) -> torch.Tensor:
        return self.model_(xb)

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y) -> _TorchClassifier:
        """Train on ``X`` (array, store or StoreSource) and labels ``y`` (any hashable labels)."""
        self._validate()
        src = as_source(X, self.block_rows)
        device = _resolve_device(self.device)
        with _small_work_threads(device, self._work_per_step(src.shape[1])):
            return self._fit(src, y)

    def _fit(self, src: ArraySource, y) -> _TorchClassifier:
        y = _check_xy(src, y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"need at least 2 classes to train a probe, got {len(classes)} ({classes.tolist()!r})"
            )
        self._check_classes(len(classes))
        self.classes_ = classes
        self.n_features_in_ = src.shape[1]
        self.device_ = _resolve_device(self.device)
        torch.manual_seed(self.seed)
        self.model_ = self._build(src.shape[1], len(classes)).to(self.device_)
        self._init_optimizer()
        rng = np.random.default_rng(self.seed)
        y_all = torch.as_tensor(y_idx, dtype=torch.long, device=self.device_)
        in_memory = not isinstance(src, StoreSource)
        cache: dict[int, torch.Tensor] = {}
        bs = self.batch_size
        self.loss_history_ = []
        bar = tqdm(range(self.epochs), desc=type(self).__name__, disable=None if self.progress else True)
        for _ in bar:
            self.model_.train()
            total, count = torch.zeros((), device=self.device_), 0  # summed on device: no per-step sync
            for start, stop, perm, Xb in self._epoch_blocks(src, rng, cache if in_memory else None):
                yb_all = y_all[start:stop]
                perm_t = torch.as_tensor(perm, device=self.device_)
                for i in range(0, len(perm), bs):
                    idx = perm_t[i : i + bs]
                    # index_select is several times faster than advanced indexing for row gathers; a
                    # batch gathered alone stays in cache for the forward and the backward matmul
                    total.add_(self._step(Xb.index_select(0, idx), yb_all.index_select(0, idx)), alpha=len(idx))
                    count += len(idx)
            self.loss_history_.append(float(total) / max(count, 1))
            bar.set_postfix(loss=f"{self.loss_history_[-1]:.4f}")
        self.model_.eval()
        self.fitted_ = True
        return self

    def _check_classes(self, k: int) -> None:
        pass

    def _init_optimizer(self) -> None:
        self.optimizer_ = _adam(self.model_.parameters(), lr=self.lr)

    def _to_tensor(self, Xb: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(Xb, dtype=np.float32), device=self.device_)

    def _train_dtype(self) -> torch.dtype:
        return torch.float32

    def _train_tensor(self, Xb: np.ndarray) -> torch.Tensor:
        """A block of the training matrix, in the training precision."""
        return self._to_tensor(Xb).to(self._train_dtype())

    def _epoch_blocks(self, src: ArraySource, rng: np.random.Generator, cache: dict | None):
        """Yield ``(start, stop, within-block permutation, block tensor)`` in shuffled block order.

        Blocks of a store are re-read every epoch (one block in memory, the next prefetched in a
        thread); an in-memory matrix is converted once and cached.
        """
        bounds = src._bounds()
        order = rng.permutation(len(bounds))
        perms = [rng.permutation(bounds[b][1] - bounds[b][0]) for b in order]
        if cache is not None:  # keyed by the block's first row
            for b, perm in zip(order, perms):
                start = bounds[b][0]
                if start not in cache:
                    cache[start] = self._train_tensor(src._read(*bounds[b]))
                yield start, bounds[b][1], perm, cache[start]
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(src._read, *bounds[order[0]]) if len(order) else None
            for j, (b, perm) in enumerate(zip(order, perms)):
                Xb = fut.result()
                if j + 1 < len(order):
                    fut = pool.submit(src._read, *bounds[order[j + 1]])
                yield bounds[b][0], bounds[b][1], perm, self._train_tensor(Xb)

    # -- inference -----------------------------------------------------------------------
    @torch.no_grad()
    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        src = as_source(X, self.block_rows)
        if src.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {src.shape[1]} columns, the probe was trained on {self.n_features_in_}")
        outs = [self._logits(self._to_tensor(Xb)).float().cpu().numpy() for _, Xb in src.iter_blocks()]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes_)), np.float32)

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

    def score(self, X, y) -> float:
        """Accuracy."""
        src = as_source(X, self.block_rows)
        y = _check_xy(src, y)
        return float(np.mean(self.predict(src) == y))

    def evaluate(self, X, y) -> dict:
        """Accuracy, macro-F1 and per-class precision / recall / F1 (see ``classification_metrics``)."""
        src = as_source(X, self.block_rows)
        y = _check_xy(src, y)
        return classification_metrics(y, self.predict(src), labels=self.classes_)


class LinearProbe(_TorchClassifier):
    """Softmax regression with elastic-net regularisation (Dalvi et al. 2019, "What is one grain of
    sand in the desert?", AAAI; NeuroX ``train_logistic_regression_probe``).

    loss = mean cross-entropy + ``l1`` * sum|W| + ``l2`` * ||W||_2 (Frobenius norm, not squared; the
    bias is not penalised), minimised with Adam on mini-batches. Two classes work as well (a two-way
    softmax). ``coef_`` is ``[n_classes, n_features]``; ``classes_`` keeps the label names.
    ``block_rows`` sets the block size used when streaming (``None``: the whole array is one block).
    ``precision="bfloat16"``: mixed-precision training, the training matrix held in bfloat16 (half the
    memory) and the matmuls in bfloat16 with float32 accumulation, float32 weights, softmax and Adam;
    about 1.5x faster where the CPU (AVX512-BF16, AMX) or GPU has bfloat16 units.
    """

    def __init__(
        self,
        l1: float = 1e-5,
        l2: float = 1e-5,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 128,
        device: str = "auto",
        seed: int = 0,
        block_rows: int | None = None,
        progress: bool = True,
        precision: str = "float32",
    ):
        self.l1, self.l2 = l1, l2
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.device, self.seed, self.block_rows, self.progress = device, seed, block_rows, progress
        self.precision = precision

    def _validate(self) -> None:
        super()._validate()
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"l1 and l2 must be >= 0, got l1={self.l1}, l2={self.l2}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")

    def _train_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bfloat16" else torch.float32

    def _build(self, d: int, k: int) -> nn.Module:
        return nn.Linear(d, k)

    def _init_optimizer(self) -> None:
        # W and b live in one flat buffer (nn.Linear's parameters become views of it), so that a step of
        # Adam is five in-place ops on one tensor: torch.optim.Adam's Python overhead per step was as
        # large as the step's arithmetic for probes of this size
        lin = self.model_
        k, d = lin.weight.shape
        flat = torch.cat([lin.weight.detach().reshape(-1), lin.bias.detach()])
        lin.weight = nn.Parameter(flat[: k * d].view(k, d))
        lin.bias = nn.Parameter(flat[k * d :])
        self._flat, self._grad = flat, torch.zeros_like(flat)
        self._gW, self._gb = self._grad[: k * d].view(k, d), self._grad[k * d :]
        self._adam = _FlatAdam(flat, lr=self.lr)
        self._rows = torch.arange(self.batch_size, device=flat.device)
        self._minus_one = torch.tensor(-1.0, device=flat.device)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # Hand-written gradient of elastic_net_loss: avoids autograd bookkeeping, which dominates the
        # cost of these tiny matmuls (tests check it equals autograd + torch.optim.Adam).
        W, b, flatW = self.model_.weight.detach(), self.model_.bias.detach(), self._flat[: self._gW.numel()]
        n = xb.shape[0]
        # everything in [classes, rows] layout: [k, d] @ [d, n] is ~2x faster than [n, d] @ [d, k] in
        # MKL with few classes, and a softmax over dim 0 of [k, n] ~10x faster than over dim 1 of [n, k]
        mixed = xb.dtype != torch.float32
        if mixed:
            logits = torch.addmm(b[:, None].to(xb.dtype), W.to(xb.dtype), xb.t()).float()
        else:
            logits = torch.addmm(b[:, None], W, xb.t())
        logp = torch.log_softmax(logits, 0)
        ce = -logp.gather(0, yb[None, :]).mean()
        g = logp.exp_()  # softmax; minus the one-hot targets gives d(sum of CE)/d(logits)
        g.index_put_((yb, self._rows[:n]), self._minus_one, accumulate=True)
        loss = ce
        if self.l1 or self.l2:
            pen = torch.sign(W).mul_(self.l1) if self.l1 else torch.zeros_like(W)
            if self.l1:
                loss = loss + torch.dot(pen.view(-1), flatW)  # = l1 * sum|W|
            if self.l2:  # d||W||/dW = W/||W||; W = 0 gives 0 either way, and no host sync is needed
                norm = torch.dot(flatW, flatW).sqrt_()
                pen.addcdiv_(W, norm.clamp_min(1e-30), value=self.l2)
                loss = loss + self.l2 * norm
            if mixed:
                self._gW.copy_(pen).add_(torch.mm(g.to(xb.dtype), xb), alpha=1.0 / n)
            else:
                torch.addmm(pen, g, xb, alpha=1.0 / n, out=self._gW)
        elif mixed:
            self._gW.copy_(torch.mm(g.to(xb.dtype), xb)).div_(n)
        else:
            torch.mm(g, xb, out=self._gW).div_(n)
        torch.sum(g, 1, out=self._gb).div_(n)
        self._adam.step(self._grad)
        return loss

    def loss(self, X, y) -> float:
        """The full training objective on ``(X, y)`` with the current parameters."""
        self._check_fitted()
        src = as_source(X)
        y = _check_xy(src, y)
        idx = np.searchsorted(self.classes_, y)
        with torch.no_grad():
            logits = torch.as_tensor(self.decision_function(src))
            return float(
                elastic_net_loss(
                    logits, torch.as_tensor(idx), self.model_.weight.detach().cpu().float(), self.l1, self.l2
                )
            )

    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        return self.model_.weight.detach().cpu().numpy().copy()

    @property
    def intercept_(self) -> np.ndarray:
        self._check_fitted()
        return self.model_.bias.detach().cpu().numpy().copy()

    def set_weights(self, coef, intercept, classes) -> LinearProbe:
        """Install given parameters (e.g. hand-set weights for a test, or a saved probe)."""
        coef = np.asarray(coef, dtype=np.float32)
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = coef.shape[1]
        self.device_ = _resolve_device(self.device)
        self.model_ = self._build(coef.shape[1], coef.shape[0]).to(self.device_)
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
            raise ValueError(f"LogisticProbe is binary; got {k} classes (use LinearProbe for more)")

    def _build(self, d: int, k: int) -> nn.Module:
        return nn.Linear(d, 1 if k == 2 else k)

    _init_optimizer = _TorchClassifier._init_optimizer  # autograd + torch.optim.Adam (one logit)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        W = self.model_.weight
        self.optimizer_.zero_grad(set_to_none=True)
        with torch.autocast(xb.device.type, dtype=xb.dtype, enabled=xb.dtype != torch.float32):
            z = self.model_(xb)[:, 0]
        loss = F.binary_cross_entropy_with_logits(z.float(), yb.float())
        loss = loss + self.l1 * W.abs().sum() + self.l2 * torch.linalg.vector_norm(W)
        loss.backward()
        self.optimizer_.step()
        return loss.detach()

    def loss(self, X, y) -> float:
        self._check_fitted()
        src = as_source(X)
        y = _check_xy(src, y)
        z = torch.as_tensor(self.decision_function(src))[:, 0]
        t = torch.as_tensor((y == self.classes_[1]).astype(np.float32))
        W = self.model_.weight.detach().cpu()
        return float(
            F.binary_cross_entropy_with_logits(z, t) + self.l1 * W.abs().sum() + self.l2 * torch.linalg.vector_norm(W)
        )


class MLPProbe(_TorchClassifier):
    """A small multi-layer perceptron probe (ReLU), e.g. MLP-1 / MLP-2 of Hewitt & Liang 2019, used to
    compare selectivity with the linear probe. ``hidden`` is the tuple of hidden sizes."""

    def __init__(
        self,
        hidden: int | tuple[int, ...] = (256,),
        dropout: float = 0.0,
        weight_decay: float = 0.0,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 128,
        device: str = "auto",
        seed: int = 0,
        block_rows: int | None = None,
        progress: bool = True,
    ):
        self.hidden, self.dropout, self.weight_decay = hidden, dropout, weight_decay
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.device, self.seed, self.block_rows, self.progress = device, seed, block_rows, progress

    def _validate(self) -> None:
        super()._validate()
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {self.hidden!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _build(self, d: int, k: int) -> nn.Module:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        layers: list[nn.Module] = []
        prev = d
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            prev = h
        layers.append(nn.Linear(prev, k))
        return nn.Sequential(*layers)

    def _work_per_step(self, d: int) -> int:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        sizes = (d, *hidden)
        return self.batch_size * sum(a * b for a, b in zip(sizes, sizes[1:])) * 3

    def _init_optimizer(self) -> None:
        self.optimizer_ = _adam(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self.optimizer_.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model_(xb), yb)
        loss.backward()
        self.optimizer_.step()
        return loss.detach()


class RidgeProbe(BaseProbe):
    """Ridge regression for real-valued properties: argmin ||y - XW^T - b||^2 + alpha ||W||_F^2
    (intercept unpenalised), solved exactly from X^T X accumulated over row blocks (streams a store).
    ``score`` is R^2 (averaged over targets)."""

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True, block_rows: int | None = 8192):
        self.alpha, self.fit_intercept, self.block_rows = alpha, fit_intercept, block_rows

    def fit(self, X, y) -> RidgeProbe:
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        src = as_source(X, self.block_rows)
        y = _check_xy(src, y)
        try:
            Y = np.asarray(y, dtype=np.float64)
        except ValueError as e:
            raise ValueError("RidgeProbe needs real-valued targets (use LinearProbe for labels)") from e
        self._1d = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        d = src.shape[1]
        n = 0
        sx, sy = np.zeros(d), np.zeros(Y.shape[1])
        xtx, xty = np.zeros((d, d)), np.zeros((d, Y.shape[1]))
        for pos, Xb in src.iter_blocks():
            Xb = Xb.astype(np.float64)
            Yb = Y[pos]
            n += len(pos)
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
        self.n_features_in_ = d
        self.fitted_ = True
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        src = as_source(X, self.block_rows)
        out = np.concatenate([Xb @ self.coef_.T + self.intercept_ for _, Xb in src.iter_blocks()])
        return out[:, 0] if self._1d else out

    def score(self, X, y) -> float:
        """Coefficient of determination R^2."""
        src = as_source(X, self.block_rows)
        Y = np.asarray(_check_xy(src, y), dtype=np.float64).reshape(src.shape[0], -1)
        P = np.asarray(self.predict(src), dtype=np.float64).reshape(Y.shape)
        ss_res = ((Y - P) ** 2).sum(0)
        ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
        r2 = 1 - ss_res / np.where(ss_tot > 0, ss_tot, math.inf)
        return float(np.mean(r2))
