"""On-disk, chunked activation store (zarr v3).

Layout of ``NAME.fgstore/`` (a zarr group)::

    acts/<layer>      float16|float32 [n_rows, size], chunked by rows, uncompressed
    index/sent_id     int32  [n_rows]   sentence index in the corpus
    index/word_pos    int32  [n_rows]   word position (-1 for sentence-level rows)
    index/word        str    [n_rows]   the word (the sentence text for sentence-level rows)
    index/label.<col> str    [n_rows]   label columns (word- or sentence-level)
    attrs             metadata: model, weights hash, layers, aggregation, version, progress, complete

A store is written to ``NAME.fgstore.partial`` and renamed to ``NAME.fgstore`` only when every
row is written, so a half-written store is never mistaken for a complete one; the ``.partial``
directory records its progress so that an interrupted extraction resumes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import zarr

from finegrain.errors import StoreError, StoreNotFoundError
from finegrain.neurons import Neuron, NeuronIndex

FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _split_rows(parts: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``n`` rows of the row-wise concatenation of ``parts``, and the rest, as views."""
    head: list[np.ndarray] = []
    for i, p in enumerate(parts):
        if n <= 0:
            return head, parts[i:]
        if len(p) <= n:
            head.append(p)
            n -= len(p)
        else:
            head.append(p[:n])
            return head, [p[n:], *parts[i + 1 :]]
    return head, []


class _ChunkFiles:
    """Writes whole chunk files, bypassing the page cache (``O_DIRECT``) where the file system allows.

    Buffered writes of fresh files cost the kernel a page-cache page per 4 KiB written; measured on a
    2-core VM that was 0.5 s of CPU per 200 MB, taken from the model's threads, while ``O_DIRECT`` took
    0.03 s (the device DMAs from our buffer). The chunk is assembled in one reused, page-aligned staging
    buffer (``O_DIRECT`` needs aligned memory), so no chunk-sized array is allocated per write either.
    Falls back to buffered writes where ``O_DIRECT`` is refused (tmpfs, some network file systems), or
    everywhere with ``FINEGRAIN_DIRECT_IO=0``.
    """

    ALIGN = 4096

    def __init__(self):
        self.direct = hasattr(os, "O_DIRECT") and os.environ.get("FINEGRAIN_DIRECT_IO", "1") != "0"
        self._raw: np.ndarray | None = None

    def _staging(self, nbytes: int) -> np.ndarray:
        if self._raw is None or self._raw.nbytes < nbytes + self.ALIGN:
            self._raw = np.empty(nbytes + self.ALIGN, np.uint8)
        off = -self._raw.ctypes.data % self.ALIGN
        return self._raw[off : off + nbytes]

    def write(self, path: Path, pieces: list[np.ndarray], rows: int, dtype: np.dtype) -> None:
        """Write ``pieces`` (consecutive row blocks) as the chunk file ``path`` of ``rows`` rows; rows
        past the pieces are the fill value 0 (zarr stores an edge chunk at full size)."""
        cols = pieces[0].shape[1:] if pieces else ()
        dtype = np.dtype(dtype).newbyteorder("<")
        stage = self._staging(rows * int(np.prod(cols, dtype=np.int64)) * dtype.itemsize)
        block = stage.view(dtype).reshape(rows, *cols)
        r = 0
        for p in pieces:
            block[r : r + len(p)] = p
            r += len(p)
        block[r:] = 0
        self._write(path, stage)

    def _write(self, path: Path, data: np.ndarray) -> None:
        head = len(data) - len(data) % self.ALIGN if self.direct else 0
        if head:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            except OSError:  # the file system refuses O_DIRECT
                self.direct, head = False, 0
        if not head:
            with open(path, "wb") as f:
                f.write(memoryview(data))
            return
        try:
            done = 0
            while done < head:  # a short write leaves an aligned offset on local file systems
                done += os.write(fd, memoryview(data[done:head]))
            if done < len(data):  # the unaligned tail: buffered
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                while done < len(data):
                    done += os.write(fd, memoryview(data[done:]))
        except OSError:  # e.g. EINVAL: a block size this alignment does not satisfy; write it buffered
            os.close(fd)
            self.direct = False
            self._write(path, data)
            return
        os.close(fd)


class StoreWriter:
    """Writes an activation store row-block by row-block.

    ``n_rows`` and the layer sizes must be known up front (word counts are known before
    extraction), so arrays are allocated once and filled sequentially; memory use is one block.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layers: dict[str, int],
        n_rows: int,
        label_columns: Sequence[str] = (),
        dtype: str = "float16",
        chunk_rows: int = 4096,
        meta: dict | None = None,
        resume: bool = True,
        overwrite: bool = False,
        lazy: bool = False,
    ):
        """``lazy``: create the zarr arrays on first use or :meth:`ensure_created` rather than here:
        extraction creates them in its writer thread, where the ~20 array creations (~50 ms) overlap the
        first forward passes."""
        self.path = Path(path)
        self.tmp = _partial(self.path)
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if n_rows <= 0:
            raise StoreError("cannot write an empty store (0 rows)")
        if self.path.exists():
            if not overwrite:
                raise StoreError(f"{self.path} already exists (pass overwrite=True to replace it)")
        self.layers = dict(layers)
        self.n_rows = int(n_rows)
        self.label_columns = list(label_columns)
        self.meta = dict(meta or {})
        self.resumed_rows = 0
        if resume and self.tmp.exists() and self._compatible():
            self.group = zarr.open_group(str(self.tmp), mode="r+")
            self.resumed_rows = int(self.group.attrs.get("rows_written", 0))
        else:
            self._group, self._create_args = None, (dtype, chunk_rows)
            if not lazy:
                self.ensure_created()
        self._init_progress(self.resumed_rows)

    def _init_progress(self, rows: int) -> None:
        # rows_written: accepted by write(); rows_durable: on disk (a chunk boundary until the end)
        self.rows_written = self.rows_durable = rows
        self._pending: dict[str, list[np.ndarray]] = {}
        self._arrays: dict[str, tuple[zarr.Array, Path | None]] = {}
        self._files = _ChunkFiles()

    # -- creation ------------------------------------------------------------------------
    def _signature(self) -> dict:
        return {
            "layers": self.layers,
            "n_rows": self.n_rows,
            "label_columns": self.label_columns,
            "fingerprint": self.meta.get("fingerprint"),
        }

    def _compatible(self) -> bool:
        try:
            g = zarr.open_group(str(self.tmp), mode="r")
            return g.attrs.get("signature") == self._signature()
        except Exception:  # noqa: BLE001 - an unreadable partial store is simply restarted
            return False

    @property
    def group(self) -> zarr.Group:
        return self._group if self._group is not None else self.ensure_created()

    @group.setter
    def group(self, g: zarr.Group) -> None:
        self._group = g

    def ensure_created(self) -> zarr.Group:
        """Create the partial store now if it is not yet (a lazy writer's first use does it too)."""
        if self._group is None:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self._create(*self._create_args)
        return self._group

    def _create(self, dtype: str, chunk_rows: int) -> None:
        g = zarr.open_group(str(self.tmp), mode="w")
        n = self.n_rows
        # chunks of about chunk_rows that tile the rows evenly: zarr stores an edge chunk at full size,
        # so a last chunk of a few rows would cost as much to write as a whole one
        cr = max(1, -(-n // -(-n // max(1, chunk_rows))))
        acts = g.require_group("acts")
        for name, size in self.layers.items():
            acts.create_array(name, shape=(n, size), chunks=(cr, size), dtype=dtype, compressors=None)
        idx = g.require_group("index")
        idx.create_array("sent_id", shape=(n,), chunks=(cr,), dtype="int32")
        idx.create_array("word_pos", shape=(n,), chunks=(cr,), dtype="int32")
        idx.create_array("word", shape=(n,), chunks=(cr,), dtype=str)
        for col in self.label_columns:
            idx.create_array(f"label.{col}", shape=(n,), chunks=(cr,), dtype=str)
        g.attrs.update(
            {
                "format": "finegrain-activations",
                "format_version": FORMAT_VERSION,
                "signature": self._signature(),
                "layers": self.layers,
                "n_rows": n,
                "label_columns": self.label_columns,
                "dtype": dtype,
                "rows_written": 0,
                "complete": False,
                **{k: v for k, v in self.meta.items() if k not in ("layers", "n_rows")},
            }
        )
        self.group = g

    # -- writing -------------------------------------------------------------------------
    def write(
        self,
        acts: dict[str, np.ndarray],
        sent_id: np.ndarray,
        word_pos: np.ndarray,
        words: Sequence[str],
        labels: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """Append a block of rows (in order). ``acts[layer]`` is ``[rows, size]``.

        Rows reach the disk in whole chunks: zarr rewrites a whole chunk when part of it is written
        (read, modify, write), which made unaligned appends about 3x slower than the data's size
        needs. The tail of an incomplete chunk waits in memory (at most one chunk per array) until
        the next block completes it, :meth:`flush` or :meth:`commit`.
        """
        k = len(sent_id)
        start, stop = self.rows_written, self.rows_written + k
        if stop > self.n_rows:
            raise StoreError(f"writing rows {start}:{stop} past the declared {self.n_rows} rows")
        missing = set(self.layers) - set(acts)
        if missing:
            raise StoreError(f"block is missing layers {sorted(missing)}")
        for name, arr in acts.items():
            if name not in self.layers:
                raise StoreError(f"unknown layer {name!r}; store has {list(self.layers)}")
            if arr.shape != (k, self.layers[name]):
                raise StoreError(f"layer {name}: block shape {arr.shape}, expected {(k, self.layers[name])}")
        if len(word_pos) != k or len(words) != k:
            raise StoreError(f"index columns have {len(word_pos)} / {len(words)} rows, the block {k}")
        block = {f"acts/{name}": np.asarray(arr) for name, arr in acts.items()}
        block["index/sent_id"] = np.asarray(sent_id, dtype=np.int32)
        block["index/word_pos"] = np.asarray(word_pos, dtype=np.int32)
        block["index/word"] = np.asarray(list(words), dtype=str)
        for col in self.label_columns:
            values = list((labels or {}).get(col, ()))
            if len(values) != k:
                raise StoreError(f"label column {col!r} has {len(values)} values for {k} rows")
            block[f"index/label.{col}"] = np.asarray(values, dtype=str)
        for key, arr in block.items():
            self._pending.setdefault(key, []).append(arr)
        self.rows_written = stop
        self._flush(final=False)

    def flush(self) -> None:
        """Write every accepted row to disk (the last chunk partially) and record the progress."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        start = self.rows_durable
        if self.rows_written == start:
            return
        end = self.rows_written
        if not final:  # the last whole chunk of every array (index and activations alike)
            for key in self._pending:
                chunk = int(self._array(key)[0].chunks[0])
                end = min(end, (self.rows_written // chunk) * chunk)
            if end <= start:
                return
        for key, parts in self._pending.items():
            head, self._pending[key] = _split_rows(parts, end - start)
            self._write_rows(key, start, end, head)
        self.rows_durable = end
        self.group.attrs["rows_written"] = end  # written after the data: progress never overstates

    def _write_rows(self, key: str, start: int, end: int, parts: list[np.ndarray]) -> None:
        """Rows ``start:end`` of one array (given as consecutive blocks). Whole chunks of an
        uncompressed local array are written as their files directly (zarr v3's chunk layout: the raw
        little-endian C-order bytes at the chunk's key), which halves the CPU cost of zarr's write path
        (see :class:`_ChunkFiles`); the rest goes through zarr."""
        arr, direct = self._array(key)
        chunk = int(arr.chunks[0])
        if direct is not None and start % chunk == 0:
            stop = start + ((end - start) // chunk) * chunk
            if end == arr.shape[0]:  # the edge chunk too: stored at full size, padded with the fill value
                stop = end
            for c0 in range(start, stop, chunk):
                f = direct / arr.metadata.encode_chunk_key((c0 // chunk, *([0] * (arr.ndim - 1))))
                f.parent.mkdir(parents=True, exist_ok=True)
                pieces, parts = _split_rows(parts, min(chunk, stop - c0))
                self._files.write(f, pieces, chunk, arr.dtype)
            start = stop
        if end > start:
            arr[start:end] = parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _direct_root(self, arr: zarr.Array) -> Path | None:
        """The array's directory when its chunks are plain bytes on a local disk, else ``None``."""
        from zarr.codecs import BytesCodec
        from zarr.storage import LocalStore

        meta = arr.metadata
        codecs = getattr(meta, "codecs", ())
        if (
            not isinstance(arr.store_path.store, LocalStore)
            or len(codecs) != 1
            or not isinstance(codecs[0], BytesCodec)
            or str(getattr(codecs[0].endian, "value", "little")) != "little"
            or arr.dtype.kind != "f"
            or float(meta.fill_value) != 0.0
            or any(c != s for c, s in zip(arr.chunks[1:], arr.shape[1:]))
        ):
            return None
        return Path(arr.store_path.store.root) / arr.store_path.path

    def _array(self, key: str) -> tuple[zarr.Array, Path | None]:
        """The array ``key`` and its directory for direct chunk writes (:meth:`_direct_root`), opened
        once per writer: opening reads the array's metadata from disk."""
        if key not in self._arrays:
            arr = self.group[key]
            self._arrays[key] = (arr, self._direct_root(arr))
        return self._arrays[key]

    def rewind(self, row: int) -> None:
        """Continue writing at ``row`` (at most the rows already on disk; nothing may be pending):
        a resumed extraction restarts at the beginning of a buffer, which may lie before the last
        chunk boundary on disk; those rows are written again with the same values."""
        row = int(row)
        if not 0 <= row <= self.rows_durable or self.rows_written != self.rows_durable:
            raise StoreError(f"cannot rewind to row {row}: {self.rows_durable} rows on disk, "
                             f"{self.rows_written - self.rows_durable} pending")
        self.rows_written = self.rows_durable = row
        self._pending = {}

    # -- region writing (several writers, one store) -----------------------------------------
    @classmethod
    def open_partial(cls, path: str | os.PathLike) -> StoreWriter:
        """Open the existing partial store of ``path`` (created by another ``StoreWriter``) to fill
        regions of it with :meth:`write_region`, e.g. from another process or machine."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.tmp = _partial(self.path)
        if not self.tmp.exists():
            raise StoreError(f"no partial store at {self.tmp} to write into")
        self.group = zarr.open_group(str(self.tmp), mode="r+")
        attrs = dict(self.group.attrs)
        if attrs.get("format") != "finegrain-activations":
            raise StoreError(f"{self.tmp} is not a finegrain activation store")
        self.layers = {k: int(v) for k, v in attrs["layers"].items()}
        self.n_rows = int(attrs["n_rows"])
        self.label_columns = list(attrs.get("label_columns", []))
        self.meta = attrs
        self.resumed_rows = int(attrs.get("rows_written", 0))
        self._init_progress(self.resumed_rows)
        return self

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of the activation arrays: concurrent writers must own whole chunks."""
        return int(self.group["acts"][next(iter(self.layers))].chunks[0])

    @property
    def index_chunk_rows(self) -> int:
        return int(self.group["index"]["sent_id"].chunks[0])

    @property
    def region_dir(self) -> Path:
        """A scratch directory inside the partial store (markers, side files); removed at commit."""
        d = self.tmp / "_regions"
        d.mkdir(exist_ok=True)
        return d

    def write_region(
        self,
        start: int,
        acts: dict[str, np.ndarray] | None = None,
        sent_id: np.ndarray | None = None,
        word_pos: np.ndarray | None = None,
        words: Sequence[str] | None = None,
        labels: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """Write rows ``start:start+k`` of the activations (``acts``, all layers) and/or of the index
        (``sent_id``, ``word_pos``, ``words``, ``labels``), anywhere in the store.

        Unlike :meth:`write` this does not advance ``rows_written``. Writers running concurrently
        must touch disjoint *chunks* (:attr:`chunk_rows`, :attr:`index_chunk_rows`): zarr rewrites
        a whole chunk on a partial write, so two writers sharing a chunk lose each other's rows.
        """
        start = int(start)
        if acts is not None:
            missing = set(self.layers) - set(acts)
            if missing:
                raise StoreError(f"block is missing layers {sorted(missing)}")
            k = len(next(iter(acts.values())))
            if start < 0 or start + k > self.n_rows:
                raise StoreError(f"writing rows {start}:{start + k} outside the declared {self.n_rows} rows")
            for name, arr in acts.items():
                if name not in self.layers:
                    raise StoreError(f"unknown layer {name!r}; store has {list(self.layers)}")
                if arr.shape != (k, self.layers[name]):
                    raise StoreError(f"layer {name}: block shape {arr.shape}, expected {(k, self.layers[name])}")
                if k:
                    self.group["acts"][name][start : start + k] = arr
        if sent_id is not None:
            k = len(sent_id)
            if start < 0 or start + k > self.n_rows:
                raise StoreError(f"writing rows {start}:{start + k} outside the declared {self.n_rows} rows")
            if word_pos is None or words is None or len(word_pos) != k or len(words) != k:
                raise StoreError("index rows need sent_id, word_pos and words of the same length")
            idx = self.group["index"]
            sl = slice(start, start + k)
            idx["sent_id"][sl] = np.asarray(sent_id, dtype=np.int32)
            idx["word_pos"][sl] = np.asarray(word_pos, dtype=np.int32)
            idx["word"][sl] = np.asarray(list(words), dtype=str)
            for col in self.label_columns:
                idx[f"label.{col}"][sl] = np.asarray(list((labels or {})[col]), dtype=str)

    def mark_done(self, region: str) -> None:
        """Record (atomically, as a file) that ``region`` is completely written."""
        marker = self.region_dir / f"{region}.done"
        tmp = marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("ok")
        os.replace(tmp, marker)

    def done_regions(self) -> set[str]:
        d = self.tmp / "_regions"
        return {p.name[: -len(".done")] for p in d.glob("*.done")} if d.exists() else set()

    def commit_regions(self, regions: Iterable[str]) -> ActivationStore:
        """Commit a store filled by :meth:`write_region`: only when every one of ``regions`` is marked
        done (the caller guarantees the regions cover all rows)."""
        missing = sorted(set(regions) - self.done_regions())
        if missing:
            raise StoreError(f"cannot commit {self.path}: {len(missing)} region(s) not done, e.g. {missing[:3]}")
        shutil.rmtree(self.tmp / "_regions", ignore_errors=True)
        self.rows_written = self.rows_durable = self.n_rows
        self.group.attrs["rows_written"] = self.n_rows
        return self.commit()

    def set_meta(self, **meta) -> None:
        self.group.attrs.update(meta)

    def commit(self) -> ActivationStore:
        """Mark complete and atomically move the store into place."""
        if self.rows_written == self.n_rows:
            self.flush()
        if self.rows_durable != self.n_rows:
            raise StoreError(f"commit with {self.rows_written} of {self.n_rows} rows written")
        self.group.attrs["complete"] = True
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return ActivationStore(self.path)

    def abort(self) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)


class ActivationStore:
    """Read side of a store. Nothing is loaded until sliced.

    >>> store = ActivationStore("acts.fgstore")
    >>> store["layer.3"][:100]          # numpy [100, 384]
    >>> X, index = store.matrix(["layer.2", "layer.3"], return_index=True)
    """

    def __init__(self, path: str | os.PathLike, allow_incomplete: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            if _partial(self.path).exists():
                raise StoreError(
                    f"{self.path} is incomplete (extraction was interrupted; a partial store exists at "
                    f"{_partial(self.path)}). Re-run the extraction to resume it."
                )
            raise StoreNotFoundError(f"no activation store at {self.path}")
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{self.path} is not a finegrain activation store: {e}") from e
        attrs = dict(self.group.attrs)
        if attrs.get("format") != "finegrain-activations":
            raise StoreError(f"{self.path} is not a finegrain activation store")
        if not attrs.get("complete") and not allow_incomplete:
            raise StoreError(f"{self.path} is incomplete ({attrs.get('rows_written')} of {attrs.get('n_rows')} rows)")
        self.meta = attrs
        self.layers: dict[str, int] = {k: int(v) for k, v in attrs["layers"].items()}
        self.n_rows = int(attrs["n_rows"])
        self.label_columns: list[str] = list(attrs.get("label_columns", []))
        self._index_cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, rows={self.n_rows}, level={self.level}, "
            f"layers={len(self.layers)}, neurons={sum(self.layers.values())}, dtype={self.dtype})"
        )

    def __len__(self) -> int:
        return self.n_rows

    @property
    def dtype(self) -> str:
        return self.meta.get("dtype", "float32")

    @property
    def level(self) -> str:
        """``"word"`` (one row per word) or ``"sentence"`` (one row per sentence)."""
        return self.meta.get("level", "word")

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise StoreError(f"unknown layer {layer!r}; store has {list(self.layers)}")

    def __getitem__(self, layer: str) -> zarr.Array:
        """The lazily sliced array of one layer: ``store["layer.3"][rows]``."""
        self._check_layer(layer)
        return self.group["acts"][layer]

    def neuron_index(self, layers: Sequence[str] | None = None) -> NeuronIndex:
        layers = list(layers) if layers is not None else list(self.layers)
        for lay in layers:
            self._check_layer(lay)
        units = self.meta.get("units") or {}
        return NeuronIndex([(lay, self.layers[lay]) for lay in layers],
                           units={k: units[k] for k in layers if k in units})

    def units(self, layer: str) -> list[int]:
        """The unit ids stored for ``layer`` (all of them unless extracted with ``neurons=``)."""
        return self.neuron_index([layer]).layer_units(layer)

    def positions(self, layer: str, units: Sequence[int]) -> list[int]:
        """Column positions in ``store[layer]`` of the given unit ids (the ids themselves unless only
        some units were stored)."""
        index = self.neuron_index([layer])
        try:
            return [index.column(Neuron(layer, int(u))) for u in units]
        except IndexError as e:
            raise StoreError(str(e)) from e

    def positions_of(self, neurons: Sequence[Neuron | str]) -> list[int]:
        """Column positions (inside their layer's array) of ``neurons``; a unit not stored is an error."""
        ns = [Neuron.parse(x) for x in neurons]
        by_layer: dict[str, list[int]] = {}
        for n in ns:
            self._check_layer(n.layer)
            by_layer.setdefault(n.layer, []).append(n.unit)
        pos = {lay: dict(zip(units, self.positions(lay, units))) for lay, units in by_layer.items()}
        return [pos[n.layer][n.unit] for n in ns]

    def view(
        self,
        layers: Sequence[str] | str | None = None,
        neurons: Sequence[Neuron | str] | None = None,
        label: str | None = None,
        rows=None,
        block_rows: int | None = 8192,
    ):
        """A lazy, picklable :class:`~finegrain.store.view.StoreView` of this store: the one input of every
        analysis. ``layers`` or ``neurons`` pick the columns, ``label`` the label column, ``rows`` the rows."""
        from finegrain.store.view import StoreView

        return StoreView(self, layers=layers, rows=rows, neurons=neurons, block_rows=block_rows, label=label)

    def matrix(
        self,
        layers: Sequence[str] | str | None = None,
        rows=None,
        neurons: Sequence[Neuron | str] | None = None,
        dtype=np.float32,
        return_index: bool = False,
    ):
        """Concatenate layers (or just ``neurons``) into one ``[rows, columns]`` matrix."""
        if isinstance(layers, str):
            layers = [layers]
        if neurons is not None:
            ns = [Neuron.parse(n) for n in neurons]
            by_layer: dict[str, list[int]] = {}
            for n in ns:
                self._check_layer(n.layer)
                by_layer.setdefault(n.layer, []).append(n.unit)
            parts = {lay: self._read(lay, rows, dtype)[:, self.positions(lay, units)]
                     for lay, units in by_layer.items()}
            cols = [parts[n.layer][:, by_layer[n.layer].index(n.unit)] for n in ns]
            X = np.stack(cols, axis=1) if cols else np.zeros((0, 0), dtype)
            return (X, ns) if return_index else X
        index = self.neuron_index(layers)
        X = np.concatenate([self._read(lay, rows, dtype) for lay in index.layers], axis=1)
        return (X, index) if return_index else X

    def _read(self, layer: str, rows, dtype) -> np.ndarray:
        arr = self[layer]
        if rows is None:
            out = arr[:]
        elif isinstance(rows, slice):
            out = arr[rows]
        else:
            rows = np.asarray(rows)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
            out = arr.get_orthogonal_selection((rows, slice(None))) if len(rows) else np.zeros((0, arr.shape[1]))
        return np.asarray(out, dtype=dtype)

    def iter_chunks(
        self, layers: Sequence[str] | str | None = None, chunk_rows: int = 8192, dtype=np.float32
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream ``(row_slice, matrix)`` blocks: memory stays one block whatever the store size."""
        for start in range(0, self.n_rows, chunk_rows):
            sl = slice(start, min(start + chunk_rows, self.n_rows))
            yield sl, self.matrix(layers, rows=sl, dtype=dtype)

    # -- index ---------------------------------------------------------------------------
    def index(self, column: str) -> np.ndarray:
        """An index column: ``sent_id``, ``word_pos``, ``word`` or a label column name."""
        if column not in self._index_cache:
            key = column if column in ("sent_id", "word_pos", "word") else f"label.{column}"
            if key not in self.group["index"]:
                raise StoreError(
                    f"store has no index column {column!r}; label columns: {self.label_columns}"
                )
            values = np.asarray(self.group["index"][key][:])
            if values.dtype.kind not in "iuf":
                # zarr returns numpy's StringDType, which sklearn and .astype(str) reject
                values = values.astype(object)
            self._index_cache[column] = values
        return self._index_cache[column]

    def labels(self, column: str) -> np.ndarray:
        if column not in self.label_columns:
            raise StoreError(f"store has no label column {column!r}; it has {self.label_columns}")
        return self.index(column)

    @property
    def words(self) -> np.ndarray:
        return self.index("word")

    @property
    def sent_ids(self) -> np.ndarray:
        return self.index("sent_id")

    def sentence(self, sent_id: int) -> list[str]:
        rows = np.flatnonzero(self.sent_ids == sent_id)
        return [str(w) for w in self.words[rows]]

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
    ) -> tuple[np.ndarray, ...]:
        """Row indices of train/dev/test splits made by *sentence*, never by token."""
        return split_by_sentence(self.sent_ids, fractions, seed)

    def info(self) -> str:
        lines = [
            f"store      {self.path}",
            f"model      {self.meta.get('model')}  (weights {str(self.meta.get('weights_hash'))[:12]})",
            f"level      {self.level}  aggregation={self.meta.get('aggregation')}",
            f"rows       {self.n_rows}  sentences={self.meta.get('n_sentences')}",
            f"dtype      {self.dtype}",
            f"labels     {', '.join(self.label_columns) or '-'}",
            f"finegrain  {self.meta.get('finegrain_version')}",
            "layers",
        ]
        lines += [f"  {name:<20} {size}" for name, size in self.layers.items()]
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        lines.append(f"on disk    {size / 1e6:.1f} MB")
        return "\n".join(lines)


def split_by_sentence(
    sent_ids: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Split row indices into groups by sentence id (all rows of a sentence go to one split)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    sent_ids = np.asarray(sent_ids)
    uniq = np.unique(sent_ids)
    if len(uniq) < len(fractions):
        raise ValueError(f"need at least {len(fractions)} sentences to split, have {len(uniq)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(uniq)
    bounds = np.round(np.cumsum(fractions)[:-1] * len(perm)).astype(int)
    groups = np.split(perm, bounds)
    return tuple(np.flatnonzero(np.isin(sent_ids, g)) for g in groups)


def open_store(path: str | os.PathLike) -> ActivationStore:
    return ActivationStore(path)
