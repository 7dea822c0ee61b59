"""The files of an activation store, read and written without zarr (issue 16): chunk files with their
crc32c checksums, array metadata checked against the store's, the writer's lock and owner record, and
the crash-safe replacement of a store.

zarr v3's layout is kept, so zarr itself reads every store: an uncompressed array chunk is the raw
little-endian C-order bytes of the whole chunk (edge chunks at full size) followed by zarr's ``crc32c``
codec, the 4-byte little-endian CRC-32C (Castagnoli) of those bytes. ``google_crc32c`` (what zarr's codec
uses) computes it with the CPU's CRC32 instructions (SSE4.2 / ARMv8), about 10 GB/s on one core.

Nothing here follows a symbolic link inside a store: every file below the store's directory is opened
component by component relative to its parent's descriptor with ``O_NOFOLLOW``, so a link planted
inside a store (or a ``.partial`` directory) is an error, never a way to read or write elsewhere. The
store's own path may be a link (that is the user's choice, not something found inside it).

This module imports neither zarr nor torch: ``finegrain info`` uses it and starts in well under a second.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import google_crc32c
import numpy as np

from finegrain.errors import StoreError

FORMAT = "finegrain-activations"
CRC_BYTES = 4
OWNER_FILE = "_owner.json"
LOCK_SUFFIX = ".lock"
ASIDE_SUFFIX = ".replaced"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FD = os.open in os.supports_dir_fd


def crc32c(data) -> int:
    """CRC-32C of a contiguous buffer (what zarr's ``crc32c`` codec appends, little-endian)."""
    return google_crc32c.value(data)


# -- opening files inside a store, never through a link -----------------------------------------------
def _link_error(root: Path, rel: str, e: OSError) -> StoreError:
    return StoreError(f"{root}: {rel} is a symbolic link (or passes through one); a finegrain store never "
                      f"follows links inside it ({e.strerror})")


def open_in(root: str | os.PathLike, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644,
            make_dirs: bool = False) -> int:
    """A descriptor of ``root/rel`` opened without following a symbolic link in any component of ``rel``
    (``make_dirs``: create missing directories on the way)."""
    root = Path(root)
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or rel.startswith("/"):
        raise StoreError(f"{root}: refusing the path {rel!r}: it leaves the store")
    if not _DIR_FD:  # no openat (Windows): check the components with lstat instead
        cur = root
        for p in parts[:-1]:
            cur = cur / p
            if make_dirs and not os.path.lexists(cur):
                os.mkdir(cur)
            if os.path.islink(cur):
                raise _link_error(root, rel, OSError(errno.ELOOP, "a link"))
        if os.path.islink(root / rel):
            raise _link_error(root, rel, OSError(errno.ELOOP, "a link"))
        return os.open(root / rel, flags | _CLOEXEC, mode)
    dfd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for k, p in enumerate(parts[:-1]):
            try:
                nfd = os.open(p, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                if not make_dirs:
                    raise
                try:
                    os.mkdir(p, 0o755, dir_fd=dfd)
                except FileExistsError:  # created meanwhile (another writer of a region)
                    pass
                nfd = os.open(p, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(root.joinpath(*parts[: k + 1])):
                    raise _link_error(root, rel, e) from None
                raise
            os.close(dfd)
            dfd = nfd
        try:
            return os.open(parts[-1], flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _link_error(root, rel, e) from None
            raise
    finally:
        os.close(dfd)


def read_file(root: str | os.PathLike, rel: str) -> bytes:
    fd = open_in(root, rel)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{root}: {rel} is not a regular file")
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def read_json(root: str | os.PathLike, rel: str, what: str = "metadata") -> dict:
    """A JSON file of the store, every failure a :class:`StoreError` naming the store and the file."""
    try:
        text = read_file(root, rel)
    except FileNotFoundError:
        raise StoreError(f"{root}: {what} {rel} is missing; the store is damaged") from None
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(f"{root}: cannot read {rel}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{root}: {what} {rel} is not valid JSON ({e}); the store is damaged "
                         f"(half-written?)") from None
    if not isinstance(data, dict):
        raise StoreError(f"{root}: {what} {rel} is not a JSON object; the store is damaged")
    return data


def json_bytes(data: dict) -> bytes:
    """A metadata file's bytes (indented JSON, as zarr writes its own)."""
    return json.dumps(data, indent=1).encode()


def write_json_atomic(root: str | os.PathLike, rel: str, data: dict) -> None:
    """Write ``root/rel`` as JSON through a temporary file and a rename (readers see old or new, whole)."""
    tmp_rel = f"{rel}.tmp{os.getpid()}"
    with os.fdopen(open_in(root, tmp_rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
        f.write(json_bytes(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(Path(root) / tmp_rel, Path(root) / rel)


def walk_no_links(root: str | os.PathLike) -> Iterator[Path]:
    """Every path below ``root`` (files and directories); a symbolic link or a special file inside is a
    :class:`StoreError` (a resumed ``.partial`` must hold nothing the writer did not create)."""
    root = Path(root)
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for entry in it:
                p = Path(entry.path)
                if entry.is_symlink():
                    raise StoreError(f"{root}: {p.relative_to(root)} is a symbolic link; refusing to use a store "
                                     f"with links inside it (remove it, or the whole {root.name})")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(p)
                elif not entry.is_file(follow_symlinks=False):
                    raise StoreError(f"{root}: {p.relative_to(root)} is not a regular file or directory")
                yield p


# -- array metadata ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayMeta:
    """What a store needs of an array's ``zarr.json``: shape, chunk shape, data type and codecs."""

    key: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    data_type: str
    codecs: tuple[str, ...]
    separator: str = "/"
    prefix: str = "c"

    @classmethod
    def parse(cls, key: str, meta: dict, store: Path) -> ArrayMeta:
        try:
            if meta.get("node_type") != "array" or meta.get("zarr_format") != 3:
                raise ValueError("not a zarr v3 array")
            shape = tuple(int(s) for s in meta["shape"])
            grid = meta["chunk_grid"]
            if grid.get("name") != "regular":
                raise ValueError(f"chunk grid {grid.get('name')!r}")
            chunks = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
            enc = meta.get("chunk_key_encoding", {"name": "default"})
            sep = (enc.get("configuration") or {}).get("separator", "/" if enc.get("name") == "default" else ".")
            codecs = []
            for c in meta["codecs"]:
                name = c["name"]
                if name == "bytes" and (c.get("configuration") or {}).get("endian", "little") != "little":
                    name = "bytes-big"
                codecs.append(name)
            if len(shape) != len(chunks) or any(c <= 0 for c in chunks):
                raise ValueError(f"shape {shape} and chunk shape {chunks} do not match")
            dt = meta["data_type"]
            dt = dt if isinstance(dt, str) else str(dt.get("name"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"{store}: array {key}: unreadable zarr.json ({e}); the store is damaged") from None
        return cls(key, shape, chunks, dt, tuple(codecs), sep, "c" if enc.get("name", "default") == "default" else "")

    @property
    def raw(self) -> bool:
        """Chunks are plain little-endian bytes (optionally followed by a crc32c): read without zarr."""
        return (self.codecs[:1] == ("bytes",) and self.codecs[1:] in ((), ("crc32c",))
                and self.data_type in ("float16", "float32", "float64", "int32", "int64"))

    @property
    def vlen_strings(self) -> bool:
        """A string column in the codecs :func:`encode_strings` writes (vlen-utf8, zstd, crc32c)."""
        return self.data_type == "string" and self.codecs == ("vlen-utf8", "zstd", "crc32c")

    @property
    def checksummed(self) -> bool:
        return bool(self.codecs) and self.codecs[-1] == "crc32c"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data_type).newbyteorder("<") if self.raw else np.dtype(object)

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))

    @property
    def n_chunks(self) -> int:
        return int(np.prod(self.grid, dtype=np.int64))

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of a decoded raw chunk (without the checksum)."""
        return int(np.prod(self.chunks, dtype=np.int64)) * self.dtype.itemsize

    def chunk_key(self, idx: tuple[int, ...]) -> str:
        key = self.separator.join(str(i) for i in idx)
        return f"{self.key}/{self.prefix}{self.separator}{key}" if self.prefix else f"{self.key}/{key}"

    def chunk_keys(self) -> Iterator[tuple[tuple[int, ...], str]]:
        for flat in range(self.n_chunks):
            idx = tuple(int(i) for i in np.unravel_index(flat, self.grid))
            yield idx, self.chunk_key(idx)


class ChunkReader:
    """Reads whole chunks of one raw array, checking each: present, a regular file (no link), of the
    exact size, checksum correct. Every failure is a :class:`StoreError` naming the store, the array and
    the chunk. The last chunk read is kept (streaming reads that straddle a chunk boundary read it once)."""

    def __init__(self, store: Path, meta: ArrayMeta):
        self.store, self.meta = store, meta
        self._last: tuple[int, np.ndarray] | None = None

    def _fail(self, idx: tuple[int, ...], why: str) -> StoreError:
        return StoreError(f"{self.store}: array {self.meta.key}: chunk {idx[0]} ({self.meta.chunk_key(idx)}) {why}")

    def read_bytes(self, idx: tuple[int, ...], expected: int | None) -> np.ndarray:
        """The chunk file's bytes, checksum verified (``expected``: its exact size, if known)."""
        rel = self.meta.chunk_key(idx)
        try:
            fd = open_in(self.store, rel)
        except FileNotFoundError:
            raise self._fail(idx, "is missing (deleted?); a store never reads missing chunks as zeros") from None
        except StoreError:
            raise
        except OSError as e:
            raise self._fail(idx, f"cannot be opened: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._fail(idx, "is not a regular file")
            if expected is not None and st.st_size != expected:
                raise self._fail(idx, f"has {st.st_size} bytes, expected {expected} (truncated or damaged)")
            buf = np.empty(st.st_size, np.uint8)
            view, done = memoryview(buf), 0
            while done < st.st_size:
                n = os.readv(fd, [view[done:]])
                if n == 0:
                    raise self._fail(idx, f"ended after {done} of {st.st_size} bytes (truncated while read)")
                done += n
        except OSError as e:
            if isinstance(e, StoreError):
                raise
            raise self._fail(idx, f"cannot be read: {e.strerror or e}") from None
        finally:
            os.close(fd)
        if self.meta.checksummed:
            if len(buf) < CRC_BYTES:
                raise self._fail(idx, "is too short to hold its checksum")
            stored = int.from_bytes(buf[-CRC_BYTES:].tobytes(), "little")
            if crc32c(buf[:-CRC_BYTES]) != stored:
                raise self._fail(idx, "fails its crc32c checksum (the file was changed or damaged)")
        return buf

    def chunk(self, i: int) -> np.ndarray:
        """Chunk row ``i`` (a raw array chunked by rows only) as ``[chunk_rows, *cols]``."""
        last = self._last
        if last is not None and last[0] == i:
            return last[1]
        idx = (i,) + (0,) * (len(self.meta.shape) - 1)
        nbytes = self.meta.chunk_nbytes
        buf = self.read_bytes(idx, nbytes + (CRC_BYTES if self.meta.checksummed else 0))
        arr = buf[:nbytes].view(self.meta.dtype).reshape(self.meta.chunks)
        self._last = (i, arr)
        return arr

    def _out(self, n: int, cols) -> np.ndarray:
        rest = self.meta.shape[1:]
        if cols is not None:
            rest = (len(np.arange(rest[0])[cols]),)
        return np.empty((n, *rest), self.meta.dtype.newbyteorder("="))

    def rows(self, rows: np.ndarray, cols=None) -> np.ndarray:
        """Rows ``rows`` (int array, any order) and columns ``cols`` (None: all) of the array."""
        out = self._out(len(rows), cols)
        if not len(rows):
            return out
        cr = self.meta.chunks[0]
        cid = rows // cr
        if np.all(cid[1:] >= cid[:-1]):  # sorted rows: no sort needed
            groups = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(cid)) + 1)
        else:
            order = np.argsort(cid, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(cid[order])) + 1)
        for g in groups:
            c = int(cid[g[0]])
            sub = self.chunk(c)[rows[g] - c * cr]
            out[g] = sub if cols is None else sub[:, cols]
        return out

    def slice(self, start: int, stop: int, cols=None) -> np.ndarray:
        """Rows ``start:stop`` (and columns ``cols``) as a new array."""
        cr = self.meta.chunks[0]
        pieces = []
        for c in range(start // cr, -(-stop // cr)):
            a, b = max(start, c * cr) - c * cr, min(stop, (c + 1) * cr) - c * cr
            block = self.chunk(c)[a:b]
            pieces.append(block if cols is None else block[:, cols])
        if not pieces:
            return self._out(0, cols)
        # a copy: the last chunk is cached, the caller may write into what it gets
        out = np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
        return out.astype(self.meta.dtype.newbyteorder("="), copy=False)

    def verify(self) -> int:
        """Read and check every chunk (raw arrays: exact size too); returns the bytes read."""
        total = 0
        fixed = self.meta.chunk_nbytes + (CRC_BYTES if self.meta.checksummed else 0) if self.meta.raw else None
        for idx, _ in self.meta.chunk_keys():
            total += len(self.read_bytes(idx, fixed))
        return total

    def present(self) -> None:
        """Check that every chunk file exists as a regular file (cheap: no data read)."""
        for idx, rel in self.meta.chunk_keys():
            try:
                st = os.lstat(self.store / rel)
            except FileNotFoundError:
                raise self._fail(idx, "is missing (deleted?); a store never reads missing chunks as fill values") \
                    from None
            if stat.S_ISLNK(st.st_mode):
                raise _link_error(self.store, rel, OSError(errno.ELOOP, "a link"))
            if not stat.S_ISREG(st.st_mode):
                raise self._fail(idx, "is not a regular file")
        for d in {str(Path(rel).parent) for _, rel in self.meta.chunk_keys()}:
            cur = Path(d)
            while str(cur) not in (".", ""):
                if os.path.islink(self.store / cur):
                    raise _link_error(self.store, str(cur), OSError(errno.ELOOP, "a link"))
                cur = cur.parent

    def disk_bytes(self) -> int:
        """Bytes on disk (exact for raw arrays from the metadata; else the files' sizes)."""
        if self.meta.raw:
            return self.meta.n_chunks * (self.meta.chunk_nbytes + (CRC_BYTES if self.meta.checksummed else 0))
        total = 0
        for _, rel in self.meta.chunk_keys():
            try:
                total += os.lstat(self.store / rel).st_size
            except FileNotFoundError:
                pass
        return total


# -- writing chunk files -----------------------------------------------------------------------------
FSYNC_THREADS = 8  # concurrent fsyncs of one flush: the file system commits them together
MAX_UNSYNCED = 64  # files written but not yet synced (each an open descriptor) before a sync is forced


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


@dataclass
class _Stream:
    """A chunk file being filled row block by row block: what is on disk, and what waits."""

    fd: int
    direct: bool
    rows: int = 0  # rows of the chunk received so far
    carry: bytes = b""  # received bytes after the last aligned write (O_DIRECT writes whole blocks)
    crc: int = 0  # crc32c of every byte received so far


class ChunkFiles:
    """Writes chunk files (with their crc32c), bypassing the page cache (``O_DIRECT``) where the file
    system allows.

    Buffered writes of fresh files cost the kernel a page-cache page per 4 KiB written; measured on a
    2-core VM that was 0.5 s of CPU per 200 MB, taken from the model's threads, while ``O_DIRECT`` took
    0.03 s (the device DMAs from our buffer). Data is assembled in one reused, page-aligned staging
    buffer (``O_DIRECT`` needs aligned memory), so no chunk-sized array is allocated per write either;
    its checksum is computed there, in the writer's thread (~1 ms per 10 MB). Falls back to buffered
    writes where ``O_DIRECT`` is refused (tmpfs, some network file systems), or everywhere with
    ``direct=False``.

    A chunk is written whole by :meth:`write`, or streamed: :meth:`stream` sends the rows received so
    far to the file at once (its crc32c extended as they come), so that when the chunk's last rows
    arrive only they, the zero padding of an edge chunk and the checksum are left to write; an
    extraction's last chunk is then not written after its last forward pass. A streamed file is
    incomplete (no checksum) until :meth:`write` finishes it; the store's progress record counts only
    finished chunks, so a crash leaves nothing that a resumed run would read.

    Syncing: every file is fsynced, and the directories that gained an entry, before :meth:`sync`
    returns (the caller then records its progress); the fsyncs of one flush run concurrently, which
    lets the file system commit them together.
    """

    ALIGN = 4096

    def __init__(self, direct: bool = True, fsync: bool = True):
        self.direct = hasattr(os, "O_DIRECT") and bool(direct)
        self.fsync = fsync
        self._raw: np.ndarray | None = None
        self.synced: set[str] = set()  # files and directories (relative paths) synced, none changed since
        self._streams: dict[str, _Stream] = {}
        self._unsynced: list[tuple[str, int]] = []  # (rel, fd) written, not yet fsynced and closed
        self._dirty: set[str] = set()  # directories that gained an entry since they were last synced
        self._seen: set[str] = set()  # directories known to exist (created or entered by this writer)
        self._root: Path | None = None

    # -- staging ----------------------------------------------------------------------------------
    def _staging(self, nbytes: int) -> np.ndarray:
        if self._raw is None or self._raw.nbytes < nbytes + self.ALIGN:
            self._raw = np.empty(nbytes + self.ALIGN, np.uint8)
        off = -self._raw.ctypes.data % self.ALIGN
        return self._raw[off : off + nbytes]

    @staticmethod
    def _fill(stage: np.ndarray, at: int, pieces: list[np.ndarray], skip_rows: int, dtype: np.dtype) -> int:
        """Copy the rows of ``pieces`` after the first ``skip_rows`` into ``stage`` from byte ``at``, as
        little-endian ``dtype``; returns the end offset."""
        for p in pieces:
            if skip_rows >= len(p):
                skip_rows -= len(p)
                continue
            p = p[skip_rows:]
            skip_rows = 0
            n = p.size * dtype.itemsize
            stage[at : at + n].view(dtype).reshape(p.shape)[...] = p
            at += n
        return at

    # -- files --------------------------------------------------------------------------------------
    def note_file(self, root: Path, rel: str) -> None:
        """Record that ``rel`` was created: its directory (and each directory first seen on the way up)
        gained an entry and is synced with the next :meth:`sync`."""
        self._root = Path(root)
        self.synced.discard(rel)
        d = _parent(rel)
        self._dirty.add(d)
        self.synced.discard(d)
        while d and d not in self._seen:
            self._seen.add(d)
            d = _parent(d)
            self._dirty.add(d)
            self.synced.discard(d)

    def seen(self, *dirs: str) -> None:
        """Directories created and synced by the caller (their entries are already durable)."""
        self._seen.update(dirs)
        self.synced.update(dirs)

    def _open(self, root: Path, rel: str, direct: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
        fd = open_in(root, rel, flags, make_dirs=True)
        self.note_file(root, rel)
        return fd

    def _open_stream(self, root: Path, rel: str) -> _Stream:
        if self.direct:
            try:
                return _Stream(self._open(root, rel, True), True)
            except OSError as e:
                if isinstance(e, StoreError) or e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                self.direct = False  # the file system refuses O_DIRECT
        return _Stream(self._open(root, rel, False), False)

    @staticmethod
    def _buffered(fd: int) -> None:
        import fcntl  # platform: POSIX only, as O_DIRECT itself

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)

    def _send(self, s: _Stream, data: np.ndarray, final: bool) -> None:
        """Write ``data`` (in the staging buffer, aligned) to the stream's file: whole blocks with
        ``O_DIRECT``; the rest waits in ``carry``, or when ``final`` goes out buffered."""
        head = len(data) - len(data) % self.ALIGN if s.direct else len(data)
        done = 0
        while done < head:
            try:
                done += os.write(s.fd, memoryview(data[done:head]))
            except OSError as e:
                if not s.direct or e.errno != errno.EINVAL:
                    raise  # ENOSPC, EIO, ...: a real failure, not O_DIRECT's alignment
                # a block size this alignment does not satisfy: the rest of this file goes buffered
                self._buffered(s.fd)
                s.direct = self.direct = False
                head = len(data)
        if final and head < len(data):
            if s.direct:
                self._buffered(s.fd)
            while done < len(data):
                done += os.write(s.fd, memoryview(data[done:]))
            s.carry = b""
        else:
            s.carry = bytes(data[head:])

    def _fail(self, root: Path, rel: str, e: OSError) -> OSError:
        if isinstance(e, StoreError):
            return e
        # ENOSPC, EFBIG, EACCES, ...: name the file (os.write's own error has no file name)
        return StoreError(e.errno, e.strerror or str(e), str(root / rel))

    def stream(self, root: Path, rel: str, pieces: list[np.ndarray], dtype: np.dtype) -> None:
        """Append the rows of ``pieces`` to the chunk file ``root/rel`` (created by the first call):
        whole blocks go to disk now, the file is finished by :meth:`write`."""
        dtype = np.dtype(dtype).newbyteorder("<")
        try:
            s = self._streams.get(rel)
            if s is None:
                s = self._streams[rel] = self._open_stream(root, rel)
            nbytes = sum(p.size for p in pieces) * dtype.itemsize
            stage = self._staging(len(s.carry) + nbytes)
            stage[: len(s.carry)] = np.frombuffer(s.carry, np.uint8)
            end = self._fill(stage, len(s.carry), pieces, 0, dtype)
            s.crc = google_crc32c.extend(s.crc, stage[len(s.carry) : end])
            s.rows += sum(len(p) for p in pieces)
            self._send(s, stage[:end], final=False)
        except OSError as e:
            raise self._fail(root, rel, e) from None

    def streamed_rows(self, rel: str) -> int:
        s = self._streams.get(rel)
        return s.rows if s is not None else 0

    def write(self, root: Path, rel: str, pieces: list[np.ndarray], rows: int, dtype: np.dtype,
              checksum: bool = True) -> None:
        """Write ``pieces`` (consecutive row blocks from the chunk's first row) as the chunk file
        ``root/rel`` of ``rows`` rows; rows past the pieces are the fill value 0 (zarr stores an edge
        chunk at full size). A file :meth:`stream` began is finished: only its rows not yet sent are
        written. The file is synced by the next :meth:`sync`."""
        cols = pieces[0].shape[1:] if pieces else ()
        dtype = np.dtype(dtype).newbyteorder("<")
        nbytes = rows * int(np.prod(cols, dtype=np.int64)) * dtype.itemsize
        try:
            s = self._streams.pop(rel, None)
            if s is not None and not checksum:
                raise StoreError(f"{root}: {rel}: a streamed chunk always carries its checksum")
            if s is None:
                s = self._open_stream(root, rel)
            sent = s.rows * int(np.prod(cols, dtype=np.int64)) * dtype.itemsize  # bytes already received
            rest = nbytes - sent
            stage = self._staging(len(s.carry) + rest + (CRC_BYTES if checksum else 0))
            stage[: len(s.carry)] = np.frombuffer(s.carry, np.uint8)
            end = self._fill(stage, len(s.carry), pieces, s.rows, dtype)
            stop = len(s.carry) + rest
            stage[end:stop] = 0
            if checksum:
                crc = google_crc32c.extend(s.crc, stage[len(s.carry) : stop])
                stage[stop:] = np.frombuffer(crc.to_bytes(CRC_BYTES, "little"), np.uint8)
            self._send(s, stage, final=True)
        except OSError as e:
            if s is not None:
                os.close(s.fd)
            raise self._fail(root, rel, e) from None
        self._done(rel, s.fd)

    def write_bytes(self, root: Path, rel: str, data: bytes) -> None:
        """Write a small file (an encoded string chunk with its checksum) whole, buffered; synced by
        the next :meth:`sync`."""
        fd = None
        try:
            fd = self._open(root, rel, False)
            with os.fdopen(fd, "wb", closefd=False) as f:  # left open: fsynced and closed by sync()
                f.write(data)
        except OSError as e:
            if fd is not None:
                os.close(fd)
            raise self._fail(root, rel, e) from None
        self._done(rel, fd)

    def _done(self, rel: str, fd: int) -> None:
        if not self.fsync:
            os.close(fd)
            return
        self._unsynced.append((rel, fd))
        if len(self._unsynced) >= MAX_UNSYNCED:  # a long write of many chunks: bounded open files
            self._sync_files()

    def _sync_files(self) -> None:
        files, self._unsynced = self._unsynced, []
        try:
            _run_all([partial(_fsync_fd, fd) for _, fd in files])
        finally:
            for _, fd in files:
                os.close(fd)
        self.synced.update(rel for rel, _ in files)

    def sync(self) -> None:
        """fsync every file written since the last call, then the directories that gained entries
        (concurrently), and close the files: afterwards everything written is durable."""
        self._sync_files()
        dirs, self._dirty = self._dirty, set()
        if dirs and self.fsync and self._root is not None:
            root = self._root
            _run_all([partial(_fsync_path, root / d if d else root, True) for d in sorted(dirs)])
        self.synced.update(dirs)

    def abandon(self) -> None:
        """Close every file without finishing it (a rewind or an error: the rows are written again, or
        the partial store is resumed from its progress record, which never counts such a file)."""
        for s in self._streams.values():
            os.close(s.fd)
        self._streams = {}
        for _, fd in self._unsynced:
            os.close(fd)
        self._unsynced = []


def _fsync_fd(fd: int) -> None:
    os.fsync(fd)


def _run_all(jobs: list) -> None:
    """Run ``jobs`` (blocking system calls that release the GIL) on up to :data:`FSYNC_THREADS`
    threads; the first error is raised after all have ended."""
    if len(jobs) <= 1:
        for job in jobs:
            job()
        return
    from concurrent.futures import ThreadPoolExecutor  # heavy (~10 ms): only writers sync files

    with ThreadPoolExecutor(min(FSYNC_THREADS, len(jobs))) as pool:
        futures = [pool.submit(job) for job in jobs]
    for f in futures:
        f.result()


# -- string chunks -------------------------------------------------------------------------------
# zarr v3 metadata of the three kinds of arrays a store holds, written here without zarr (zarr reads them)
_CODECS = {
    "raw": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
    "string": [{"name": "vlen-utf8", "configuration": {}},
               {"name": "zstd", "configuration": {"level": 0, "checksum": False}}, {"name": "crc32c"}],
}
GROUP_META = {"attributes": {}, "zarr_format": 3, "node_type": "group"}


def array_meta_json(shape: tuple[int, ...], chunks: tuple[int, ...], data_type: str) -> dict:
    """The ``zarr.json`` of a store array (zarr v3): raw little-endian chunks with a crc32c, or for
    ``data_type="string"`` vlen-utf8 + zstd (level 0) + crc32c, as ``zarr.create_array`` writes them."""
    kind = "string" if data_type == "string" else "raw"
    fill = "" if kind == "string" else (0.0 if data_type.startswith("float") else 0)
    return {
        "shape": list(shape), "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill, "codecs": _CODECS[kind], "attributes": {}, "zarr_format": 3, "node_type": "array",
        "storage_transformers": [],
    }


def encode_strings(values: list[np.ndarray], rows: int) -> bytes:
    """One string chunk of ``rows`` rows as zarr's codecs store it: vlen-utf8 (numcodecs' format: the
    count, then each item's length and UTF-8 bytes, little-endian uint32), zstd level 0, crc32c; rows
    past ``values`` are the fill value ``""``."""
    from numcodecs.vlen import VLenUTF8  # heavy (~0.3 s): only writers of string columns need it
    from numcodecs.zstd import Zstd

    items = np.empty(rows, dtype=object)
    r = 0
    for v in values:
        items[r : r + len(v)] = v
        r += len(v)
    items[r:] = ""
    data = Zstd(level=0, checksum=False).encode(VLenUTF8().encode(items))
    return bytes(data) + crc32c(data).to_bytes(CRC_BYTES, "little")


def fsync_tree(root: Path, skip: set[str] = frozenset()) -> None:
    """fsync every file and directory below ``root`` (and ``root`` itself) but those in ``skip``
    (relative paths, ``""`` for ``root``, already synced and unchanged since), concurrently."""
    root = Path(root)
    files, dirs = [], [] if "" in skip else [root]
    for p in walk_no_links(root):
        rel = str(p.relative_to(root))
        if rel in skip:
            continue
        (dirs if p.is_dir() else files).append(p)
    _run_all([partial(_fsync_path, p) for p in files])
    _run_all([partial(_fsync_path, d, True) for d in dirs])


def _fsync_path(p: Path, directory: bool = False) -> None:
    fd = os.open(p, (os.O_RDONLY | (_DIRECTORY if directory else 0)) | _NOFOLLOW | _CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot fsync a directory
        if not (directory and e.errno in (errno.EINVAL, errno.EBADF, errno.EACCES)):
            raise
    finally:
        os.close(fd)


# -- what a path holds --------------------------------------------------------------------------------
def is_store(path: Path) -> bool:
    """Whether ``path`` is a directory (not a link) whose metadata says it is a finegrain store."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        return read_json(path, "zarr.json").get("attributes", {}).get("format") == FORMAT
    except (OSError, StoreError):
        return False


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """The output path of a new store: a free name, or with ``overwrite`` a finegrain store to replace.
    Anything else (a file, a link, a directory of the user's files) is refused, naming it."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if path.parent != path and not path.parent.is_dir():
            if path.parent.exists():
                raise StoreError(errno.ENOTDIR, "Not a directory (the parent of the output store)",
                                 str(path.parent)) from None
        return path
    if not overwrite:
        raise StoreError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
    if stat.S_ISLNK(st.st_mode):
        raise StoreError(f"refusing to overwrite {path}: it is a symbolic link, not a finegrain store")
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"refusing to overwrite {path}: it is a file, not a finegrain store")
    if not is_store(path):
        raise StoreError(f"refusing to overwrite {path}: it is a directory without finegrain store metadata "
                         f"(overwrite replaces only a finegrain store)")
    return path


# -- the writer's lock and owner record --------------------------------------------------------------
def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


class WriterLock:
    """The exclusive lock of one store's writer (``NAME.fgstore.lock``, ``flock`` through ``filelock``),
    taken without waiting: a second writer of the same store fails at once. The lock file stays (waiters
    must share one inode); the lock itself dies with its process, so a killed run never leaves it held."""

    def __init__(self, path: Path):
        import filelock  # heavy (~0.1 s): only writers need it, `finegrain info` starts without it

        self.path = lock_path(path)
        self._lock = filelock.FileLock(str(self.path), timeout=0)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StoreError(f"{path} is being written by another process (its lock {self.path} is held); "
                             f"wait for it to finish, or write to another path") from None
        except OSError as e:
            raise StoreError(e.errno, f"cannot create the store's lock file: {e.strerror}", str(self.path)) from None

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (tells a reused pid from the original), if known."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22 of stat(5): starttime, in clock ticks since boot
    except (OSError, IndexError):
        return None


def owner_record(fingerprint: str | None) -> dict:
    """Who writes a ``.partial``: process, host, start, the extraction's fingerprint and a random token
    (region writers of a distributed run check that they write the partial their driver created)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
            "started": time.time(), "fingerprint": fingerprint, "token": uuid.uuid4().hex}


def owner_status(rec: dict | None, fingerprint: str | None) -> tuple[str, str]:
    """``(verdict, why)`` for resuming a ``.partial`` with owner record ``rec`` while holding its lock:
    ``"resume"`` (our extraction, left by a process that is gone: a dead pid, a reused pid — its start
    time differs from the recorded one — or this very process), ``"restart"`` (no record or another
    extraction's: not ours to continue), ``"live"`` (a live process of this host: never touched) or
    ``"unknown"`` (a process of another host, whose liveness cannot be checked from here).

    The lock already excludes every finegrain writer on file systems with working ``flock``; the record
    is the second line for those without (some network file systems), and for partials not made by us."""
    if not isinstance(rec, dict) or not {"pid", "host", "fingerprint"} <= set(rec):
        return "restart", "it has no owner record (not written by this version of finegrain's writer)"
    if rec.get("fingerprint") != fingerprint:
        return "restart", "it belongs to another extraction (different model, corpus or options)"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(rec.get("started") or 0)))
    if rec["host"] != socket.gethostname():
        return "unknown", (f"it was started by process {rec['pid']} on host {rec['host']} at {when}, whose state "
                           f"cannot be checked from here")
    pid = int(rec["pid"])
    if pid == os.getpid():
        return "resume", "left by an earlier writer of this process"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "resume", f"its writer (process {pid}) is gone"
    except PermissionError:
        pass  # alive, another user's
    start = _process_start(pid)
    if start is not None and rec.get("process_start") is not None and start != rec["process_start"]:
        return "resume", f"its writer (process {pid}) is gone (the pid now names another process)"
    return "live", f"it is being written by process {pid} on this host (started {when})"


# -- replacing a store --------------------------------------------------------------------------------
def aside_path(path: Path) -> Path:
    return path.with_name(path.name + ASIDE_SUFFIX)


def fsync_dir(d: Path) -> None:
    _fsync_path(d, directory=True)


def replace_store(new: Path, path: Path) -> None:
    """Move the complete, fsynced store ``new`` to ``path``: an old store there is first moved aside, the
    new one renamed into place, the directory entry synced, and only then the old one removed. A crash at
    any point leaves a whole store at ``path`` or at its ``.replaced`` name (:func:`recover`)."""
    aside = aside_path(path)
    had_old = os.path.lexists(path)
    if had_old:
        if os.path.lexists(aside):
            shutil.rmtree(aside)
        os.replace(path, aside)
    os.replace(new, path)
    fsync_dir(path.parent)
    if had_old:
        shutil.rmtree(aside)


def recover(path: Path, partial: Path) -> str | None:
    """Finish or undo a replacement interrupted by a crash (called with the writer's lock held)."""
    aside = aside_path(path)
    if not os.path.lexists(aside) or not is_store(aside):
        return None
    if os.path.lexists(path):
        shutil.rmtree(aside)
        return f"removed {aside}, left by an interrupted replacement of {path}"
    complete = is_store(partial) and read_json(partial, "zarr.json").get("attributes", {}).get("complete") is True
    if complete:
        os.replace(partial, path)
        fsync_dir(path.parent)
        shutil.rmtree(aside)
        return f"finished the interrupted replacement of {path}"
    os.replace(aside, path)
    fsync_dir(path.parent)
    return f"restored {path} from {aside} (its replacement was interrupted)"
