"""The one result protocol of every analysis (issue 17's contract).

Every analysis returns an object that derives from :class:`Result` and so offers:

* ``to_dict()`` / ``from_dict(d)`` — plain JSON-ready data (numbers, strings, lists, dicts) and back;
* ``to_json(path=None)`` / ``from_json(text_or_path)`` — the same as text, written to ``path`` if given;
* ``table()`` — a plain-text table for terminals and logs;
* ``plot(path)`` — a PNG drawn by :mod:`finegrain.viz` (results with nothing to draw say so);
* ``_repr_html_()`` — how notebooks show it: the table, escaped, and the plot inline.

Dataclass results get ``to_dict``/``from_dict`` for free: fields are converted by :func:`jsonable`
(numpy values, :class:`~finegrain.neurons.Neuron` addresses, paths, NaN → ``None``) and restored by the
class's optional ``_decode(d)`` hook. A ``"type"`` key records the class name so that
:func:`result_from_dict` can rebuild any result.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finegrain.errors import FinegrainError, ParameterError
from finegrain.neurons import Neuron, NeuronIndex

_REGISTRY: dict[str, type[Result]] = {}


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data: numpy scalars and arrays, neurons (``"layer.3:117"``), neuron indexes
    (lists of addresses), paths, sets, dataclasses and results; non-finite floats become ``None``."""
    if isinstance(obj, Result):
        return obj.to_dict()
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Neuron | Path):
        return str(obj)
    if isinstance(obj, NeuronIndex):
        return obj.to_list()
    if isinstance(obj, np.ndarray):
        # numbers straight from tolist() (Python ints and floats) unless a float is not finite: a report's
        # matrices went element by element through this function, 7 s of it
        if obj.dtype.kind in "iub" or (obj.dtype.kind == "f" and np.isfinite(obj).all()):
            return obj.tolist()
        return jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, list | tuple):
        if all(type(v) is float or type(v) is int for v in obj):  # a row of numbers: no call per element
            return [v if type(v) is int or math.isfinite(v) else None for v in obj]
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors and the like
        return jsonable(obj.item())
    raise ParameterError(f"cannot convert {type(obj).__name__} to JSON")


def _read_json_arg(text_or_path: str | os.PathLike) -> dict:
    s = str(text_or_path)
    if not s.lstrip().startswith(("{", "[")):
        path = Path(s)
        try:
            s = path.read_text(encoding="utf-8")
        except OSError as e:
            raise FinegrainError(f"cannot read result file {path}: {e.strerror or e}") from e
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise FinegrainError(f"not a finegrain result (invalid JSON at line {e.lineno}): {e.msg}") from e


class Result:
    """Base of every analysis result; see the module docstring for the protocol."""

    #: what a result says it is; "type" in its dict
    kind: ClassVar[str] = "result"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    # -- data ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-ready data; ``from_dict(to_dict())`` rebuilds an equal result."""
        if not dataclasses.is_dataclass(self):
            raise NotImplementedError(f"{type(self).__name__} must implement to_dict()")
        d = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}
        return {"type": type(self).__name__, **d}

    @classmethod
    def from_dict(cls, d: Mapping) -> Result:
        if not dataclasses.is_dataclass(cls):
            raise NotImplementedError(f"{cls.__name__} must implement from_dict()")
        d = dict(d)
        kind = d.pop("type", cls.__name__)
        if kind != cls.__name__ and kind in _REGISTRY and not issubclass(_REGISTRY[kind], cls):
            raise ParameterError(f"this is a {kind}, not a {cls.__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        d = cls._decode({k: v for k, v in d.items() if k in names})
        return cls(**d)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        """Turn JSON data back into field values (e.g. address strings into neurons); override as needed."""
        return d

    def to_json(self, path: str | os.PathLike | None = None, indent: int | None = 1) -> str:
        """The result as JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> Result:
        """Rebuild from JSON text or a JSON file written by :meth:`to_json`."""
        return cls.from_dict(_read_json_arg(text_or_path))

    # -- showing -----------------------------------------------------------------------------------
    def table(self) -> str:
        """A plain-text table; results override this with their own layout."""
        rows = [(k, v) for k, v in self.to_dict().items() if k != "type" and not isinstance(v, dict | list)]
        width = max((len(k) for k, _ in rows), default=0)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def plot(self, path: str | os.PathLike) -> Path:
        """Draw the result as a PNG at ``path`` (through :mod:`finegrain.viz`) and return the path."""
        raise ParameterError(f"{type(self).__name__} has nothing to plot; use table() or to_json()")

    def has_plot(self) -> bool:
        return type(self).plot is not Result.plot

    def _repr_html_(self) -> str:
        """Notebook display: the escaped table and, where the result draws one, its plot inline."""
        parts = [f'<div class="finegrain-result"><b>{html.escape(type(self).__name__)}</b>',
                 f"<pre>{html.escape(self.table())}</pre>"]
        if self.has_plot():
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    png = Path(self.plot(Path(tmp) / "plot.png"))
                    data = base64.b64encode(png.read_bytes()).decode("ascii")
                parts.append(f'<img alt="plot" src="data:image/png;base64,{data}"/>')
            except (FinegrainError, OSError, ValueError) as e:  # a failed plot must not hide the table
                parts.append(f"<p><i>plot unavailable: {html.escape(str(e))}</i></p>")
        parts.append("</div>")
        return "\n".join(parts)


class ResultList(list, Result):
    """The results of a list input, one per item (list in, list out); shows and saves as one."""

    def to_dict(self) -> dict:
        return {"type": "ResultList", "items": [jsonable(r) for r in self]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ResultList:
        return cls(result_from_dict(x) for x in d.get("items", []))

    def table(self) -> str:
        return "\n\n".join(r.table() if isinstance(r, Result) else str(r) for r in self)

    def has_plot(self) -> bool:
        return False

    def _repr_html_(self) -> str:
        """One block for the list: the items' own list view (``_repr_html_list_``, e.g. one Captum-style
        table with one colour scale), one escaped table for items that draw nothing, else item by item."""
        kinds = {type(r) for r in self}
        if len(kinds) == 1 and issubclass(kind := next(iter(kinds)), Result):
            if hasattr(kind, "_repr_html_list_"):
                return kind._repr_html_list_(list(self))
            if kind._repr_html_ is Result._repr_html_ and not any(r.has_plot() for r in self):
                return (f'<div class="finegrain-result"><b>{len(self)} x {html.escape(kind.__name__)}</b>\n'
                        f"<pre>{html.escape(self.table())}</pre>\n</div>")
        return "\n".join(r._repr_html_() if isinstance(r, Result) else f"<pre>{html.escape(str(r))}</pre>"
                         for r in self)


class HtmlFragment(str):
    """An HTML fragment that finegrain built (its data already escaped): a plain ``str`` everywhere, shown as
    HTML in a notebook (what :func:`finegrain.describe.token_heatmap` and
    :func:`finegrain.attribute.records_html` return)."""

    def _repr_html_(self) -> str:
        return str(self)


def result_from_dict(d: Mapping) -> Result:
    """Rebuild any result from its ``to_dict()`` (the ``"type"`` key names the class)."""
    kind = d.get("type")
    if kind not in _REGISTRY:
        raise ParameterError(f"unknown result type {kind!r}")
    return _REGISTRY[kind].from_dict(d)


def result_from_json(text_or_path: str | os.PathLike) -> Result:
    """Rebuild any result from JSON text or a file written by ``to_json``."""
    return result_from_dict(_read_json_arg(text_or_path))


def plain_table(header: Sequence, rows: Sequence[Sequence], float_format: str = ".4g", align: str = "left") -> str:
    """Rows as a plain-text table under ``header``: floats as ``float_format``, everything else through ``str``,
    columns two spaces apart and padded to their widest cell on the right (``align="left"``) or the left."""
    if align not in ("left", "right"):
        raise ParameterError(f"align must be 'left' or 'right', got {align!r}")
    cells = [[str(h) for h in header]] + [[format(v, float_format) if isinstance(v, float) else str(v) for v in r]
                                          for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    pad = str.ljust if align == "left" else str.rjust
    return "\n".join("  ".join(pad(c, w) for c, w in zip(r, widths)) for r in cells)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["HtmlFragment", "Result", "ResultList", "jsonable", "plain_table", "result_from_dict",
           "result_from_json", "write_text_atomic"]
