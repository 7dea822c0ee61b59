"""Distributed engine: Ray extraction == local extraction, parallel probes == sequential ones,
region writing of the store, and the message when Ray is missing."""

import functools
import logging
import sys

import numpy as np
import pytest

from finegrain.data.corpus import Corpus, Sentence
from finegrain.data.generate import generate_corpus
from finegrain.distributed import RayNotInstalledError, extract_ray, plan_shards, run_parallel, shard_dataset
from finegrain.distributed.ray_extract import _owned_rows
from finegrain.extraction import extract
from finegrain.store import ActivationStore, StoreError, StoreWriter
from finegrain.testing import tiny_bert


# -- no Ray needed ------------------------------------------------------------------------------
def _square(x):
    return x * x


def test_missing_ray_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install 'finegrain\[ray\]'"):
        extract_ray("minilm", Corpus.from_texts(["a b"]), tmp_path / "x.fgstore")
    with pytest.raises(RuntimeError, match=r"finegrain\[ray\]"):  # the CLI prints RuntimeErrors in one line
        run_parallel(_square, [{"x": -1}], engine="ray")
    assert run_parallel(_square, [{"x": -1}, {"x": 3}], engine="local") == [1, 9]
    with pytest.raises(ValueError, match="engine"):
        run_parallel(_square, [{"x": 1}], engine="spark")


def test_shards_cover_rows_and_owned_chunks_are_disjoint():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=997)
    sent_start = np.concatenate([[0], np.cumsum(lengths)])
    n_rows, chunk = int(sent_start[-1]), 64
    shards = plan_shards(sent_start, len(lengths), buffer_sentences=10, n_shards=7)
    assert len(shards) == 7 and shards[0]["r0"] == 0 and shards[-1]["r1"] == n_rows
    assert all(a["r1"] == b["r0"] and a["s1"] == b["s0"] for a, b in zip(shards, shards[1:]))
    assert all(s["s0"] % 10 == 0 for s in shards)  # whole buffers: the batches of a local run
    owner = np.full(n_rows // chunk + 1, -1)
    for i, s in enumerate(shards):
        lo, hi = _owned_rows(s["r0"], s["r1"], chunk, n_rows)
        assert s["r0"] <= lo <= hi <= s["r1"]
        assert lo == hi or (lo % chunk == 0 and (hi % chunk == 0 or hi == n_rows))
        for c in range(lo // chunk, -(-hi // chunk)) if lo < hi else []:
            assert owner[c] == -1, "two shards write the same chunk"
            owner[c] = i
    assert _owned_rows(5, 60, 64, 1000) == (60, 60)  # inside one chunk: nothing owned
    assert _owned_rows(0, 1000, 64, 1000) == (0, 1000)  # the store's end is a boundary


def test_write_region_and_commit_only_when_all_regions_done(tmp_path):
    path = tmp_path / "r.fgstore"
    w = StoreWriter(path, {"l": 3}, 10, label_columns=["y"], dtype="float32", chunk_rows=4)
    other = StoreWriter.open_partial(path)  # e.g. another process
    assert other.chunk_rows == 4 and other.n_rows == 10
    other.write_region(4, {"l": np.full((6, 3), 2.0, np.float32)})
    other.mark_done("b")
    w.write_region(0, {"l": np.ones((4, 3), np.float32)})
    w.write_region(0, sent_id=np.arange(10), word_pos=np.zeros(10), words=list("abcdefghij"),
                   labels={"y": ["p"] * 10})
    with pytest.raises(StoreError, match="not done"):
        w.commit_regions(["a", "b"])
    with pytest.raises(StoreError, match="outside"):
        w.write_region(8, {"l": np.ones((4, 3), np.float32)})
    w.mark_done("a")
    store = w.commit_regions(["a", "b"])
    np.testing.assert_array_equal(store["l"][:, 0], [1] * 4 + [2] * 6)
    assert "".join(store.words) == "abcdefghij" and not (path / "_regions").exists()


# -- with Ray ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    # test-module functions are not importable by the workers: send them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def labelled_corpus():
    return generate_corpus(150, seed=0)


def _ray_data_stats(caplog) -> str:
    stats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ray Data execution")]
    assert len(stats) == 1, "extract_ray did not run a Ray Data pipeline"
    return stats[0]


def _shards_run(caplog) -> set[str]:
    return {r.args[0] for r in caplog.records if r.name.endswith("ray_extract") and r.msg.startswith("shard %s")}


@pytest.mark.ray
def test_shard_dataset_is_a_ray_data_actor_pool(ray_session, tmp_path):
    """The pipeline is a Ray Data dataset (one block per shard) mapped by ExtractWorker actors."""
    from finegrain.extraction import model_facts, plan_extraction

    corpus = Corpus.from_texts(["a b c", "d e", "f g h i", "j"])
    plan = plan_extraction(model_facts(tiny_bert(seed=0), "hidden"), corpus)
    shards = plan_shards(plan.sent_start, len(corpus), buffer_sentences=1, n_shards=3)
    ds = shard_dataset(shards, [s.words for s in corpus.sentences], functools.partial(tiny_bert, seed=0), plan,
                       tmp_path / "x.fgstore", num_workers=2, cpus_per_worker=0.5, num_gpus=0)
    assert isinstance(ds, ray_session.data.Dataset)
    assert "MapBatches(ExtractWorker)" in repr(ds) and ds.stats() == ""  # lazy: nothing ran yet
    assert not ds.context.enable_progress_bars and ray_session.data.DataContext.get_current().enable_progress_bars


@pytest.mark.ray
@pytest.mark.slow
def test_extract_ray_equals_local(ray_session, labelled_corpus, tmp_path, caplog):
    corpus = labelled_corpus
    kw = {"layers": "all", "aggregation": "mean", "buffer_sentences": 16, "chunk_rows": 100}
    local = extract(tiny_bert(seed=0), corpus, tmp_path / "local.fgstore", progress=False, **kw)
    with caplog.at_level(logging.DEBUG, logger="finegrain.distributed.ray_extract"):
        dist = extract_ray(functools.partial(tiny_bert, seed=0), corpus, tmp_path / "ray.fgstore", num_workers=2,
                           progress=False, **kw)
    assert dist.n_rows == local.n_rows == corpus.n_words
    assert dist.layers == local.layers and dist.meta["fingerprint"] == local.meta["fingerprint"]
    for lay in local.layers:  # the same batches, so the same values (float32)
        np.testing.assert_allclose(dist[lay][:], local[lay][:], rtol=0, atol=1e-6)
    for col in ("sent_id", "word_pos", "word", *corpus.label_columns):
        np.testing.assert_array_equal(dist.index(col), local.index(col))
    assert not (tmp_path / "ray.fgstore.partial").exists()
    # Ray Data did the work: one ExtractWorker call per shard (10 buffers -> 8 shards for 2 workers)
    stats = _ray_data_stats(caplog)
    assert "MapBatches(ExtractWorker): 8 tasks executed" in stats, stats
    assert len(_shards_run(caplog)) == 8

    # sentence pooling, one worker, shards that all share chunks with their neighbours
    sents = Corpus([Sentence(s.words, sent_labels=s.sent_labels) for s in corpus.sentences[:40]])
    kw = {"layers": ["layer.1", "layer.2"], "pooling": "mean", "buffer_sentences": 4, "chunk_rows": 16}
    local = extract(tiny_bert(seed=0), sents, tmp_path / "lp.fgstore", progress=False, **kw)
    dist = extract_ray(functools.partial(tiny_bert, seed=0), sents, tmp_path / "rp.fgstore", num_workers=1,
                       n_shards=5, progress=False, **kw)
    np.testing.assert_allclose(dist.matrix(), local.matrix(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dist.labels("sentiment"), local.labels("sentiment"))
    with pytest.raises(StoreError, match="already exists"):
        extract_ray(functools.partial(tiny_bert, seed=0), sents, tmp_path / "rp.fgstore")


def _flaky_bert(flag: str, poison: tuple[str, ...]):
    """tiny_bert whose forward pass fails on the ``poison`` sentence while the file ``flag`` exists."""
    import os

    model = tiny_bert(seed=0)
    encode = model.encode

    def flaky_encode(words, *args, **kwargs):
        if os.path.exists(flag) and any(tuple(w) == poison for w in words):
            raise RuntimeError("planted failure")
        return encode(words, *args, **kwargs)

    model.encode = flaky_encode
    return model


@pytest.mark.ray
@pytest.mark.slow
def test_interrupted_extract_ray_is_not_committed_and_resumes(ray_session, labelled_corpus, tmp_path, caplog):
    corpus = Corpus(labelled_corpus.sentences[:64])
    kw = {"layers": "hidden", "buffer_sentences": 8, "chunk_rows": 50, "n_shards": 4}
    flag = tmp_path / "fail"
    flag.write_text("1")
    model = functools.partial(_flaky_bert, str(flag), tuple(corpus.sentences[60].words))  # in the last shard
    path = tmp_path / "r.fgstore"
    with pytest.raises(RuntimeError, match="planted failure"):
        extract_ray(model, corpus, path, num_workers=1, progress=False, **kw)
    assert not path.exists()  # an interrupted run is never committed
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(path)
    partial = StoreWriter.open_partial(path)
    assert partial.meta["complete"] is False
    names = [s["name"] for s in plan_shards(np.concatenate([[0], np.cumsum([len(s.words) for s in corpus.sentences])]),
                                            len(corpus), 8, 4)]
    done = partial.done_regions()
    assert names[-1] not in done and 0 < len(done) < len(names)

    flag.unlink()
    with caplog.at_level(logging.DEBUG, logger="finegrain.distributed.ray_extract"):
        dist = extract_ray(model, corpus, path, num_workers=2, progress=False, **kw)
    assert _shards_run(caplog) == set(names) - done  # the shards done before are not recomputed
    assert any("resuming" in r.getMessage() for r in caplog.records)
    local = extract(tiny_bert(seed=0), corpus, tmp_path / "local.fgstore", progress=False,
                    **{k: v for k, v in kw.items() if k != "n_shards"})
    assert dist.n_rows == local.n_rows and dist.meta["fingerprint"] == local.meta["fingerprint"]
    np.testing.assert_allclose(dist.matrix(), local.matrix(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dist.words, local.words)
    assert not (tmp_path / "r.fgstore.partial").exists()


def _seeded_probe_job(seed: int, n: int, d: int) -> dict:
    """A small probe trained from a seed (planted rule + noise); used as a Ray task."""
    from finegrain.probe import LinearProbe

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * rng.normal(size=n) > 0, "A", "B")
    p = LinearProbe(epochs=8, lr=0.05, seed=seed, l1=1e-4, l2=1e-4, device="cpu", progress=False).fit(X, y)
    return {"acc": p.score(X, y), "w": p.model_.weight.detach().numpy().copy()}


@pytest.mark.ray
@pytest.mark.slow
def test_parallel_probes_equal_sequential(ray_session, labelled_corpus, tmp_path):
    jobs = [{"seed": s, "n": 300, "d": 8} for s in range(4)]
    seq = run_parallel(_seeded_probe_job, jobs, engine="local")
    par = run_parallel(_seeded_probe_job, jobs, engine="ray")
    assert len(par) == 4 and len({round(r["acc"], 6) for r in seq}) > 1  # the seeds do matter
    for a, b in zip(seq, par):
        assert a["acc"] == b["acc"]
        np.testing.assert_allclose(a["w"], b["w"], rtol=0, atol=1e-6)
        assert a["acc"] > 0.7  # the planted rule is learnt

    from finegrain.distributed import probe_layers_ray
    from finegrain.probe import LinearProbe, probe_layers

    store = extract(tiny_bert(seed=0), labelled_corpus, tmp_path / "p.fgstore", layers="hidden", progress=False)
    probe = LinearProbe(epochs=2, seed=0, device="cpu", progress=False)
    ref = probe_layers(store, "pos", probe=probe, seed=1)
    got = probe_layers_ray(store.path, "pos", probe=probe, seed=1)
    assert got.label == ref.label and got.probe == ref.probe and got.split_sizes == ref.split_sizes
    assert [r["layer"] for r in got.rows] == [r["layer"] for r in ref.rows] == [*store.layers, "all"]
    for a, b in zip(ref.rows, got.rows):
        assert a.keys() == b.keys() and a["n_neurons"] == b["n_neurons"]
        for k in ("train_acc", "dev_acc", "test_acc", "test_macro_f1"):
            assert a[k] == pytest.approx(b[k], abs=1e-9), (a["layer"], k)
    with pytest.raises(Exception, match="label"):
        probe_layers_ray(ActivationStore(store.path), "nope")


@pytest.mark.slow
def test_bench_quick_extraction_smoke(tmp_path):
    """`python bench/run.py --quick --only extraction` runs and writes its report (not a timing test)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "r.md"
    proc = subprocess.run([sys.executable, str(root / "bench" / "run.py"), "--quick", "--only", "extraction",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "finegrain / bare forward, same kernels" in text and "torch" in text and "CPUs" in text
    assert "Load average" in text and str(root) not in text  # the load is recorded, no machine paths


def test_ray_probe_layers_command_keeps_the_converging_defaults(labelled_corpus, tmp_path, capsys):
    """`finegrain ray probe-layers` once trained NeuroX's 10 epochs at lr 1e-3 whatever the flags."""
    import json

    from finegrain.cli import main

    store = extract(tiny_bert(seed=0), labelled_corpus, tmp_path / "c.fgstore", layers="hidden", progress=False)
    out = tmp_path / "r.json"
    assert main(["ray", "probe-layers", str(store.path), "--label", "pos", "--engine", "local", "--layers",
                 "layer.1", "--out", str(out)]) == 0
    probe = json.loads(out.read_text())["probe"]  # scikit-learn's repr: the parameters set, nothing else
    assert probe.startswith("LinearProbe(") and "epochs" not in probe and "lr=" not in probe, probe
    assert main(["ray", "probe-layers", str(store.path), "--label", "pos", "--engine", "local", "--layers",
                 "layer.1", "--epochs", "7", "--out", str(out)]) == 0
    assert "epochs=7" in json.loads(out.read_text())["probe"]
