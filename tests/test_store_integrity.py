"""Store integrity (issue 16): checksums, missing chunks, metadata checks, one writer per store, owner
records, symbolic links, overwrite that replaces only a store, crash-safe commit."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from finegrain.cli import main
from finegrain.errors import StoreError
from finegrain.store import ActivationStore, StoreWriter
from finegrain.store import files as F


def _store(path, n=10, chunk_rows=4, labels=True):
    X = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    w = StoreWriter(path, {"l": 3}, n, label_columns=["pos"] if labels else [], dtype="float32", chunk_rows=chunk_rows)
    w.write({"l": X}, np.arange(n) // 2, np.arange(n) % 2, [f"w{i}" for i in range(n)],
            {"pos": ["N"] * n} if labels else None)
    return X, w.commit()


@pytest.fixture
def good(tmp_path):
    X, store = _store(tmp_path / "good.fgstore")
    return X, store.path


def _damaged(good, tmp_path, mutate):
    src = good[1]
    dst = tmp_path / "damaged.fgstore"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    mutate(dst)
    return dst


def _readers():
    """Every way the package reads activations: the array, matrix, a view, streaming blocks."""
    return [lambda s: s["l"][:], lambda s: s.matrix(rows=[5, 0]), lambda s: s.view().materialize(),
            lambda s: [b.X for b in s.view(block_rows=3).blocks()], lambda s: s.verify()]


@pytest.mark.parametrize("damage, message", [
    (lambda d: os.remove(d / "acts/l/c/1/0"), "chunk 1 .* is missing"),
    (lambda d: (d / "acts/l/c/1/0").write_bytes(os.urandom((d / "acts/l/c/1/0").stat().st_size)), "crc32c"),
    (lambda d: os.truncate(d / "acts/l/c/1/0", 20), "has 20 bytes, expected 52"),
])
def test_damaged_chunks_are_store_errors_naming_store_and_array(good, tmp_path, damage, message):
    """A deleted chunk used to read as rows of zeros, random bytes as garbage, a truncated chunk as a
    reshape error: each is now a StoreError naming the store and the array, whichever way it is read."""
    path = _damaged(good, tmp_path, damage)
    store = ActivationStore(path)
    for read in _readers():
        with pytest.raises(StoreError, match=message) as e:
            read(store)
        assert str(path) in str(e.value) and "array acts/l" in str(e.value)
    np.testing.assert_array_equal(store["l"][:4], good[0][:4])  # undamaged chunks still read


def test_damaged_string_columns_and_metadata(good, tmp_path):
    path = _damaged(good, tmp_path, lambda d: os.remove(d / "index/word/c/2"))
    with pytest.raises(StoreError, match="index/word: chunk 2 .* missing"):
        _ = ActivationStore(path).words
    path = _damaged(good, tmp_path, lambda d: (d / "index/label.pos/c/0").write_bytes(b"junk" * 5))
    with pytest.raises(StoreError, match="index/label.pos.*(checksum|crc32c)"):
        ActivationStore(path).labels("pos")
    with pytest.raises(StoreError, match="index/label.pos"):
        ActivationStore(path).verify()
    # a half-written array zarr.json: a StoreError on open, not a bare JSONDecodeError
    path = _damaged(good, tmp_path, lambda d: (d / "acts/l/zarr.json").write_text('{"shape": [10,'))
    with pytest.raises(StoreError, match="acts/l.*not valid JSON"):
        ActivationStore(path)
    path = _damaged(good, tmp_path, lambda d: (d / "zarr.json").write_text('{"attributes": {"form'))
    with pytest.raises(StoreError, match="zarr.json is not valid JSON"):
        ActivationStore(path)


def test_metadata_is_checked_against_the_arrays_on_open(good, tmp_path):
    def edit(key, fn):
        def mutate(d):
            f = d / key / "zarr.json"
            meta = json.loads(f.read_text())
            fn(meta)
            f.write_text(json.dumps(meta))
        return mutate

    cases = [
        ("", lambda m: m["attributes"].update(n_rows=12), "acts/l has 10 rows; the store's metadata says 12"),
        ("", lambda m: m["attributes"].update(dtype="float16"), "holds float32; the store's metadata says float16"),
        ("", lambda m: m["attributes"]["layers"].update(l=4), r"shape \(10, 3\).* says \(10, 4\)"),
        ("index/sent_id", lambda m: m.update(shape=[9]), "sent_id has 9 rows"),
        ("acts/l", lambda m: m["codecs"].pop(), "no crc32c codec"),
    ]
    for key, fn, message in cases:
        with pytest.raises(StoreError, match=message):
            ActivationStore(_damaged(good, tmp_path, edit(key, fn)))
    path = _damaged(good, tmp_path, lambda d: shutil.rmtree(d / "index/label.pos"))
    with pytest.raises(StoreError, match="index/label.pos/zarr.json is missing"):
        ActivationStore(path)


def test_checksums_are_zarrs_crc32c_and_zarr_reads_the_store(good):
    """The chunk files written directly carry zarr's crc32c codec: zarr itself reads (and checks) them."""
    import zarr

    X, path = good
    g = zarr.open_group(str(path), mode="r")
    assert [c.to_dict()["name"] for c in g["acts/l"].metadata.codecs] == ["bytes", "crc32c"]
    np.testing.assert_array_equal(g["acts/l"][:], X)
    raw = (path / "acts/l/c/0/0").read_bytes()
    assert int.from_bytes(raw[-4:], "little") == F.crc32c(raw[:-4])
    assert ActivationStore(path).verify() == {"arrays": 5, "chunks": 15, "bytes": 3 * 52 + sum(
        (path / k).stat().st_size for k in ["index/sent_id/c/0", "index/sent_id/c/1", "index/sent_id/c/2"]) * 2
        + sum(f.stat().st_size for c in ("word", "label.pos") for f in (path / "index" / c / "c").iterdir()),
        "checksummed": True}


def test_info_verify_on_the_command_line(good, tmp_path, capsys):
    assert main(["info", str(good[1]), "--verify"]) == 0
    assert "verified   15 chunks of 5 arrays" in capsys.readouterr().out
    path = _damaged(good, tmp_path, lambda d: os.truncate(d / "acts/l/c/2/0", 3))
    assert main(["info", str(path), "--verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "acts/l" in err[0] and "truncated" in err[0]


def test_info_does_not_walk_the_store(good, monkeypatch):
    """The on-disk size comes from the metadata (raw arrays) and the string chunks' sizes: no rglob."""
    monkeypatch.setattr(Path, "rglob", lambda *a, **k: (_ for _ in ()).throw(AssertionError("walked")))
    text = ActivationStore(good[1]).info()
    assert "on disk" in text and "crc32c per chunk" in text


# -- one writer, owner records -----------------------------------------------------------------------
def test_a_second_writer_of_a_store_fails_at_once(tmp_path):
    path = tmp_path / "s.fgstore"
    w = StoreWriter(path, {"l": 2}, 4, dtype="float32")
    t0 = time.perf_counter()
    with pytest.raises(StoreError, match="being written by another process"):
        StoreWriter(path, {"l": 2}, 4, dtype="float32")
    assert time.perf_counter() - t0 < 1.0
    assert (tmp_path / "s.fgstore.partial").is_dir()  # the first writer's partial store is untouched
    w.write({"l": np.ones((4, 2), np.float32)}, np.arange(4), np.zeros(4), list("abcd"))
    w.commit()  # releases the lock
    with StoreWriter(path, {"l": 2}, 4, dtype="float32", overwrite=True) as w2:
        assert w2._lock is not None
    StoreWriter(path, {"l": 2}, 4, dtype="float32", overwrite=True).close()  # closed: free again


def _partial_with_owner(tmp_path, owner: dict | None, fingerprint="fp"):
    path = tmp_path / "o.fgstore"
    w = StoreWriter(path, {"l": 2}, 8, dtype="float32", chunk_rows=4, meta={"fingerprint": fingerprint})
    w.write({"l": np.ones((4, 2), np.float32)}, np.arange(4), np.zeros(4), list("abcd"))
    w.close()
    if owner is None:
        (w.tmp / F.OWNER_FILE).unlink()
    else:
        rec = json.loads((w.tmp / F.OWNER_FILE).read_text())
        rec.update(owner)
        (w.tmp / F.OWNER_FILE).write_text(json.dumps(rec))
    return path


def test_resume_only_a_partial_whose_owner_record_is_verified(tmp_path):
    """Ours, left by a dead process (or this one): resumed. A live process of this host: refused. Another
    host: refused unless resume=False. No record or another extraction's: started over."""
    def writer(path, **kw):
        return StoreWriter(path, {"l": 2}, 8, dtype="float32", chunk_rows=4, meta={"fingerprint": "fp"}, **kw)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = _partial_with_owner(tmp_path, {"pid": int(dead.stdout), "process_start": "1"})
    w = writer(path)
    assert w.resumed_rows == 4
    w.abort()

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        start = F._process_start(live.pid)
        path = _partial_with_owner(tmp_path, {"pid": live.pid, "process_start": start})
        for resume in (True, False):
            with pytest.raises(StoreError, match=f"being written by process {live.pid} on this host"):
                writer(path, resume=resume)
        # the same pid with another start time: the original writer is gone, the pid was reused
        rec = json.loads((tmp_path / "o.fgstore.partial" / F.OWNER_FILE).read_text())
        rec["process_start"] = "0"
        (tmp_path / "o.fgstore.partial" / F.OWNER_FILE).write_text(json.dumps(rec))
        w = writer(path)
        assert w.resumed_rows == 4
        w.abort()
    finally:
        live.kill()
        live.wait()

    path = _partial_with_owner(tmp_path, {"host": socket.gethostname() + "-elsewhere"})
    with pytest.raises(StoreError, match="cannot be checked from here"):
        writer(path)
    w = writer(path, resume=False)
    assert w.resumed_rows == 0
    w.abort()

    for owner, fp in [(None, "fp"), ({}, "another")]:
        path = _partial_with_owner(tmp_path, owner, fingerprint=fp)
        w = writer(path)
        assert w.resumed_rows == 0
        assert not (w.tmp / "acts" / "l" / "c" / "0" / "0").exists()  # replaced, not continued
        w.abort()


_CONCURRENT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from finegrain.store import StoreWriter
    from finegrain.errors import StoreError
    path, delay, value = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    try:
        w = StoreWriter(path, {"l": 2}, 40, dtype="float32", chunk_rows=8, meta={"fingerprint": "same"},
                        overwrite=True)
    except StoreError as e:
        print("REFUSED", e, flush=True)
        sys.exit(3)
    print("WRITING", flush=True)
    for a in range(0, 40, 8):
        w.write({"l": np.full((8, 2), value, np.float32)}, np.arange(a, a + 8), np.zeros(8), ["w"] * 8)
        time.sleep(delay)
    w.commit()
    print("DONE", flush=True)
""")


def test_two_processes_writing_the_same_store(tmp_path):
    """Two real processes write the same --out: the second fails at once with a clear error, the first
    commits a store that reads back whole (before: both exited 0 and the store could not be read)."""
    script = tmp_path / "writer.py"
    script.write_text(_CONCURRENT)
    out = tmp_path / "same.fgstore"
    first = subprocess.Popen([sys.executable, str(script), str(out), "0.4", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "WRITING"
        t0 = time.perf_counter()
        second = subprocess.run([sys.executable, str(script), str(out), "0", "2"], capture_output=True, text=True,
                                timeout=120)
        print(f"second writer refused after {time.perf_counter() - t0:.2f} s (process start included)")
        assert second.returncode == 3, second.stdout + second.stderr
        assert "being written by another process" in second.stdout
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
    store = ActivationStore(out)
    assert store.verify()["chunks"] == 5 * 4  # acts, sent_id, word_pos, word
    np.testing.assert_array_equal(store["l"][:], np.ones((40, 2), np.float32))
    assert not (tmp_path / "same.fgstore.partial").exists()


# -- links ---------------------------------------------------------------------------------------------
def test_resuming_never_follows_links_planted_in_a_partial(tmp_path):
    """A .partial the writer did not make, with a chunk file that is a link to a file outside: resuming
    used to write activation bytes into that file."""
    path = _partial_with_owner(tmp_path, {"pid": os.getpid()})
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    chunk = tmp_path / "o.fgstore.partial" / "acts" / "l" / "c" / "1" / "0"
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        StoreWriter(path, {"l": 2}, 8, dtype="float32", chunk_rows=4, meta={"fingerprint": "fp"})
    # the chunk writer itself refuses a link too (O_NOFOLLOW), even for a link made after the check
    files = F.ChunkFiles(direct=False)
    with pytest.raises(StoreError, match="symbolic link"):
        files.write(tmp_path / "o.fgstore.partial", "acts/l/c/1/0", [np.ones((4, 2), np.float32)], 4, np.float32)
    linked_dir = tmp_path / "o.fgstore.partial" / "acts" / "l" / "c" / "9"
    linked_dir.symlink_to(tmp_path)
    with pytest.raises(StoreError, match="symbolic link"):
        files.write(tmp_path / "o.fgstore.partial", "acts/l/c/9/0", [np.ones((4, 2), np.float32)], 4, np.float32)
    assert victim.read_text() == "precious" and not (tmp_path / "0").exists()
    # a .partial that is itself a link is refused
    shutil.rmtree(tmp_path / "o.fgstore.partial")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "o.fgstore.partial").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        StoreWriter(path, {"l": 2}, 8, dtype="float32", meta={"fingerprint": "fp"})
    assert list(elsewhere.iterdir()) == []


def test_reading_never_follows_links_inside_a_store(good, tmp_path):
    outside = tmp_path / "outside.bin"

    def plant(d):
        shutil.copy(d / "acts/l/c/1/0", outside)
        os.remove(d / "acts/l/c/1/0")
        os.symlink(outside, d / "acts/l/c/1/0")

    path = _damaged(good, tmp_path, plant)
    with pytest.raises(StoreError, match="symbolic link"):
        ActivationStore(path)["l"][:]
    path2 = tmp_path / "d2.fgstore"
    shutil.copytree(good[1], path2)
    shutil.move(path2 / "index" / "word", tmp_path / "word-elsewhere")
    os.symlink(tmp_path / "word-elsewhere", path2 / "index" / "word")
    with pytest.raises(StoreError, match="symbolic link"):
        ActivationStore(path2)  # the array's zarr.json is reached through the link: refused on open
    with pytest.raises(StoreError, match="leaves the store"):
        F.read_json(good[1], "acts/../../x")


# -- overwrite -------------------------------------------------------------------------------------
def test_overwrite_replaces_only_a_finegrain_store(tmp_path, capsys):
    """--overwrite pointed at a folder of the user's files used to delete them all."""
    corpus_dir = tmp_path / "my-corpus"
    corpus_dir.mkdir()
    (corpus_dir / "sentences.txt").write_text("the cat sat\n")
    with pytest.raises(StoreError, match="refusing to overwrite .*my-corpus.*without finegrain store metadata"):
        StoreWriter(corpus_dir, {"l": 2}, 4, dtype="float32", overwrite=True)
    assert (corpus_dir / "sentences.txt").read_text() == "the cat sat\n"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(StoreError, match="it is a file, not a finegrain store"):
        StoreWriter(a_file, {"l": 2}, 4, dtype="float32", overwrite=True)
    ok = tmp_path / "ok.txt"
    ok.write_text("a b\n")
    assert main(["extract", "--model", "nonexistent-model", "--corpus", str(ok), "--out", str(a_file),
                 "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and "not a finegrain store" in err[0]
    assert a_file.read_text() == "mine"
    _, store = _store(tmp_path / "real.fgstore")
    X2 = np.full((4, 3), 7, np.float32)
    w = StoreWriter(store.path, {"l": 3}, 4, dtype="float32", overwrite=True)
    w.write({"l": X2}, np.arange(4), np.zeros(4), list("abcd"))
    np.testing.assert_array_equal(w.commit()["l"][:], X2)
    assert not (tmp_path / "real.fgstore.replaced").exists()


def test_commit_syncs_then_moves_the_old_store_aside_and_removes_it_last(tmp_path, monkeypatch):
    X, store = _store(tmp_path / "s.fgstore")
    events = []
    real_fsync_tree, real_replace, real_rmtree = F.fsync_tree, os.replace, shutil.rmtree
    monkeypatch.setattr(F, "fsync_tree", lambda root, skip=(): (events.append(("fsync", Path(root).name)),
                                                                 real_fsync_tree(root, skip))[1])
    import finegrain.store as S
    monkeypatch.setattr(S, "fsync_tree", F.fsync_tree)
    monkeypatch.setattr(F.os, "replace", lambda a, b: (events.append(("rename", Path(a).name, Path(b).name)),
                                                       real_replace(a, b))[1])
    monkeypatch.setattr(F.shutil, "rmtree", lambda p, *a, **k: (events.append(("rmtree", Path(p).name)),
                                                                real_rmtree(p, *a, **k))[1])
    w = StoreWriter(store.path, {"l": 3}, 4, dtype="float32", overwrite=True)
    w.write({"l": np.zeros((4, 3), np.float32)}, np.arange(4), np.zeros(4), list("abcd"))
    w.commit()
    moves = [e for e in events if e[0] in ("fsync", "rename", "rmtree") and "tmp" not in str(e)]
    assert moves[-4:] == [("fsync", "s.fgstore.partial"), ("rename", "s.fgstore", "s.fgstore.replaced"),
                          ("rename", "s.fgstore.partial", "s.fgstore"), ("rmtree", "s.fgstore.replaced")]


def test_a_crash_between_moving_aside_and_renaming_loses_nothing(tmp_path, monkeypatch):
    """Before, the old store was removed before the rename: a crash in between lost it."""
    X, store = _store(tmp_path / "s.fgstore")
    real_replace = os.replace

    def crash_on_second_rename(a, b):
        if Path(a).name == "s.fgstore.partial":
            raise KeyboardInterrupt("crash")
        return real_replace(a, b)

    w = StoreWriter(store.path, {"l": 3}, 4, dtype="float32", overwrite=True)
    w.write({"l": np.zeros((4, 3), np.float32)}, np.arange(4), np.zeros(4), list("abcd"))
    monkeypatch.setattr(F.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        w.commit()
    monkeypatch.undo()
    w.close()
    with pytest.raises(StoreError, match="previous store is at .*s.fgstore.replaced"):
        ActivationStore(store.path)
    np.testing.assert_array_equal(ActivationStore(tmp_path / "s.fgstore.replaced")["l"][:], X)
    # the next writer finishes the interrupted replacement (the new store was complete and synced)
    StoreWriter(store.path, {"l": 3}, 4, dtype="float32", overwrite=True).close()
    np.testing.assert_array_equal(ActivationStore(store.path)["l"][:], np.zeros((4, 3)))
    assert not (tmp_path / "s.fgstore.replaced").exists()
