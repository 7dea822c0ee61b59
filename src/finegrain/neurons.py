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


def head_units(layer: str, head: int, head_dim: int) -> list[Neuron]:
    """The units of attention head ``head`` in an ``layer.i.attn`` component."""
    return [Neuron(layer, head * head_dim + k) for k in range(head_dim)]


class NeuronIndex:
    """Maps the columns of a concatenated activation matrix to neuron addresses and back.

    ``NeuronIndex({"layer.1": 384, "layer.2": 384})`` describes a 768-column matrix whose column 400
    is ``layer.2:16``. ``units`` gives the unit ids of layers that hold only some of their neurons
    (e.g. a store extracted with ``neurons=``): ``NeuronIndex({"layer.3": 2}, units={"layer.3": [7, 117]})``
    has columns ``layer.3:7`` and ``layer.3:117``.
    """

    def __init__(self, sizes: dict[str, int] | Sequence[tuple[str, int]],
                 units: dict[str, Sequence[int]] | None = None):
        items = list(sizes.items()) if isinstance(sizes, dict) else list(sizes)
        self.layers = [name for name, _ in items]
        self.sizes = dict(items)
        self.units = {k: [int(u) for u in v] for k, v in (units or {}).items() if k in self.sizes}
        for name, ids in self.units.items():
            if len(ids) != int(self.sizes[name]):
                raise ValueError(f"layer {name}: {len(ids)} unit ids for {self.sizes[name]} columns")
        self._pos = {name: {u: i for i, u in enumerate(ids)} for name, ids in self.units.items()}
        self.offsets: dict[str, int] = {}
        off = 0
        for name, size in items:
            self.offsets[name] = off
            off += int(size)
        self.total = off

    def __len__(self) -> int:
        return self.total

    def column(self, neuron: Neuron | str) -> int:
        n = Neuron.parse(neuron)
        if n.layer not in self.sizes:
            raise KeyError(f"unknown layer {n.layer!r}; have {self.layers}")
        if n.layer in self._pos:
            if n.unit not in self._pos[n.layer]:
                raise IndexError(f"{n} is not among the {self.sizes[n.layer]} units kept of {n.layer}")
            return self.offsets[n.layer] + self._pos[n.layer][n.unit]
        if n.unit >= self.sizes[n.layer]:
            raise IndexError(f"{n} out of range: {n.layer} has {self.sizes[n.layer]} units")
        return self.offsets[n.layer] + n.unit

    def columns(self, neurons: Iterable[Neuron | str]) -> list[int]:
        return [self.column(n) for n in neurons]

    def layer_units(self, layer: str) -> list[int]:
        """The unit ids of ``layer``'s columns, in column order."""
        return list(self.units[layer]) if layer in self.units else list(range(int(self.sizes[layer])))

    def neuron(self, column: int) -> Neuron:
        if not 0 <= column < self.total:
            raise IndexError(f"column {column} out of range 0..{self.total - 1}")
        for name in reversed(self.layers):
            if column >= self.offsets[name]:
                k = int(column - self.offsets[name])
                return Neuron(name, self.units[name][k] if name in self.units else k)
        raise AssertionError("unreachable")

    def neurons(self, columns: Iterable[int] | None = None) -> list[Neuron]:
        if columns is None:
            return [Neuron(name, u) for name in self.layers for u in self.layer_units(name)]
        return [self.neuron(int(c)) for c in columns]

    def layer_of(self, columns: Iterable[int]) -> list[str]:
        return [self.neuron(int(c)).layer for c in columns]
