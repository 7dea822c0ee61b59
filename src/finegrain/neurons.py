"""The one neuron address used everywhere in finegrain: a layer name plus a unit index.

Layer names (see ``ModelAdapter.layers()`` for what a given model has):

* transformers: ``layer.0`` = embeddings (input to the first block), ``layer.i`` (1-based) = residual
  output of block *i*, ``layer.i.mlp`` = MLP intermediate activations of block *i* (input of the
  down projection), ``layer.i.attn`` = concatenated attention-head outputs of block *i* (input of the
  attention output projection; head *h* owns units ``h*head_dim .. (h+1)*head_dim - 1``);
* LSTMs: ``embedding``, ``lstm.i`` (hidden state h of LSTM layer *i*, 1-based), ``lstm.i.cell``
  (cell state c).

A neuron is written ``"layer.3:117"``; a whole layer is written ``"layer.3"``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_ADDR = re.compile(r"^(?P<layer>[A-Za-z_][\w.\-]*):(?P<unit>\d+)$")


@dataclass(frozen=True, order=True)
class Neuron:
    """A single unit: ``Neuron("layer.3", 117)`` is written ``layer.3:117``."""

    layer: str
    unit: int

    def __post_init__(self) -> None:
        if not isinstance(self.unit, int) or self.unit < 0:
            raise ValueError(f"neuron unit index must be a non-negative int, got {self.unit!r}")
        if not self.layer or ":" in self.layer:
            raise ValueError(f"invalid layer name {self.layer!r}")

    def __str__(self) -> str:
        return f"{self.layer}:{self.unit}"

    @classmethod
    def parse(cls, text: str | Neuron) -> Neuron:
        """Parse ``"layer.3:117"`` (or pass a Neuron through)."""
        if isinstance(text, Neuron):
            return text
        m = _ADDR.match(str(text).strip())
        if not m:
            raise ValueError(f"not a neuron address: {text!r} (expected LAYER:UNIT, e.g. 'layer.3:117')")
        return cls(m["layer"], int(m["unit"]))


def parse_neurons(items: Iterable[str | Neuron]) -> list[Neuron]:
    """Parse many addresses; also accepts a comma-separated string."""
    if isinstance(items, str):
        items = [s for s in items.split(",") if s.strip()]
    return [Neuron.parse(x) for x in items]


class NeuronIndex:
    """Maps the columns of a concatenated activation matrix to neuron addresses and back.

    ``NeuronIndex({"layer.1": 384, "layer.2": 384})`` describes a 768-column matrix whose column 400
    is ``layer.2:16``. ``units`` gives the unit ids of layers that hold only some of their neurons
    (e.g. a store extracted with ``neurons=``): ``NeuronIndex({"layer.3": 2}, units={"layer.3": [7, 117]})``
    has columns ``layer.3:7`` and ``layer.3:117``. :meth:`from_neurons` describes any list of neurons, in
    its order (a layer may then own several runs of columns).

    An index made for a bare array with no addresses uses the placeholder layer :data:`PLACEHOLDER`
    (``"x"``), so its neurons read ``x:0, x:1, ...``; nothing in finegrain mistakes it for a model layer.
    """

    PLACEHOLDER = "x"

    def __init__(self, sizes: dict[str, int] | Sequence[tuple[str, int]],
                 units: dict[str, Sequence[int]] | None = None):
        items = list(sizes.items()) if isinstance(sizes, dict) else list(sizes)
        units = {k: [int(u) for u in v] for k, v in (units or {}).items()}
        segments = []
        for name, size in items:
            ids = units.get(name)
            if ids is not None and len(ids) != int(size):
                raise ValueError(f"layer {name}: {len(ids)} unit ids for {int(size)} columns")
            segments.append((name, int(size), ids))
        self._init_segments(segments)

    @classmethod
    def from_neurons(cls, neurons: Iterable[Neuron | str]) -> NeuronIndex:
        """The index of a matrix whose columns are exactly ``neurons``, in this order."""
        segments: list[tuple[str, int, list[int]]] = []
        for n in (Neuron.parse(x) for x in neurons):
            if segments and segments[-1][0] == n.layer:
                segments[-1][2].append(n.unit)
            else:
                segments.append((n.layer, 0, [n.unit]))
        self = cls.__new__(cls)
        self._init_segments([(name, len(ids), ids) for name, _, ids in segments])
        return self

    @classmethod
    def placeholder(cls, n_columns: int) -> NeuronIndex:
        """The index of a bare ``[rows, n_columns]`` array: neurons ``x:0 .. x:n-1``."""
        return cls({cls.PLACEHOLDER: int(n_columns)})

    def _init_segments(self, segments: list[tuple[str, int, list[int] | None]]) -> None:
        # a segment is a run of columns of one layer: (layer, first column, size, unit ids or None = 0..size-1)
        self._segments: list[tuple[str, int, int, list[int] | None]] = []
        self.layers: list[str] = []
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, int] = {}
        self.units: dict[str, list[int]] = {}
        off = 0
        runs: dict[str, int] = {}
        for name, size, ids in segments:
            if name not in self.sizes:
                self.layers.append(name)
                self.sizes[name] = 0
                self.offsets[name] = off
            runs[name] = runs.get(name, 0) + 1
            self._segments.append((name, off, size, ids))
            self.sizes[name] += size
            off += size
        self.total = off
        for name in self.layers:
            segs = [s for s in self._segments if s[0] == name]
            if len(segs) > 1 or segs[0][3] is not None:
                self.units[name] = [u for _, _, size, ids in segs for u in (ids if ids is not None else range(size))]
                if len(set(self.units[name])) != len(self.units[name]):
                    raise ValueError(f"layer {name}: a unit is listed twice")
        self._pos = {name: {u: i for i, u in enumerate(ids)} for name, ids in self.units.items()}
        # column of the k-th unit of a layer listed by `units`: segments may interleave with other layers
        self._cols = {name: [c for _, first, size, _ in (s for s in self._segments if s[0] == name)
                             for c in range(first, first + size)] for name in self.units}
        self._starts = [s[1] for s in self._segments]
        self._runs_key: tuple | None = None

    def _runs(self) -> tuple:
        """The columns' neurons as runs ``(layer, first unit, count)`` of consecutive units, made once: two
        indexes are equal exactly when these are (however their segments were written), and comparing them
        does not build a Neuron per column (a check per probe fit did that, 5 s of a report)."""
        key = getattr(self, "_runs_key", None)  # (absent on an index unpickled from an older version)
        if key is None:
            runs: list[list] = []
            for name, _, size, ids in self._segments:
                parts = [(0, size)] if ids is None else [(int(u), 1) for u in ids]
                for first, count in parts:
                    if runs and runs[-1][0] == name and runs[-1][1] + runs[-1][2] == first:
                        runs[-1][2] += count
                    elif count:
                        runs.append([name, first, count])
            key = self._runs_key = tuple(tuple(r) for r in runs)
        return key

    def __len__(self) -> int:
        return self.total

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NeuronIndex):
            return NotImplemented
        return self.total == other.total and self._runs() == other._runs()

    __hash__ = None  # mutable-looking container semantics: compare, do not hash

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {self.sizes[name]}" for name in self.layers[:6])
        more = ", ..." if len(self.layers) > 6 else ""
        return f"NeuronIndex({{{parts}{more}}}, {self.total} columns)"

    @property
    def is_placeholder(self) -> bool:
        """True for the index of a bare array (columns ``x:0 ..``), which names no model neurons."""
        return self.layers == [self.PLACEHOLDER]

    def column(self, neuron: Neuron | str) -> int:
        n = Neuron.parse(neuron)
        if n.layer not in self.sizes:
            raise KeyError(f"unknown layer {n.layer!r}; have {self.layers}")
        if n.layer in self._pos:
            if n.unit not in self._pos[n.layer]:
                raise IndexError(f"{n} is not among the {self.sizes[n.layer]} units kept of {n.layer}")
            return self._cols[n.layer][self._pos[n.layer][n.unit]]
        if n.unit >= self.sizes[n.layer]:
            raise IndexError(f"{n} out of range: {n.layer} has {self.sizes[n.layer]} units")
        return self.offsets[n.layer] + n.unit

    def columns(self, neurons: Iterable[Neuron | str]) -> list[int]:
        return [self.column(n) for n in neurons]

    def layer_units(self, layer: str) -> list[int]:
        """The unit ids of ``layer``'s columns, in column order."""
        return list(self.units[layer]) if layer in self.units else list(range(int(self.sizes[layer])))

    def layer_columns(self, layer: str) -> list[int]:
        """The columns that hold ``layer``'s units, in column order."""
        if layer not in self.sizes:
            raise KeyError(f"unknown layer {layer!r}; have {self.layers}")
        if layer in self._cols:
            return list(self._cols[layer])
        return list(range(self.offsets[layer], self.offsets[layer] + self.sizes[layer]))

    def neuron(self, column: int) -> Neuron:
        if not 0 <= column < self.total:
            raise IndexError(f"column {column} out of range 0..{self.total - 1}")
        name, first, size, ids = self._segments[bisect.bisect_right(self._starts, column) - 1]
        k = int(column - first)
        return Neuron(name, ids[k] if ids is not None else k)

    def neurons(self, columns: Iterable[int] | None = None) -> list[Neuron]:
        if columns is None:
            return [Neuron(name, u) for name, _, size, ids in self._segments
                    for u in (ids if ids is not None else range(size))]
        return [self.neuron(int(c)) for c in columns]

    def layer_of(self, columns: Iterable[int]) -> list[str]:
        return [self.neuron(int(c)).layer for c in columns]

    def select(self, columns: Iterable[int]) -> NeuronIndex:
        """The index of the matrix made of these columns (in this order)."""
        return NeuronIndex.from_neurons(self.neurons(columns))

    def to_list(self) -> list[str]:
        """Every column's address as a string (for JSON)."""
        return [str(n) for n in self.neurons()]
