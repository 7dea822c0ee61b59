"""Edits of neuron activations during a forward pass, for any adapter (transformer or LSTM).

An edit names *what* (neurons by the shared address ``layer.3:117``, a whole layer ``"layer.3"``, or
an attention head ``Head("layer.2.attn", 1)``), *how* (zero, mean, set, scale, steer, resample) and
*where* (all positions, chosen token positions, per-row positions or a boolean mask).
:func:`intervene` attaches them through :meth:`ModelAdapter.hooks`, so they are removed on exit even
when the block raises, and they never modify a tensor in place: the unedited model is bit-identical
afterwards.

Transformers see one ``[batch, tokens, units]`` tensor per layer; LSTMs are edited at every time
step (``act`` is ``[batch, units]``) so the edit propagates through the recurrence, as an
intervention must (Lakretz et al. 2019 ablate LSTM units at every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from finegrain.errors import LayerError, ParameterError
from finegrain.models.base import Batch, ModelAdapter
from finegrain.neurons import Neuron
from finegrain.store import ActivationStore

Positions = Any  # None | int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor (bool mask)


@dataclass(frozen=True)
class Head:
    """Attention head ``head`` of an attention component ``layer.i.attn`` (all of its units)."""

    layer: str
    head: int


# ---------------------------------------------------------------------------------------------
# neuron specs
def _flatten_spec(spec) -> list:
    if spec is None:
        raise ParameterError("an edit needs neurons (a Neuron, 'layer.i:u', a layer name, a Head or a list)")
    if hasattr(spec, "neurons") and not isinstance(spec, str | Neuron | Head):
        spec = spec.neurons
    if isinstance(spec, str | Neuron | Head):
        return [spec]
    return list(spec)


def resolve_neurons(adapter: ModelAdapter, spec) -> dict[str, list[int]]:
    """Turn a neuron spec into ``{layer: [units]}`` (insertion order kept, units checked).

    Accepts a :class:`Neuron`, ``"layer.3:5"``, a whole layer ``"layer.3"``, a :class:`Head`, a
    list of these, or anything with a ``.neurons`` attribute (e.g. ``finegrain.rank.Ranking``).
    """
    out: dict[str, list[int]] = {}
    for item in _flatten_spec(spec):
        if isinstance(item, Head):
            n_heads, head_dim = adapter.heads(item.layer)
            if not 0 <= item.head < n_heads:
                raise LayerError(f"{item.layer} has {n_heads} heads; head {item.head} does not exist")
            out.setdefault(item.layer, []).extend(range(item.head * head_dim, (item.head + 1) * head_dim))
            continue
        if isinstance(item, str) and ":" not in item:
            size = adapter.check_layer(item.strip())
            out.setdefault(item.strip(), []).extend(range(size))
            continue
        n = Neuron.parse(item)
        size = adapter.check_layer(n.layer)
        if n.unit >= size:
            raise LayerError(f"{n} out of range: {n.layer} has {size} units")
        out.setdefault(n.layer, []).append(n.unit)
    return out


def neuron_list(adapter: ModelAdapter, spec) -> list[Neuron]:
    """The flat, ordered list of neurons a spec names."""
    return [Neuron(lay, u) for lay, units in resolve_neurons(adapter, spec).items() for u in units]


def head_neurons(adapter: ModelAdapter, layer: str, head: int) -> list[Neuron]:
    """The units of one attention head of ``layer`` (``layer.i.attn``)."""
    return neuron_list(adapter, Head(layer, head))


# ---------------------------------------------------------------------------------------------
# positions
def word_positions(batch: Batch, words: int | Sequence[int] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Token positions (per row) of the given word indices, through ``batch.word_ids``.

    ``words`` is one word index, a list applied to every row, or one list per row. Negative word
    indices count from each sentence's end.
    """
    out = []
    for b, wids in enumerate(batch.word_ids):
        if isinstance(words, int):
            want = [words]
        elif len(words) and not isinstance(words[0], int | np.integer):
            want = list(words[b])
        else:
            want = list(words)
        n = batch.n_words[b]
        want_set = {w + n if w < 0 else w for w in want}
        out.append([t for t, w in enumerate(wids) if w is not None and w in want_set])
    return out


def last_positions(batch: Batch) -> list[list[int]]:
    """The last non-padding token of each row."""
    mask = batch.attention_mask
    out = []
    for b in range(mask.shape[0]):
        nz = torch.nonzero(mask[b]).flatten()
        out.append([int(nz[-1])] if len(nz) else [])
    return out


def _position_mask(positions: Positions, act: torch.Tensor, step: int | None) -> torch.Tensor | None:
    """Boolean mask broadcastable to ``act`` ([B,T,1] for transformers, [B,1] for LSTM steps)."""
    if positions is None:
        return None
    B = act.shape[0]
    if step is None:
        T = act.shape[1]
        if torch.is_tensor(positions) and positions.dtype == torch.bool:
            m = positions.to(act.device)
            m = m[None].expand(B, -1) if m.dim() == 1 else m
            if m.shape != (B, T):
                raise ParameterError(f"position mask has shape {tuple(m.shape)}, activations are [{B}, {T}]")
            return m[..., None]
        m = torch.zeros(B, T, dtype=torch.bool, device=act.device)
        for b, pos in enumerate(_per_row(positions, B)):
            for p in pos:
                if not -T <= p < T:
                    raise ParameterError(f"position {p} out of range for a sequence of {T} tokens")
                m[b, p] = True
        return m[..., None]
    # LSTM: one time step
    if torch.is_tensor(positions) and positions.dtype == torch.bool:
        m = positions.to(act.device)
        m = m[None].expand(B, -1) if m.dim() == 1 else m
        if step >= m.shape[1]:
            return torch.zeros(B, 1, dtype=torch.bool, device=act.device)
        return m[:, step, None]
    rows = _per_row(positions, B)
    if any(p < 0 for pos in rows for p in pos):
        raise ParameterError("negative positions are not supported for LSTMs (the length is unknown per step)")
    return torch.tensor([[step in pos] for pos in rows], dtype=torch.bool, device=act.device)


def _per_row(positions, B: int) -> list[list[int]]:
    if isinstance(positions, int | np.integer):
        return [[int(positions)]] * B
    positions = list(positions)
    if positions and not isinstance(positions[0], int | np.integer):
        if len(positions) != B:
            raise ParameterError(f"per-row positions given for {len(positions)} rows, batch has {B}")
        return [[int(p) for p in pos] for pos in positions]
    return [[int(p) for p in positions]] * B


# ---------------------------------------------------------------------------------------------
# edit specs
@dataclass
class Edit:
    """Base class of edit specs. Subclasses say how to compute the new values."""

    def compile(self, adapter: ModelAdapter) -> list[tuple[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _values_at(values: torch.Tensor, act: torch.Tensor, step: int | None) -> torch.Tensor:
    """Broadcast stored values (scalar, [k], or [B|1, T, k]) to the edited slice."""
    if values.dim() <= 1:
        return values
    if step is None:
        T = act.shape[1]
        if values.shape[1] < T:
            raise ParameterError(f"values cover {values.shape[1]} positions, the input has {T}")
        return values[:, :T]
    if step >= values.shape[1]:
        raise ParameterError(f"values cover {values.shape[1]} steps, the input has more")
    return values[:, step]


class _UnitEdit(Edit):
    """Shared machinery: edit units ``[k]`` of one layer with ``new = f(old_slice, step)``."""

    neurons: Any
    positions: Positions

    def _new(self, sub: torch.Tensor, act: torch.Tensor, step: int | None, layer: str, sl: slice) -> torch.Tensor:
        raise NotImplementedError

    def _prepare(self, adapter: ModelAdapter, spec: dict[str, list[int]]) -> None:
        """Resolve data sources (before any hook is attached)."""

    def compile(self, adapter: ModelAdapter) -> list[tuple[str, Any]]:
        spec = resolve_neurons(adapter, self.neurons)
        self._prepare(adapter, spec)
        out = []
        offset = 0
        for layer, units in spec.items():
            sl = slice(offset, offset + len(units))
            offset += len(units)
            out.append((layer, self._hook(layer, units, sl, adapter.layers()[layer])))
        return out

    def _hook(self, layer: str, units: list[int], sl: slice, size: int):
        whole = units == list(range(size))
        idx_cache: dict[torch.device, torch.Tensor] = {}

        def fn(act: torch.Tensor, step: int | None) -> torch.Tensor:
            if whole:
                sub = act
            else:
                idx = idx_cache.get(act.device)
                if idx is None:
                    idx = idx_cache[act.device] = torch.tensor(units, device=act.device)
                sub = act.index_select(-1, idx)
            mask = _position_mask(self.positions, act, step)
            if mask is not None and not bool(mask.any()):
                return None  # e.g. an LSTM step outside the edited positions
            new = self._new(sub, act, step, layer, sl).to(act.dtype)
            new = torch.broadcast_to(new, sub.shape)
            if mask is not None:
                new = torch.where(mask, new, sub)
            if whole:
                # never hand back the input itself or a broadcast view of a scalar
                return new.clone() if new.data_ptr() == act.data_ptr() else new.contiguous()
            out = act.clone()
            out[..., idx] = new
            return out

        return fn


@dataclass
class Zero(_UnitEdit):
    """Set units to 0 (zero ablation; Dalvi et al. 2019)."""

    neurons: Any
    positions: Positions = None

    def _new(self, sub, act, step, layer, sl):
        return torch.zeros((), dtype=sub.dtype, device=sub.device)


@dataclass
class Set(_UnitEdit):
    """Set units to ``value``: a scalar, one value per unit ``[k]`` (in the order the spec names
    them), or full values ``[B|1, T, k]`` (for LSTMs indexed by step)."""

    neurons: Any
    value: Any = 0.0
    positions: Positions = None

    def _new(self, sub, act, step, layer, sl):
        v = _as_tensor(self.value, sub)
        if v.dim() >= 1 and v.shape[-1] != 1:
            v = v[..., sl]  # values follow the order of the spec across layers
        return _values_at(v, act, step)


@dataclass
class Scale(_UnitEdit):
    """Multiply units by ``factor``."""

    neurons: Any
    factor: float = 0.0
    positions: Positions = None

    def _new(self, sub, act, step, layer, sl):
        return sub * self.factor


@dataclass
class Mean(_UnitEdit):
    """Set units to their mean (mean ablation). ``values`` is a vector ``[k]`` of means, an
    :class:`~finegrain.store.ActivationStore` (mean over its rows, or over ``rows``), a list of
    reference texts / word lists (mean over all non-padding tokens of a forward pass), or a
    :class:`Batch`."""

    neurons: Any
    values: Any = None
    positions: Positions = None
    rows: Any = None
    _resolved: torch.Tensor | None = field(default=None, init=False, repr=False)

    def _prepare(self, adapter, spec):
        ns = [Neuron(lay, u) for lay, units in spec.items() for u in units]
        self._resolved = torch.as_tensor(mean_values(adapter, ns, self.values, rows=self.rows), dtype=torch.float32)
        if self._resolved.shape != (len(ns),):
            raise ParameterError(f"Mean: {len(ns)} neurons but {tuple(self._resolved.shape)} values")

    def _new(self, sub, act, step, layer, sl):
        return self._resolved[sl].to(sub.device, sub.dtype)


@dataclass
class Steer(_UnitEdit):
    """Add ``alpha * vector`` to a layer (activation steering). ``vector`` has the layer's size
    (or the number of ``units`` when given)."""

    layer: str = ""
    vector: Any = None
    alpha: float = 1.0
    positions: Positions = None
    units: Sequence[int] | None = None

    @property
    def neurons(self):  # type: ignore[override]
        if self.units is None:
            return self.layer
        return [Neuron(self.layer, int(u)) for u in self.units]

    def _prepare(self, adapter, spec):
        k = sum(len(u) for u in spec.values())
        if self.vector is None or int(np.prod(np.shape(self.vector))) != k:
            raise ParameterError(f"Steer: vector must have {k} entries for {self.layer}")

    def _new(self, sub, act, step, layer, sl):
        return sub + self.alpha * _as_tensor(self.vector, sub).flatten()


@dataclass
class Resample(_UnitEdit):
    """Replace units by their values under another input (activation patching / resampling).

    ``source`` is a :class:`Batch`, a list of texts or word lists (encoded with the adapter), or a
    cache ``{layer: [B, T, units]}`` as returned by :meth:`ModelAdapter.run_with_cache`. Positions
    are aligned by index (token ``t`` / LSTM step ``t`` takes the source's ``t``); positions the
    source does not have (it is shorter, or padded there) are left unchanged. A one-row source
    is used for every row.
    """

    neurons: Any
    source: Any = None
    positions: Positions = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)
    _valid: torch.Tensor | None = field(default=None, init=False, repr=False)

    def _prepare(self, adapter, spec):
        src = self.source
        if src is None:
            raise ParameterError("Resample needs a source (Batch, texts or activation cache)")
        if isinstance(src, dict):
            missing = [lay for lay in spec if lay not in src]
            if missing:
                raise ParameterError(f"Resample source cache lacks layers {missing}")
            self._cache = {lay: src[lay].detach() for lay in spec}
            self._valid = None
            return
        batch = src if isinstance(src, Batch) else adapter.encode(list(src))
        with torch.no_grad():
            _, cache = adapter.run_with_cache(batch, list(spec))
        self._cache = cache
        self._valid = batch.attention_mask.bool()

    def _new(self, sub, act, step, layer, sl):
        src = self._cache[layer]
        spec_units = self._units[layer]
        vals = src.index_select(-1, torch.tensor(spec_units, device=src.device)).to(sub.device, sub.dtype)
        B = sub.shape[0]
        if vals.shape[0] not in (1, B):
            raise ParameterError(f"Resample source has {vals.shape[0]} rows, the batch has {B}")
        if step is None:
            T = sub.shape[1]
            Ts = vals.shape[1]
            full = sub.clone()
            n = min(T, Ts)
            valid = torch.ones(vals.shape[0], n, dtype=torch.bool, device=sub.device)
            if self._valid is not None and self._valid.dim() == 2 and self._valid.shape[1] == Ts:
                valid = self._valid[:, :n].to(sub.device)
            full[:, :n] = torch.where(valid[..., None], vals[:, :n], sub[:, :n])
            return full
        if step >= vals.shape[1]:
            return sub
        v = vals[:, step]
        if self._valid is not None and self._valid.dim() == 2 and step < self._valid.shape[1]:
            v = torch.where(self._valid[:, step, None].to(sub.device), v, sub)
        return v

    def compile(self, adapter):
        spec = resolve_neurons(adapter, self.neurons)
        self._units = spec
        return super().compile(adapter)


@dataclass
class PerRow(Edit):
    """Row-specific edit used by batched sweeps: row ``rows[r]`` gets its units ``units[r]``
    (``[R, m]``) set to ``values`` (``None`` = 0; scalar, ``[R, m]`` or ``[R, T, m]``) at
    ``positions`` (anything :func:`intervene` accepts, e.g. a ``[B, T]`` mask).

    Expanding a batch into copies where copy ``r`` edits a different unit lets one forward pass
    evaluate many single-unit interventions (Vig et al. 2020 batch them the same way).
    """

    layer: str
    units: Any
    values: Any = None
    rows: Any = None
    positions: Positions = None

    def compile(self, adapter):
        size = adapter.check_layer(self.layer)
        units = torch.as_tensor(self.units, dtype=torch.long)
        if units.dim() == 1:
            units = units[:, None]
        if units.numel() and (int(units.max()) >= size or int(units.min()) < 0):
            raise LayerError(f"PerRow: unit index out of range for {self.layer} ({size} units)")
        rows = torch.arange(units.shape[0]) if self.rows is None else torch.as_tensor(self.rows, dtype=torch.long)
        if rows.shape[0] != units.shape[0]:
            raise ParameterError(f"PerRow: {rows.shape[0]} rows but {units.shape[0]} unit sets")
        values = None if self.values is None else torch.as_tensor(self.values)
        positions = self.positions

        def fn(act: torch.Tensor, step: int | None) -> torch.Tensor:
            r = rows.to(act.device)
            u = units.to(act.device)
            tmp = act.index_select(0, r)
            if step is None:
                idx = u[:, None, :].expand(-1, act.shape[1], -1)
            else:
                idx = u
            cur = tmp.gather(-1, idx)
            if values is None:
                new = torch.zeros_like(cur)
            else:
                v = values.to(act.device, act.dtype)
                if v.dim() == 2 and step is None:
                    v = v[:, None, :]
                elif v.dim() == 3:
                    v = v[:, : act.shape[1]] if step is None else v[:, step]
                new = torch.broadcast_to(v, cur.shape)
            mask = _position_mask(positions, act, step)
            if mask is not None:
                mask = mask.index_select(0, r) if mask.shape[0] == act.shape[0] else mask
                new = torch.where(mask, new, cur)
            out = act.clone()
            out[r] = tmp.scatter(-1, idx, new)
            return out

        return [(self.layer, fn)]


@dataclass
class Hook(Edit):
    """Escape hatch: any ``fn(act, step) -> Tensor | None`` at ``layer`` (must not edit in place)."""

    layer: str
    fn: Any

    def compile(self, adapter):
        adapter.check_layer(self.layer)
        return [(self.layer, self.fn)]


# ---------------------------------------------------------------------------------------------
def mean_values(adapter: ModelAdapter | None, neurons: Sequence[Neuron], source, rows=None,
                batch_size: int = 32) -> np.ndarray:
    """Mean activation of each neuron over a reference: an ActivationStore (its rows, or
    ``rows``), a list of texts/word lists or a Batch (mean over non-padding tokens), or a
    ready vector."""
    neurons = [Neuron.parse(n) for n in neurons]
    if isinstance(source, ActivationStore):
        X = source.matrix(neurons=neurons, rows=rows)
        if len(X) == 0:
            raise ParameterError("Mean: no reference rows")
        return X.mean(0)
    if source is None:
        raise ParameterError("Mean needs values: a vector, an ActivationStore, reference texts or a Batch")
    if isinstance(source, Batch) or (
        isinstance(source, list | tuple) and source and isinstance(source[0], str | list | tuple)
        and not isinstance(source[0], int | float)
    ):
        if adapter is None:
            raise ParameterError("mean values from texts need an adapter")
        return _mean_from_texts(adapter, neurons, source, batch_size)
    v = np.asarray(source.detach().cpu() if torch.is_tensor(source) else source, dtype=np.float32)
    return v.reshape(-1) if v.size == len(neurons) else v


def _mean_from_texts(adapter, neurons, source, batch_size) -> np.ndarray:
    layers = list(dict.fromkeys(n.layer for n in neurons))
    batches = [source] if isinstance(source, Batch) else [
        adapter.encode(list(source[i:i + batch_size])) for i in range(0, len(source), batch_size)
    ]
    sums = {lay: 0.0 for lay in layers}
    count = 0
    with torch.no_grad():
        for batch in batches:
            _, cache = adapter.run_with_cache(batch, layers)
            m = batch.attention_mask.bool()
            for lay in layers:
                a = cache[lay]
                mm = m[:, : a.shape[1]].to(a.device)
                sums[lay] = sums[lay] + a[mm].double().sum(0).cpu()
            count += int(m.sum())
    if not count:
        raise ParameterError("Mean: the reference texts produced no tokens")
    return np.array([float(sums[n.layer][n.unit] / count) for n in neurons], dtype=np.float32)


def _compile_all(adapter: ModelAdapter, edits: Iterable[Edit]) -> dict[str, list]:
    hooks: dict[str, list] = {}
    for e in edits:
        if not isinstance(e, Edit):
            raise ParameterError(f"not an edit: {e!r} (use Zero, Mean, Set, Scale, Steer, Resample, PerRow)")
        for layer, fn in e.compile(adapter):
            hooks.setdefault(layer, []).append(fn)
    return hooks


@contextlib.contextmanager
def intervene(adapter: ModelAdapter, edits: Edit | Iterable[Edit] | None) -> Iterator[ModelAdapter]:
    """Apply ``edits`` to every forward pass of ``adapter`` inside the block.

    >>> with intervene(model, [Zero("layer.2:5"), Set(["layer.1:3"], 2.0, positions=[0])]):
    ...     out = model.forward(batch)

    Edits are applied in the given order (several edits on one layer compose). Data they need
    (reference means, resampling sources) is computed before any hook is attached. Hooks are
    removed on exit, also when the block raises; activations are never modified in place.
    """
    if edits is None:
        edits = []
    elif isinstance(edits, Edit):
        edits = [edits]
    hooks = _compile_all(adapter, list(edits))
    with adapter.hooks(hooks):
        yield adapter
