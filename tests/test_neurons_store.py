import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from finegrain.neurons import Neuron, NeuronIndex, parse_neurons
from finegrain.store import ActivationStore, StoreError, StoreWriter, split_by_sentence


def test_neuron_address_roundtrip():
    n = Neuron.parse("layer.3.mlp:1020")
    assert (n.layer, n.unit) == ("layer.3.mlp", 1020)
    assert str(n) == "layer.3.mlp:1020"
    assert parse_neurons("layer.1:2,lstm.1.cell:12") == [Neuron("layer.1", 2), Neuron("lstm.1.cell", 12)]
    for bad in ["layer.3", "layer.3:-1", ":3", "layer.3:x"]:
        with pytest.raises(ValueError):
            Neuron.parse(bad)


def test_neuron_index_columns():
    idx = NeuronIndex({"a": 3, "b": 2})
    assert idx.total == 5
    assert idx.column("b:1") == 4
    assert idx.neuron(3) == Neuron("b", 0)
    assert [str(n) for n in idx.neurons()] == ["a:0", "a:1", "a:2", "b:0", "b:1"]
    with pytest.raises(IndexError):
        idx.column("b:2")
    with pytest.raises(KeyError):
        idx.column("c:0")


def _write(path, n=10, chunk_rows=4, commit=True):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    w = StoreWriter(path, {"l": 3}, n, label_columns=["pos"], dtype="float32", chunk_rows=chunk_rows)
    w.write({"l": X[:6]}, np.arange(6) // 2, np.arange(6) % 2, [f"w{i}" for i in range(6)], {"pos": ["N"] * 6})
    if commit:
        w.write({"l": X[6:]}, np.arange(6, n) // 2, np.arange(6, n) % 2, [f"w{i}" for i in range(6, n)],
                {"pos": ["V"] * (n - 6)})
        return X, w.commit()
    return X, w


def test_store_roundtrip_and_streaming(tmp_path):
    X, store = _write(tmp_path / "s.fgstore")
    np.testing.assert_array_equal(store["l"][:], X)
    np.testing.assert_array_equal(store.matrix(rows=[1, 7]), X[[1, 7]])
    np.testing.assert_array_equal(store.matrix(neurons=["l:2", "l:0"]), X[:, [2, 0]])
    chunks = list(store.iter_chunks(chunk_rows=3))
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), X)
    assert list(store.labels("pos")) == ["N"] * 6 + ["V"] * 4
    assert store.sentence(1) == ["w2", "w3"]
    with pytest.raises(StoreError, match="unknown layer"):
        store["nope"]
    with pytest.raises(StoreError, match="no label column"):
        store.labels("ner")


def test_incomplete_store_is_never_complete(tmp_path):
    path = tmp_path / "s.fgstore"
    _, w = _write(path, commit=False)
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(path)
    with pytest.raises(StoreError, match="commit with 6 of 10"):
        w.commit()


def test_split_by_sentence_never_splits_a_sentence():
    sent = np.repeat(np.arange(50), 3)
    parts = split_by_sentence(sent, (0.6, 0.2, 0.2), seed=1)
    sets = [set(sent[p]) for p in parts]
    assert sum(len(p) for p in parts) == len(sent)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_writes_reach_disk_in_whole_chunks(tmp_path, monkeypatch):
    """Appends of any size are written chunk by chunk (no read-modify-write of a shared chunk); the
    progress on disk is the last whole chunk until flush/commit, and never overstates."""
    import zarr

    writes = []
    orig = StoreWriter._write_rows

    def spy(self, key, start, end, data):
        writes.append((key, start, end))
        return orig(self, key, start, end, data)

    monkeypatch.setattr(StoreWriter, "_write_rows", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(23, 3)).astype(np.float32)
    w = StoreWriter(tmp_path / "c.fgstore", {"l": 3}, 23, label_columns=["pos"], dtype="float32", chunk_rows=5)
    for a, b in [(0, 3), (3, 9), (9, 16)]:  # blocks that straddle chunk boundaries
        w.write({"l": X[a:b]}, np.arange(a, b), np.zeros(b - a), [f"w{i}" for i in range(a, b)],
                {"pos": ["N"] * (b - a)})
    assert w.rows_written == 16 and w.rows_durable == 15
    assert zarr.open_group(str(w.tmp), mode="r").attrs["rows_written"] == 15
    assert [(s, e) for k, s, e in writes if k == "acts/l"] == [(0, 5), (5, 15)]
    assert {k for k, _, _ in writes} == {"acts/l", "index/sent_id", "index/word_pos", "index/word", "index/label.pos"}
    assert all(s % 5 == 0 and e % 5 == 0 for _, s, e in writes)
    # whole chunks of activations are plain files in zarr's layout, readable by zarr itself
    np.testing.assert_array_equal(zarr.open_group(str(w.tmp), mode="r")["acts/l"][:15], X[:15])
    w.write({"l": X[16:]}, np.arange(16, 23), np.zeros(7), [f"w{i}" for i in range(16, 23)], {"pos": ["V"] * 7})
    store = w.commit()
    assert writes[-1][1:] == (20, 23)  # the edge chunk (rows 20..22) is written whole, padded, as zarr does
    np.testing.assert_array_equal(store["l"][:], X)
    assert list(store.words) == [f"w{i}" for i in range(23)]
    assert list(store.labels("pos")) == ["N"] * 16 + ["V"] * 7


def test_chunks_tile_the_rows_evenly(tmp_path):
    """Edge chunks are stored at full size, so chunk_rows is adjusted to tile the rows: 16,536 rows at
    chunk_rows=8192 become three chunks of 5,512, not two and an almost empty third."""
    w = StoreWriter(tmp_path / "e.fgstore", {"l": 2}, 16536, chunk_rows=8192)
    assert w.chunk_rows == 5512
    assert StoreWriter(tmp_path / "f.fgstore", {"l": 2}, 100, chunk_rows=8192).chunk_rows == 100


def test_rewind_rewrites_rows_already_on_disk(tmp_path):
    X, w = _write(tmp_path / "r.fgstore", commit=False)  # 6 rows accepted, 4 on disk (chunk 4)
    assert w.rows_durable == 4
    with pytest.raises(StoreError, match="cannot rewind"):
        w.rewind(2)  # rows 4..5 are still pending
    w.flush()
    assert w.rows_durable == 6
    with pytest.raises(StoreError, match="cannot rewind"):
        w.rewind(7)
    w.rewind(2)
    w.write({"l": X[2:] * 0 + 1}, np.arange(2, 10) // 2, np.arange(2, 10) % 2, [f"w{i}" for i in range(2, 10)],
            {"pos": ["V"] * 8})
    store = w.commit()
    np.testing.assert_array_equal(store["l"][:2], X[:2])
    assert (store["l"][2:] == 1).all()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunk_files_bypass_the_page_cache_or_fall_back_with_the_same_bytes(tmp_path, monkeypatch, dtype):
    """Whole chunks go to disk with O_DIRECT where the file system allows it (an aligned head, the
    unaligned tail buffered), else buffered: the store reads the same either way, also when O_DIRECT is
    refused at open (tmpfs) or at write time."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1003, 9)).astype(np.float32)  # chunks of 251 rows x 9 x 4 B: not a multiple of 4 KiB

    def write(path):
        w = StoreWriter(path, {"l": 9}, len(X), dtype=dtype, chunk_rows=300)
        for a in range(0, len(X), 170):
            b = min(a + 170, len(X))
            w.write({"l": X[a:b]}, np.arange(a, b), np.zeros(b - a), ["w"] * (b - a))
        return w, w.commit()

    w, ref = write(tmp_path / "a.fgstore")
    np.testing.assert_array_equal(ref["l"][:], X.astype(dtype))
    monkeypatch.setenv("FINEGRAIN_DIRECT_IO", "0")
    w0, buffered = write(tmp_path / "b.fgstore")
    assert not w0._files.direct
    np.testing.assert_array_equal(buffered["l"][:], ref["l"][:])
    monkeypatch.delenv("FINEGRAIN_DIRECT_IO")
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):  # tmpfs refuses O_DIRECT at open
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            np.testing.assert_array_equal(write(shm / "c.fgstore")[1]["l"][:], ref["l"][:])
        finally:
            shutil.rmtree(shm)
    real_write = os.write
    calls = {"n": 0}

    def einval_once(fd, data):
        calls["n"] += 1
        if calls["n"] == 1 and os.O_DIRECT & fcntl.fcntl(fd, fcntl.F_GETFL):
            raise OSError(22, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", einval_once)
    wd, refused = write(tmp_path / "d.fgstore")
    np.testing.assert_array_equal(refused["l"][:], ref["l"][:])
    if w._files.direct:  # O_DIRECT worked here, so the failing write above took the fallback
        assert not wd._files.direct


def test_lazy_writer_creates_the_store_on_first_write(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    stale = tmp_path / "z.fgstore.partial"
    stale.mkdir()
    (stale / "junk").write_text("from an incompatible earlier run")
    w = StoreWriter(tmp_path / "z.fgstore", {"l": 3}, 4, dtype="float32", lazy=True)
    assert (stale / "junk").exists()  # nothing touched yet
    w.write({"l": X}, np.arange(4), np.zeros(4), list("abcd"))
    assert not (stale / "junk").exists()
    np.testing.assert_array_equal(w.commit()["l"][:], X)


def test_switches_are_parameters_read_at_call_time(tmp_path, monkeypatch):
    """FINEGRAIN_DIRECT_IO and FINEGRAIN_ONEDNN are defaults of parameters, read at each call (issue 17)."""
    from finegrain.models import kernels

    monkeypatch.setenv("FINEGRAIN_DIRECT_IO", "0")
    assert not StoreWriter(tmp_path / "a.fgstore", {"l": 2}, 4, lazy=True)._files.direct
    assert StoreWriter(tmp_path / "b.fgstore", {"l": 2}, 4, lazy=True, direct_io=True)._files.direct == \
        hasattr(os, "O_DIRECT")
    monkeypatch.setenv("FINEGRAIN_DIRECT_IO", "1")
    assert StoreWriter(tmp_path / "c.fgstore", {"l": 2}, 4, lazy=True)._files.direct == hasattr(os, "O_DIRECT")
    assert not StoreWriter(tmp_path / "d.fgstore", {"l": 2}, 4, lazy=True, direct_io=False)._files.direct
    monkeypatch.setenv("FINEGRAIN_ONEDNN", "0")
    assert not kernels.onednn_usable() and not kernels.onednn_enabled()
    monkeypatch.setenv("FINEGRAIN_ONEDNN", "1")
    assert kernels.onednn_enabled() and not kernels.onednn_usable(enabled=False)


def test_store_arrays_slice_like_zarr(tmp_path):
    X, store = _write(tmp_path / "s.fgstore", n=10, chunk_rows=4)
    a = store["l"]
    assert a.shape == (10, 3) and a.dtype == np.float32 and a.chunks == (4, 3) and len(a) == 10
    np.testing.assert_array_equal(a[3], X[3])
    np.testing.assert_array_equal(a[-1], X[-1])
    np.testing.assert_array_equal(a[2:9:3], X[2:9:3])
    np.testing.assert_array_equal(a[[7, 1, 7]], X[[7, 1, 7]])
    np.testing.assert_array_equal(a[X[:, 0] > 0], X[X[:, 0] > 0])
    np.testing.assert_array_equal(a[:, 1], X[:, 1])
    np.testing.assert_array_equal(a.get_orthogonal_selection((np.arange(10), np.array([2, 0]))), X[:, [2, 0]])
    np.testing.assert_array_equal(np.asarray(a), X)
    out = a[0:2]
    out[:] = 0  # a copy: the reader's cached chunk is untouched
    np.testing.assert_array_equal(a[0:2], X[0:2])
    with pytest.raises(IndexError):
        a[[10]]
    np.testing.assert_array_equal(store.index("word_pos"), np.arange(10) % 2)


def test_neuron_index_equality_is_equality_of_the_columns_neurons():
    """Index equality (compared by runs of consecutive units, without a Neuron per column) holds exactly
    when the columns' neurons are the same, however the indexes were written (hypothesis)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    units = st.lists(st.tuples(st.sampled_from(["layer.1", "layer.2", "x"]), st.integers(0, 6)), max_size=12,
                     unique=True)

    @settings(max_examples=200, deadline=None)
    @given(units, units)
    def check(a, b):
        na, nb = [Neuron(*u) for u in a], [Neuron(*u) for u in b]
        ia, ib = NeuronIndex.from_neurons(na), NeuronIndex.from_neurons(nb)
        assert (ia == ib) == (na == nb)
        assert ia == NeuronIndex.from_neurons([str(n) for n in na])

    check()
    full = NeuronIndex({"layer.1": 3, "layer.2": 2})
    assert full == NeuronIndex.from_neurons(["layer.1:0", "layer.1:1", "layer.1:2", "layer.2:0", "layer.2:1"])
    assert full == NeuronIndex({"layer.1": 3, "layer.2": 2}, units={"layer.1": [0, 1, 2]})
    assert full != NeuronIndex({"layer.1": 3, "layer.2": 2}, units={"layer.1": [0, 2, 1]})
    assert full != NeuronIndex({"layer.2": 2, "layer.1": 3})
