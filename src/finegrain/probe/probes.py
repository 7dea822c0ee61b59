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
        from finegrain.models.kernels import onednn_usable  # the op's presence and FINEGRAIN_ONEDNN

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

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        """One optimisation step on a batch; adds the batch's summed loss to ``total`` (on device). ``xb``
        is a reused buffer: it must not be kept after the step."""
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
        xbuf = None  # batches are gathered into one buffer: a fresh 1 MB tensor per step costs page faults
        for _ in bar:
            self.model_.train()
            total, count = torch.zeros(1, device=self.device_), 0  # summed on device: no per-step sync
            for start, stop, perm, Xb in self._epoch_blocks(src, rng, cache if in_memory else None):
                perm_t = torch.as_tensor(perm, device=self.device_)
                if xbuf is None or xbuf.dtype != Xb.dtype:
                    xbuf = Xb.new_empty((bs, Xb.shape[1]))
                # the batches' indices and labels as views of one permuted copy: two ops per block, not per step
                for idx, yb in zip(perm_t.split(bs), y_all[start:stop].index_select(0, perm_t).split(bs)):
                    # index_select is several times faster than advanced indexing for row gathers; a
                    # batch gathered alone stays in cache for the forward and the backward matmul
                    self._step(torch.index_select(Xb, 0, idx, out=xbuf[: len(idx)]), yb, total)
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
        lin = self.model_
        # plain tensors sharing the parameters' storage: no detach() or module lookups per step
        self._W, self._b = lin.weight.detach(), lin.bias.detach()
        self._Wflat, self._bcol = self._W.view(-1), self._b.view(-1, 1)
        self._pen, self._gb = torch.zeros_like(self._W), torch.zeros_like(self._b)
        self._penflat = self._pen.view(-1)
        self._adam = _FusedAdam([self._W, self._b], lr=self.lr)
        dev = self._W.device
        self._l1 = torch.tensor(float(self.l1), device=dev)
        self._minus_one = torch.full((1, self.batch_size), -1.0, device=dev)
        self._ones = torch.ones(self.batch_size, device=dev)
        self._mm_nt = _MatmulNT(dev)

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
        if self.l2:  # W = 0 gives 0 here, and no host sync is needed
            pen.addcdiv_(W, torch.dot(self._Wflat, self._Wflat).sqrt_().clamp_min_(1e-30), value=self.l2)
        if self.l1 or self.l2:
            # <penalty gradient, W> = l1 * sum|W| + l2 * ||W||: the penalty's value in one op
            total.add_(torch.dot(self._penflat, self._Wflat), alpha=n)
        if mixed:
            gW = pen.add_(torch.mm(g.to(xb.dtype), xb))
        else:
            gW = self._mm_nt(g, xb.t(), add=pen)  # g @ xb + pen
        torch.mv(g, self._ones[:n], out=self._gb)
        self._adam.step([gW, self._gb])

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

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        W = self.model_.weight
        self.optimizer_.zero_grad(set_to_none=True)
        with torch.autocast(xb.device.type, dtype=xb.dtype, enabled=xb.dtype != torch.float32):
            z = self.model_(xb)[:, 0]
        loss = F.binary_cross_entropy_with_logits(z.float(), yb.float())
        loss = loss + self.l1 * W.abs().sum() + self.l2 * torch.linalg.vector_norm(W)
        loss.backward()
        self.optimizer_.step()
        total.add_(loss.detach(), alpha=len(yb))

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

    def _hidden_sizes(self) -> tuple[int, ...]:
        return (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)

    def _validate(self) -> None:
        super()._validate()
        hidden = self._hidden_sizes()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {self.hidden!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _build(self, d: int, k: int) -> nn.Module:
        hidden = self._hidden_sizes()
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
        sizes = (d, *self._hidden_sizes())
        return self.batch_size * sum(a * b for a, b in zip(sizes, sizes[1:])) * 3

    def _init_optimizer(self) -> None:
        self.optimizer_ = _adam(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, total: torch.Tensor) -> None:
        self.optimizer_.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model_(xb), yb)
        loss.backward()
        self.optimizer_.step()
        total.add_(loss.detach(), alpha=len(yb))


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
