"""On-disk, chunked activation store (zarr v3 layout).

Layout of ``NAME.fgstore/`` (a zarr group)::

    acts/<layer>      float16|float32 [n_rows, size], chunked by rows, uncompressed, crc32c per chunk
    index/sent_id     int32  [n_rows]   sentence index in the corpus
    index/word_pos    int32  [n_rows]   word position (-1 for sentence-level rows; for token rows, the
                                        word the token belongs to)
    index/word        str    [n_rows]   the word (the sentence text for sentence rows, the token for token rows)
    index/label.<col> str    [n_rows]   label columns (word- or sentence-level)
    attrs             metadata: model, weights hash, layers, aggregation, version, progress, complete, and
                      ``arrays``: the shape, chunk shape and data type of every array

Integrity (issue 16). Every chunk carries zarr's ``crc32c`` codec (4 bytes, CRC-32C of the chunk), checked
whenever the chunk is read; a complete store has every chunk of every array's grid (edge chunks and
chunks of fill values are written too), so a missing chunk is an error, never rows of zeros; on open the
arrays' metadata is checked against the store's (row counts, shapes, data types, chunk grids);
:meth:`ActivationStore.verify` (``finegrain info --verify``) reads every chunk. Every read failure is a
:class:`~finegrain.errors.StoreError` naming the store and the array. Chunks are read and written as
files here (:mod:`finegrain.store.files`), never through a symbolic link inside the store; zarr itself
reads every store.

Writing. A store is written to ``NAME.fgstore.partial`` by one process at a time (an exclusive lock,
``NAME.fgstore.lock``, held from the writer's creation to its commit: a second writer fails at once) and
renamed to ``NAME.fgstore`` only when every row is written and synced, so a half-written store is never
mistaken for a complete one. The ``.partial`` records its progress and its owner (process, host, start,
the extraction's fingerprint), so an interrupted extraction resumes, and only a ``.partial`` that this
extraction's writer verifiably left behind is resumed (:func:`finegrain.store.files.owner_status`).
``overwrite`` replaces only a finegrain store, and crash-safely: the new store is complete and fsynced
before the old one is moved aside, and the old one is removed only after the rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from finegrain.errors import ParameterError, StoreError, StoreNotFoundError
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.store.files import (
    FORMAT,
    GROUP_META,
    OWNER_FILE,
    ArrayMeta,
    ChunkFiles,
    ChunkReader,
    WriterLock,
    array_meta_json,
    aside_path,
    check_output,
    encode_strings,
    fsync_tree,
    json_bytes,
    open_in,
    owner_record,
    owner_status,
    read_json,
    recover,
    replace_store,
    walk_no_links,
    write_json_atomic,
)
from finegrain.store.view import StoreView  # view.py reads ActivationStore from this package only when called

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: crc32c on every chunk, raw int index columns, the arrays table in the metadata
PARTIAL_SUFFIX = ".partial"
INDEX_INT_COLUMNS = ("sent_id", "word_pos")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def array_name(name: str) -> str:
    """A layer or label-column name as one path component of its array (``/`` and ``\\`` escaped, and a
    name of only dots): names come from models and from label *file names*, and must never make a path
    outside the store. Names without those characters are unchanged (stores written before stay readable)."""
    out = str(name).replace("%", "%25").replace("/", "%2F").replace("\\", "%5C").replace("\x00", "%00")
    return out.replace(".", "%2E") if set(out) <= {"."} else out


def layer_key(layer: str) -> str:
    return f"acts/{array_name(layer)}"


def index_key(column: str) -> str:
    return f"index/{column}" if column in ("sent_id", "word_pos", "word") else f"index/label.{array_name(column)}"


def direct_io_default() -> bool:
    """``FINEGRAIN_DIRECT_IO`` (default on), read when a writer is created."""
    return os.environ.get("FINEGRAIN_DIRECT_IO", "1") != "0"


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


class _Streamed:
    """Pending rows already sent to their chunk file (:meth:`StoreWriter._stream`): a row count in place
    of the data. Reading them is a bug and fails loudly rather than writing something else."""

    def __init__(self, n: int, cols: tuple[int, ...]):
        self.n, self.cols = int(n), tuple(cols)

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.cols)

    def __getitem__(self, rows: slice) -> _Streamed:
        return _Streamed(len(range(self.n)[rows]), self.cols)

    def __array__(self, dtype=None, copy=None):
        raise StoreError("internal error: rows already streamed to their chunk file were read again")


class StoreWriter:
    """Writes an activation store row-block by row-block.

    ``n_rows`` and the layer sizes must be known up front (word counts are known before
    extraction), so arrays are allocated once and filled sequentially; memory use is one block.
    The writer holds the store's lock from its creation until :meth:`commit`, :meth:`abort` or
    :meth:`close` (also a context manager): use one writer per store and close it.
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
        direct_io: bool | None = None,
        index_columns: Sequence[str] = (),
    ):
        """``lazy``: create the zarr arrays on first use or :meth:`ensure_created` rather than here:
        extraction creates them in its writer thread, where the ~20 array creations (~50 ms) overlap the
        first forward passes. ``direct_io``: write chunk files with ``O_DIRECT`` where the file system
        allows (default: the environment variable ``FINEGRAIN_DIRECT_IO``, on unless it is ``0``).
        ``index_columns``: further int32 index columns (``token_word`` of token-level stores), given to
        :meth:`write` as ``extra``."""
        self.path = Path(path)
        self.tmp = _partial(self.path)
        if dtype not in ("float16", "float32"):
            raise ParameterError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if n_rows <= 0:
            raise StoreError("cannot write an empty store (0 rows)")
        self.layers = {str(k): int(v) for k, v in layers.items()}
        self.n_rows = int(n_rows)
        self.label_columns = list(label_columns)
        self.index_columns = list(index_columns)
        bad = [c for c in self.index_columns if c in ("sent_id", "word_pos", "word") or not str(c).isidentifier()]
        if bad:
            raise ParameterError(f"index column names must be new identifiers, got {bad}")
        self.meta = dict(meta or {})
        self.resumed_rows = 0
        self._direct = direct_io_default() if direct_io is None else bool(direct_io)
        check_output(self.path, overwrite)  # fail before taking anything
        self._lock: WriterLock | None = WriterLock(self.path)
        try:
            note = recover(self.path, self.tmp)
            if note:
                log.warning("%s", note)
            check_output(self.path, overwrite)  # again, now that no other writer can change it
            self._group, self._create_args = None, (dtype, chunk_rows)
            self._attrs: dict = {}
            self._root: dict = {}
            self.owner = owner_record(self.meta.get("fingerprint"))
            self._init_progress(0)
            if self._take_partial(resume):
                self._open_existing()
                self._write_owner()
                self.resumed_rows = int(self._attrs.get("rows_written", 0))
                self._init_progress(self.resumed_rows)
            elif not lazy:
                self.ensure_created()
        except BaseException:
            self.close()
            raise

    def _init_progress(self, rows: int) -> None:
        # rows_written: accepted by write(); rows_durable: on disk (a chunk boundary until the end)
        self.rows_written = self.rows_durable = rows
        self._pending: dict[str, list[np.ndarray]] = {}
        self._arrays: dict[str, ArrayMeta] = {}
        self._zarr_arrays: dict = {}
        self._files = ChunkFiles(direct=self._direct)

    # -- the partial store -----------------------------------------------------------------
    def _signature(self) -> dict:
        sig = {
            "layers": self.layers,
            "n_rows": self.n_rows,
            "label_columns": self.label_columns,
            "fingerprint": self.meta.get("fingerprint"),
        }
        if self.index_columns:
            sig["index_columns"] = self.index_columns
        return sig

    def meta_value(self, key: str, default=None):
        """A value of the partial store's metadata (e.g. what a resumed run recorded)."""
        return self._attrs.get(key, default)

    def _take_partial(self, resume: bool) -> bool:
        """Whether to resume the existing ``.partial`` (else it is replaced when the arrays are created)."""
        if not os.path.lexists(self.tmp):
            return False
        st = os.lstat(self.tmp)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{self.tmp} is {'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a directory'}"
                             f"; refusing to write into it (remove it to extract into {self.path})")
        try:
            rec = read_json(self.tmp, OWNER_FILE, "owner record")
        except StoreError:
            rec = None
        verdict, why = owner_status(rec, self.meta.get("fingerprint"))
        if verdict == "live" or (verdict == "unknown" and resume):
            raise StoreError(f"cannot use {self.tmp}: {why}. If that process is gone, delete {self.tmp}"
                             + ("" if verdict == "live" else " or pass resume=False to start over"))
        if verdict == "resume" and resume:
            try:
                attrs = read_json(self.tmp, "zarr.json").get("attributes", {})
            except StoreError as e:
                verdict, why = "restart", f"its metadata is unreadable ({e})"
            else:
                if attrs.get("format") != FORMAT or attrs.get("format_version") != FORMAT_VERSION:
                    verdict, why = "restart", "it was written by another version of the store format"
                elif attrs.get("signature") != self._signature():
                    verdict, why = "restart", "its layout differs (layers, rows or label columns)"
        if verdict == "resume" and resume:
            for _ in walk_no_links(self.tmp):  # nothing inside may lead elsewhere
                pass
            log.info("resuming %s: %s", self.tmp, why)
            return True
        if resume:
            log.info("not resuming %s: %s; it is replaced", self.tmp, why)
        return False

    def _open_existing(self) -> None:
        self._root = read_json(self.tmp, "zarr.json")
        self._attrs = dict(self._root.get("attributes") or {})
        self._group = True  # created: the arrays exist

    def _write_owner(self) -> None:
        write_json_atomic(self.tmp, OWNER_FILE, self.owner)

    def _write_attrs(self) -> None:
        """The root ``zarr.json`` with the current attributes, atomically and synced (the progress it
        records is written after the data it counts)."""
        root = dict(self._root)
        root["attributes"] = self._attrs
        write_json_atomic(self.tmp, "zarr.json", root)

    @property
    def owner_token(self) -> str:
        """The partial's owner token: region writers (:meth:`open_partial`) check it."""
        return self.owner["token"]

    @property
    def group(self):
        """The partial store as a zarr group (opened on demand; writes go through this writer)."""
        self.ensure_created()
        import zarr  # heavy (~0.5 s): only writers and string columns need zarr itself

        return zarr.open_group(str(self.tmp), mode="r+")

    def ensure_created(self) -> None:
        """Create the partial store now if it is not yet (a lazy writer's first use does it too)."""
        if self._group is None:
            if os.path.lexists(self.tmp):
                if os.path.islink(self.tmp):
                    raise StoreError(f"{self.tmp} is a symbolic link; refusing to replace it")
                shutil.rmtree(self.tmp)
            self._create(*self._create_args)

    def _create(self, dtype: str, chunk_rows: int) -> None:
        """Create the partial store: every array's ``zarr.json`` as zarr v3 writes it (written here, not
        through zarr: ~20 array creations cost zarr ~4 ms of CPU each), synced, then the root metadata."""
        for name in [*self.layers, *self.label_columns]:
            if not isinstance(name, str) or not name:
                raise ParameterError(f"layer and label column names must be non-empty strings, got {name!r}")
        n = self.n_rows
        # chunks of about chunk_rows that tile the rows evenly: zarr stores an edge chunk at full size,
        # so a last chunk of a few rows would cost as much to write as a whole one
        cr = max(1, -(-n // -(-n // max(1, chunk_rows))))
        specs = [(layer_key(name), (n, size), (cr, size), dtype) for name, size in self.layers.items()]
        specs += [(f"index/{col}", (n,), (cr,), "int32") for col in [*INDEX_INT_COLUMNS, *self.index_columns]]
        specs += [(index_key(col), (n,), (cr,), "string") for col in ["word", *self.label_columns]]
        os.mkdir(self.tmp)
        files = self._files
        files.seen("")
        for group in ("acts", "index"):
            files.write_bytes(self.tmp, f"{group}/zarr.json", json_bytes(GROUP_META))
        arrays = {}
        for key, shape, chunks, data_type in specs:
            meta = array_meta_json(shape, chunks, data_type)
            files.write_bytes(self.tmp, f"{key}/zarr.json", json_bytes(meta))
            self._arrays[key] = ArrayMeta.parse(key, meta, self.tmp)
            arrays[key] = {"shape": list(shape), "chunks": list(chunks), "data_type": data_type}
        files.sync()  # the arrays exist on disk before the root metadata says they do
        self._root = dict(GROUP_META)
        self._attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "signature": self._signature(),
            "layers": self.layers,
            "n_rows": n,
            "label_columns": self.label_columns,
            "index_columns": self.index_columns,
            "dtype": dtype,
            "checksums": "crc32c",
            "arrays": arrays,
            "rows_written": 0,
            "complete": False,
            **{k: v for k, v in self.meta.items() if k not in ("layers", "n_rows", "arrays")},
        }
        self._write_attrs()
        self._write_owner()
        self._group = True

    # -- writing -------------------------------------------------------------------------
    def write(
        self,
        acts: dict[str, np.ndarray],
        sent_id: np.ndarray,
        word_pos: np.ndarray,
        words: Sequence[str],
        labels: dict[str, Sequence[str]] | None = None,
        extra: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append a block of rows (in order). ``acts[layer]`` is ``[rows, size]``; ``extra``: the
        writer's ``index_columns``.

        Rows reach the disk in whole chunks: zarr rewrites a whole chunk when part of it is written
        (read, modify, write), which made unaligned appends about 3x slower than the data's size
        needs. The tail of an incomplete chunk waits in memory (at most one chunk per array) until
        the next block completes it, :meth:`flush` or :meth:`commit`.
        """
        k = len(sent_id)
        start, stop = self.rows_written, self.rows_written + k
        if stop > self.n_rows:
            raise StoreError(f"writing rows {start}:{stop} past the declared {self.n_rows} rows")
        self._check_acts(acts, k)
        if len(word_pos) != k or len(words) != k:
            raise StoreError(f"index columns have {len(word_pos)} / {len(words)} rows, the block {k}")
        block = {layer_key(name): np.asarray(arr) for name, arr in acts.items()}
        block.update(self._index_block(sent_id, word_pos, words, labels, k, extra))
        for key, arr in block.items():
            self._pending.setdefault(key, []).append(arr)
        self.rows_written = stop
        self._flush(final=False)

    def _check_acts(self, acts: dict[str, np.ndarray], k: int) -> None:
        missing = set(self.layers) - set(acts)
        if missing:
            raise StoreError(f"block is missing layers {sorted(missing)}")
        for name, arr in acts.items():
            if name not in self.layers:
                raise StoreError(f"unknown layer {name!r}; store has {list(self.layers)}")
            if arr.shape != (k, self.layers[name]):
                raise StoreError(f"layer {name}: block shape {arr.shape}, expected {(k, self.layers[name])}")

    def _index_block(self, sent_id, word_pos, words, labels, k: int, extra=None) -> dict[str, np.ndarray]:
        block = {
            "index/sent_id": np.asarray(sent_id, dtype=np.int32),
            "index/word_pos": np.asarray(word_pos, dtype=np.int32),
            "index/word": np.asarray(list(words), dtype=str),
        }
        for col in self.label_columns:
            values = list((labels or {}).get(col, ()))
            if len(values) != k:
                raise StoreError(f"label column {col!r} has {len(values)} values for {k} rows")
            block[index_key(col)] = np.asarray(values, dtype=str)
        for col in self.index_columns:
            values = np.asarray((extra or {}).get(col, ()), dtype=np.int32)
            if len(values) != k:
                raise StoreError(f"index column {col!r} has {len(values)} values for {k} rows")
            block[f"index/{col}"] = values
        return block

    def flush(self) -> None:
        """Write every accepted row to disk (the last chunk partially) and record the progress."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        """Write what is pending: whole chunks (or with ``final`` every row), synced before the progress
        that counts them is recorded. Otherwise the rows of each raw array's unfinished chunk are streamed
        into its file (:meth:`ChunkFiles.stream`), so the rows left to write when the last block arrives
        are few; string columns wait for their chunk to complete (a zstd frame is written whole)."""
        start = self.rows_durable
        if self.rows_written == start:
            return
        self.ensure_created()
        end = self.rows_written
        if not final:  # the last whole chunk of every array (index and activations alike)
            for key in self._pending:
                chunk = self._array(key).chunks[0]
                end = min(end, (self.rows_written // chunk) * chunk)
        if end > start:
            for key, parts in self._pending.items():
                head, self._pending[key] = _split_rows(parts, end - start)
                (self._write_final if final else self._write_rows)(key, start, end, head)
        if not final:
            self._stream(max(start, end))
        self._files.sync()  # data and new directory entries durable: then the progress that counts them
        if end > start:
            self.rows_durable = end
            self._attrs["rows_written"] = end  # written after the data: progress never overstates
            self._write_attrs()

    def _stream(self, row: int) -> None:
        """Send the pending rows (from ``row``, a chunk boundary) of each raw array to its chunk file."""
        for key, parts in self._pending.items():
            meta = self._array(key)
            chunk = meta.chunks[0]
            if not meta.raw or not meta.checksummed or row % chunk or not parts:
                continue
            rel = meta.chunk_key((row // chunk,) + (0,) * (len(meta.shape) - 1))
            sent = self._files.streamed_rows(rel)
            _, new = _split_rows(parts, sent)
            if new:
                self._files.stream(self.tmp, rel, new, meta.dtype)
            # what is streamed is never read again (the chunk's last write skips it): only its row count is
            # kept, so that the caller's arrays are free for reuse (extraction's BufferPool) at once
            self._pending[key] = [_Streamed(sum(len(p) for p in parts), parts[0].shape[1:])]

    def _write_final(self, key: str, start: int, end: int, parts: list[np.ndarray]) -> None:
        """Rows ``start:end`` of one array where ``end`` may lie inside a chunk: the whole chunks as
        :meth:`_write_rows` writes them; a last chunk that begins in this block is written whole, its
        rows past ``end`` the fill value (rows after the progress record are never read: a resumed or
        continued writer writes them again)."""
        meta = self._array(key)
        chunk = meta.chunks[0]
        hi = end if end == meta.shape[0] else (end // chunk) * chunk
        if hi > start:
            head, parts = _split_rows(parts, hi - start)
            self._write_rows(key, start, hi, head)
        if end > max(start, hi):
            if hi >= start:  # the chunk begins here: nothing of it is on disk to keep
                self._write_chunk(meta, hi, parts)
            else:
                self._zarr_write(key, start, end, parts)

    def _write_rows(self, key: str, start: int, end: int, parts: list[np.ndarray]) -> None:
        """Rows ``start:end`` of one array (given as consecutive blocks). Whole chunks are written as
        their files directly in zarr v3's chunk layout (:meth:`_write_chunk`), which halves the CPU cost
        of zarr's write path (see :class:`~finegrain.store.files.ChunkFiles`); a partial chunk goes through
        zarr (read, modify, write: only a resumed or region writer writes one)."""
        meta = self._array(key)
        chunk = meta.chunks[0]
        if end > start:
            lo = -(-start // chunk) * chunk  # the first chunk boundary at or after start
            hi = end if end == meta.shape[0] else (end // chunk) * chunk  # the edge chunk counts as whole
            if lo < hi:
                head, parts = _split_rows(parts, lo - start)
                if head:
                    self._zarr_write(key, start, lo, head)
                for c0 in range(lo, hi, chunk):
                    pieces, parts = _split_rows(parts, min(chunk, hi - c0))
                    self._write_chunk(meta, c0, pieces)
                start = hi
        if end > start:
            self._zarr_write(key, start, end, parts)

    def _write_chunk(self, meta: ArrayMeta, c0: int, pieces: list[np.ndarray]) -> None:
        """The chunk that begins at row ``c0``, written whole from ``pieces`` (its first rows; the rest
        are fill values): raw arrays as bytes + crc32c, string columns as vlen-utf8 + zstd + crc32c."""
        chunk = meta.chunks[0]
        rel = meta.chunk_key((c0 // chunk,) + (0,) * (len(meta.shape) - 1))
        if meta.raw:
            self._files.write(self.tmp, rel, pieces, chunk, meta.dtype, meta.checksummed)
        elif meta.vlen_strings:
            self._files.write_bytes(self.tmp, rel, encode_strings(pieces, chunk))
        else:  # codecs finegrain does not write itself
            self._zarr_write(meta.key, c0, c0 + sum(len(p) for p in pieces), pieces)

    def _zarr_write(self, key: str, start: int, end: int, parts: list[np.ndarray]) -> None:
        if key not in self._zarr_arrays:
            # every chunk is written, also one of fill values only: a missing chunk is then always damage
            self._zarr_arrays[key] = self.group[key].with_config({"write_empty_chunks": True})
        arr = self._zarr_arrays[key]
        arr[start:end] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        meta = self._array(key)
        chunk = meta.chunks[0]
        for c in range(start // chunk, -(-end // chunk)):  # synced now: the progress recorded next counts them
            rel = meta.chunk_key((c,) + (0,) * (len(meta.shape) - 1))
            fd = open_in(self.tmp, rel)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._files.note_file(self.tmp, rel)  # its directories are synced with the next sync
            self._files.synced.add(rel)

    def _array(self, key: str) -> ArrayMeta:
        """The metadata of array ``key`` (read once per writer)."""
        if key not in self._arrays:
            self.ensure_created()
            self._arrays[key] = ArrayMeta.parse(key, read_json(self.tmp, f"{key}/zarr.json"), self.tmp)
        return self._arrays[key]

    def rewind(self, row: int) -> None:
        """Continue writing at ``row`` (at most the rows already on disk; nothing may be pending):
        a resumed extraction restarts at the beginning of a buffer, which may lie before the last
        chunk boundary on disk; those rows are written again with the same values."""
        row = int(row)
        if not 0 <= row <= self.rows_durable or self.rows_written != self.rows_durable:
            raise StoreError(f"cannot rewind to row {row}: {self.rows_durable} rows on disk, "
                             f"{self.rows_written - self.rows_durable} pending")
        self._files.abandon()  # a chunk file being streamed is rewritten from its first row
        self.rows_written = self.rows_durable = row
        self._pending = {}

    # -- region writing (several writers, one store) -----------------------------------------
    @classmethod
    def open_partial(cls, path: str | os.PathLike, token: str | None = None,
                     direct_io: bool | None = None) -> StoreWriter:
        """Open the existing partial store of ``path`` (created by another ``StoreWriter``, which holds
        the lock) to fill regions of it with :meth:`write_region`, e.g. from another process or machine.
        ``token``: the creating writer's :attr:`owner_token`; the partial must carry it (so a region
        writer never writes into a partial that another run created). Links inside are refused."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.tmp = _partial(self.path)
        if not os.path.lexists(self.tmp):
            raise StoreError(f"no partial store at {self.tmp} to write into")
        if os.path.islink(self.tmp) or not self.tmp.is_dir():
            raise StoreError(f"{self.tmp} is not a partial store directory (a link or a file); refusing it")
        for _ in walk_no_links(self.tmp):
            pass
        self._open_existing()
        attrs = self._attrs
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{self.tmp} is not a finegrain activation store")
        try:
            rec = read_json(self.tmp, OWNER_FILE, "owner record")
        except StoreError:
            rec = {}
        if token is not None and rec.get("token") != token:
            raise StoreError(f"{self.tmp} is not the partial store this run created (its owner record differs)")
        self.owner = rec
        self._lock = None  # the creating writer holds the lock
        self._direct = direct_io_default() if direct_io is None else bool(direct_io)
        self.layers = {k: int(v) for k, v in attrs["layers"].items()}
        self.n_rows = int(attrs["n_rows"])
        self.label_columns = list(attrs.get("label_columns", []))
        self.index_columns = list(attrs.get("index_columns", []))
        self.meta = attrs
        self.resumed_rows = int(attrs.get("rows_written", 0))
        self._init_progress(self.resumed_rows)
        return self

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of the activation arrays: concurrent writers must own whole chunks."""
        return self._array(layer_key(next(iter(self.layers)))).chunks[0]

    @property
    def index_chunk_rows(self) -> int:
        return self._array("index/sent_id").chunks[0]

    @property
    def region_dir(self) -> Path:
        """A scratch directory inside the partial store (markers, side files); removed at commit."""
        self.ensure_created()
        d = self.tmp / "_regions"
        if os.path.islink(d):
            raise StoreError(f"{d} is a symbolic link; refusing to use it")
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
        extra: dict[str, np.ndarray] | None = None,
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
            self._check_acts(acts, k)
            if k:
                for name, arr in acts.items():
                    self._write_rows(layer_key(name), start, start + k, [np.asarray(arr)])
        if sent_id is not None:
            k = len(sent_id)
            if start < 0 or start + k > self.n_rows:
                raise StoreError(f"writing rows {start}:{start + k} outside the declared {self.n_rows} rows")
            if word_pos is None or words is None or len(word_pos) != k or len(words) != k:
                raise StoreError("index rows need sent_id, word_pos and words of the same length")
            for key, arr in self._index_block(sent_id, word_pos, words, labels, k, extra).items():
                self._write_rows(key, start, start + k, [arr])
        self._files.sync()  # durable before the caller marks the region done

    def mark_done(self, region: str) -> None:
        """Record (atomically, as a file) that ``region`` is completely written."""
        marker = self.region_dir / f"{region}.done"
        tmp = marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("ok")
        os.replace(tmp, marker)

    def done_regions(self) -> set[str]:
        d = self.tmp / "_regions"
        return {p.name[: -len(".done")] for p in d.glob("*.done")} if d.is_dir() and not d.is_symlink() else set()

    def commit_regions(self, regions: Iterable[str]) -> ActivationStore:
        """Commit a store filled by :meth:`write_region`: only when every one of ``regions`` is marked
        done (the caller guarantees the regions cover all rows)."""
        missing = sorted(set(regions) - self.done_regions())
        if missing:
            raise StoreError(f"cannot commit {self.path}: {len(missing)} region(s) not done, e.g. {missing[:3]}")
        self.rows_written = self.rows_durable = self.n_rows
        return self.commit()

    def set_meta(self, **meta) -> None:
        self.ensure_created()
        self._attrs.update(meta)
        self._write_attrs()

    def commit(self) -> ActivationStore:
        """Mark complete and move the store into place, crash-safely: every file of the new store is
        synced, then marked complete (synced), then an old store at the path is moved aside, the new one
        renamed into place and the directory synced, and only then the old one removed."""
        if self.rows_written == self.n_rows:
            self.flush()
        if self.rows_durable != self.n_rows:
            raise StoreError(f"commit with {self.rows_written} of {self.n_rows} rows written")
        if self._lock is None:
            raise StoreError(f"{self.path}: only the writer that created the partial store (and holds its lock) "
                             f"commits it")
        self.ensure_created()
        shutil.rmtree(self.tmp / "_regions", ignore_errors=True)
        (self.tmp / OWNER_FILE).unlink(missing_ok=True)  # the owner record describes a partial store only
        self._files.sync()
        # a walk (~1 ms) syncs what this writer did not write itself (a resumed partial's directories),
        # and the store's own directory, whose entries changed after its last sync
        fsync_tree(self.tmp, skip=self._files.synced - {""})
        self._attrs["rows_written"] = self.n_rows
        self._attrs["complete"] = True
        self._write_attrs()
        replace_store(self.tmp, self.path)
        self.close()
        return ActivationStore(self.path)

    def abort(self) -> None:
        """Remove the partial store and release the lock."""
        try:
            if os.path.lexists(self.tmp) and not os.path.islink(self.tmp):
                shutil.rmtree(self.tmp)
        finally:
            self.close()

    def close(self) -> None:
        """Release the store's lock (the partial store stays, to be resumed); idempotent."""
        files = getattr(self, "_files", None)
        if files is not None:
            files.abandon()  # files left unfinished: the progress record does not count them
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StoreArray:
    """One activation (or integer index) array of a store, sliced like a zarr array (``[rows]``,
    ``[rows, cols]``, :meth:`get_orthogonal_selection`) and read through the checked chunk reader: every
    chunk is verified (present, exact size, crc32c) as it is read."""

    def __init__(self, reader: ChunkReader):
        self._r = reader

    @property
    def shape(self) -> tuple[int, ...]:
        return self._r.meta.shape

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._r.meta.chunks

    @property
    def dtype(self) -> np.dtype:
        return self._r.meta.dtype.newbyteorder("=")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<StoreArray {self._r.meta.key} shape={self.shape} dtype={self.dtype}>"

    def _rows(self, sel) -> np.ndarray | slice:
        n = self.shape[0]
        if isinstance(sel, slice):
            start, stop, step = sel.indices(n)
            return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
        rows = np.asarray(sel)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise ParameterError(f"a boolean row mask needs {n} entries, got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.dtype.kind not in "iu":
            raise ParameterError(f"rows must be integers, a slice or a boolean mask, got {rows.dtype}")
        rows = rows.astype(np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return rows

    def read(self, rows=None, cols=None) -> np.ndarray:
        """Rows (``None``: all, a slice, integers or a mask) and columns (``None``: all) as an array."""
        r = self._rows(slice(None) if rows is None else rows)
        if cols is not None and self.ndim == 1:
            raise ParameterError("a 1-D array has no columns to select")
        if isinstance(r, slice):
            return self._r.slice(r.start, r.stop, cols)
        return self._r.rows(r, cols)

    def __getitem__(self, sel) -> np.ndarray:
        if not isinstance(sel, tuple):
            sel = (sel,)
        if len(sel) > self.ndim or not sel:
            raise IndexError(f"too many indices for a {self.ndim}-D array")
        rows, cols = sel[0], (sel[1] if len(sel) > 1 else None)
        squeeze_row = isinstance(rows, int | np.integer)
        if squeeze_row:
            rows = [int(rows)]
        squeeze_col = isinstance(cols, int | np.integer)
        if squeeze_col:
            cols = [int(cols)]
        if isinstance(cols, slice) and cols == slice(None):
            cols = None
        out = self.read(rows, None if cols is None else (cols if isinstance(cols, slice) else np.asarray(cols)))
        if squeeze_col:
            out = out[:, 0]
        return out[0] if squeeze_row else out

    def get_orthogonal_selection(self, sel) -> np.ndarray:
        return self[sel]

    def __array__(self, dtype=None, copy=None):
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)


class ActivationStore:
    """Read side of a store. Nothing is loaded until sliced; every chunk is checked as it is read.

    >>> store = ActivationStore("acts.fgstore")
    >>> store["layer.3"][:100]          # numpy [100, 384]
    >>> X, index = store.matrix(["layer.2", "layer.3"], return_index=True)
    """

    def __init__(self, path: str | os.PathLike, allow_incomplete: bool = False):
        self.path = Path(path)
        if not os.path.lexists(self.path):
            if os.path.lexists(aside_path(self.path)):
                raise StoreError(f"{self.path} is missing: a replacement of it was interrupted and the previous "
                                 f"store is at {aside_path(self.path)} (re-run the extraction to finish it, or "
                                 f"rename that back)")
            if os.path.lexists(_partial(self.path)):
                raise StoreError(
                    f"{self.path} is incomplete (extraction was interrupted; a partial store exists at "
                    f"{_partial(self.path)}). Re-run the extraction to resume it."
                )
            raise StoreNotFoundError(f"no activation store at {self.path}")
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is not a finegrain activation store (not a directory)")
        root = read_json(self.path, "zarr.json", "store metadata")
        attrs = root.get("attributes") or {}
        if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path} is not a finegrain activation store")
        version = attrs.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise StoreError(f"{self.path} has store format {version!r}; this finegrain reads up to "
                             f"{FORMAT_VERSION} (upgrade finegrain)")
        if not attrs.get("complete") and not allow_incomplete:
            raise StoreError(f"{self.path} is incomplete ({attrs.get('rows_written')} of {attrs.get('n_rows')} rows)")
        self.meta = attrs
        try:
            self.layers: dict[str, int] = {str(k): int(v) for k, v in attrs["layers"].items()}
            self.n_rows = int(attrs["n_rows"])
            self.label_columns: list[str] = [str(c) for c in attrs.get("label_columns", [])]
            self.index_columns: list[str] = [str(c) for c in attrs.get("index_columns", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"{self.path}: malformed store metadata ({type(e).__name__}: {e})") from None
        self.format_version = version
        self._index_cache: dict[str, np.ndarray] = {}
        self._readers: dict[str, ChunkReader] = {}
        self._array_meta = self._check_arrays()

    # -- metadata checks ---------------------------------------------------------------------
    def _expected_arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{key: (data type, shape)}`` of every array the metadata promises."""
        n = self.n_rows
        out = {layer_key(lay): (self.dtype, (n, size)) for lay, size in self.layers.items()}
        out.update({f"index/{c}": ("int32", (n,)) for c in [*INDEX_INT_COLUMNS, *self.index_columns]})
        out.update({index_key(c): ("string", (n,)) for c in ["word", *self.label_columns]})
        return out

    def _check_arrays(self) -> dict[str, ArrayMeta]:
        """Every array's ``zarr.json`` against the store's metadata (shapes, row counts, data types,
        chunk grids, checksums): a store whose parts disagree is an error on open, not garbage later."""
        table = self.meta.get("arrays") or {}
        found: dict[str, ArrayMeta] = {}
        for key, (data_type, shape) in self._expected_arrays().items():
            m = ArrayMeta.parse(key, read_json(self.path, f"{key}/zarr.json", f"array {key}: metadata"), self.path)
            where = f"{self.path}: array {key}"
            if m.shape[:1] != shape[:1]:
                raise StoreError(f"{where} has {m.shape[0] if m.shape else 0} rows; the store's metadata says "
                                 f"{shape[0]} (the store is damaged or mixed from two stores)")
            if m.shape != shape:
                raise StoreError(f"{where} has shape {m.shape}; the store's metadata says {shape}")
            if m.data_type != data_type:
                raise StoreError(f"{where} holds {m.data_type}; the store's metadata says {data_type}")
            if m.chunks[1:] != m.shape[1:]:
                raise StoreError(f"{where} is chunked {m.chunks}; a store's arrays are chunked by rows only")
            if self.format_version >= 2 and not m.checksummed:
                raise StoreError(f"{where} has no crc32c codec; format {self.format_version} requires one")
            if key in table and (list(m.shape) != table[key].get("shape") or list(m.chunks) != table[key].get("chunks")
                                 or m.data_type != table[key].get("data_type")):
                raise StoreError(f"{where}: its zarr.json ({m.shape}, chunks {m.chunks}, {m.data_type}) differs from "
                                 f"the store's table of arrays {table[key]}")
            if data_type != "string" and key.startswith("acts/") and not m.raw:
                raise StoreError(f"{where} has codecs {list(m.codecs)}; activations are stored uncompressed")
            found[key] = m
        return found

    def _reader(self, key: str) -> ChunkReader:
        if key not in self._readers:
            self._readers[key] = ChunkReader(self.path, self._array_meta[key])
        return self._readers[key]

    def __getstate__(self) -> dict:
        return {"path": self.path, "allow_incomplete": not self.meta.get("complete")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], allow_incomplete=state["allow_incomplete"])

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
        """``"word"`` (one row per word), ``"token"`` (one row per model token) or ``"sentence"``."""
        return self.meta.get("level", "word")

    @property
    def group(self):
        """The store as a read-only zarr group (zarr reads every finegrain store; finegrain's own reads
        go through the checked chunk reader instead)."""
        import zarr  # heavy (~0.5 s): only string columns and this property need zarr itself

        return zarr.open_group(str(self.path), mode="r")

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise StoreError(f"unknown layer {layer!r}; store has {list(self.layers)}")

    def __getitem__(self, layer: str) -> StoreArray:
        """The lazily sliced array of one layer: ``store["layer.3"][rows]``."""
        self._check_layer(layer)
        return StoreArray(self._reader(layer_key(layer)))

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
            parts = {lay: self._read(lay, rows, dtype, cols=np.asarray(self.positions(lay, units)))
                     for lay, units in by_layer.items()}
            cols = [parts[n.layer][:, by_layer[n.layer].index(n.unit)] for n in ns]
            X = np.stack(cols, axis=1) if cols else np.zeros((0, 0), dtype)
            return (X, ns) if return_index else X
        index = self.neuron_index(layers)
        X = np.concatenate([self._read(lay, rows, dtype) for lay in index.layers], axis=1)
        return (X, index) if return_index else X

    def _read(self, layer: str, rows, dtype, cols=None) -> np.ndarray:
        return np.asarray(self[layer].read(rows, cols), dtype=dtype)

    def iter_chunks(
        self, layers: Sequence[str] | str | None = None, chunk_rows: int = 8192, dtype=np.float32
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream ``(row_slice, matrix)`` blocks: memory stays one block whatever the store size."""
        for start in range(0, self.n_rows, chunk_rows):
            sl = slice(start, min(start + chunk_rows, self.n_rows))
            yield sl, self.matrix(layers, rows=sl, dtype=dtype)

    # -- index ---------------------------------------------------------------------------
    def index(self, column: str) -> np.ndarray:
        """An index column: ``sent_id``, ``word_pos``, ``word``, a label column name, or one of the
        store's ``index_columns`` (``token_word``: the word of each row of a token-level store)."""
        if column not in self._index_cache:
            key = f"index/{column}" if column in self.index_columns else index_key(column)
            if key not in self._array_meta:
                raise StoreError(
                    f"store has no index column {column!r}; label columns: {self.label_columns}"
                )
            meta = self._array_meta[key]
            values = self._reader(key).slice(0, self.n_rows) if meta.raw else self._zarr_column(key)
            if values.dtype.kind not in "iuf":
                # zarr returns numpy's StringDType, which sklearn and .astype(str) reject
                values = values.astype(object)
            self._index_cache[column] = values
        return self._index_cache[column]

    def _zarr_column(self, key: str) -> np.ndarray:
        """An array whose codecs need zarr (strings): every chunk is checked to be there, as a regular
        file, first (zarr alone would read a missing chunk as fill values); zarr checks the crc32c."""
        self._reader(key).present()
        import zarr  # heavy (~0.5 s): only string columns need zarr's codecs
        from zarr.storage import LocalStore

        try:
            values = np.asarray(zarr.open_array(LocalStore(str(self.path), read_only=True), path=key, mode="r")[:])
        except Exception as e:  # noqa: BLE001 - any decoding failure is damage; say where
            raise StoreError(f"{self.path}: array {key} cannot be read ({type(e).__name__}: {e}); "
                             f"the store is damaged") from None
        if len(values) != self.n_rows:
            raise StoreError(f"{self.path}: array {key} has {len(values)} rows, the store {self.n_rows}")
        return values

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

    # -- summary and verification ---------------------------------------------------------------
    def disk_bytes(self) -> int:
        """Bytes of the store's chunks on disk (from the metadata for raw arrays: no directory walk)."""
        return sum(self._reader(key).disk_bytes() for key in self._array_meta)

    def verify(self, progress: bool | None = None) -> dict:
        """Read every chunk of every array and check it (present, a regular file, exact size, crc32c):
        ``{"arrays", "chunks", "bytes", "checksummed"}``; the first damaged chunk is a :class:`StoreError`
        naming the store, the array and the chunk. Cost: one read of the store (~1 GB/s from the page
        cache; the checksum itself runs at ~10 GB/s)."""
        from tqdm.auto import tqdm  # heavy (~0.1 s): only verification shows a bar, `info` starts without

        keys = list(self._array_meta)
        n_chunks = sum(self._array_meta[k].n_chunks for k in keys)
        total = 0
        bar = tqdm(total=n_chunks, desc="verify", unit="chunk", disable=None if progress is None else not progress)
        try:
            for key in keys:
                total += self._reader(key).verify()
                bar.update(self._array_meta[key].n_chunks)
        finally:
            bar.close()
        return {"arrays": len(keys), "chunks": n_chunks, "bytes": total,
                "checksummed": all(m.checksummed for m in self._array_meta.values())}

    def info(self) -> str:
        lines = [
            f"store      {self.path}",
            f"model      {self.meta.get('model')}  (weights {str(self.meta.get('weights_hash'))[:12]})",
            f"level      {self.level}  aggregation={self.meta.get('aggregation')}",
            f"rows       {self.n_rows}  sentences={self.meta.get('n_sentences')}",
            f"dtype      {self.dtype}",
            f"labels     {', '.join(self.label_columns) or '-'}",
            f"finegrain  {self.meta.get('finegrain_version')}  (store format {self.format_version}, "
            + ("crc32c per chunk)" if self.format_version >= 2 else "no checksums: re-extract to get them)"),
        ]
        if self.meta.get("tokenless_words"):
            lines.append(f"note       {self.meta['tokenless_words']} word(s) produced no model token; "
                         f"their rows are zero (e.g. rows {self.meta.get('tokenless_rows', [])[:5]})")
        lines.append("layers")
        lines += [f"  {name:<20} {size}" for name, size in self.layers.items()]
        lines.append(f"on disk    {self.disk_bytes() / 1e6:.1f} MB")
        return "\n".join(lines)


def split_by_sentence(
    sent_ids: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Split row indices into groups by sentence id (all rows of a sentence go to one split)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ParameterError(f"split fractions must sum to 1, got {fractions}")
    sent_ids = np.asarray(sent_ids)
    uniq = np.unique(sent_ids)
    if len(uniq) < len(fractions):
        raise ParameterError(f"need at least {len(fractions)} sentences to split, have {len(uniq)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(uniq)
    bounds = np.round(np.cumsum(fractions)[:-1] * len(perm)).astype(int)
    groups = np.split(perm, bounds)
    return tuple(np.flatnonzero(np.isin(sent_ids, g)) for g in groups)


def open_store(path: str | os.PathLike) -> ActivationStore:
    return ActivationStore(path)


__all__ = [
    "FORMAT_VERSION", "ActivationStore", "StoreArray", "StoreError", "StoreNotFoundError", "StoreWriter",
    "array_name", "check_output", "open_store", "split_by_sentence",
]
