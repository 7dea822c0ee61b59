"""Distributed extraction on Ray Data: many model replicas fill one activation store.

The corpus is cut into *shards*, contiguous runs of whole extraction buffers (the buffers of
:func:`finegrain.extract.extract`, so every batch is the one a single process would run and the
values are the same). The shards become the rows of a Ray Data dataset
(``ray.data.from_items``, one shard descriptor per block: sentence range, row range and the
shard's words) mapped by :class:`ExtractWorker` on a fixed-size actor pool
(``map_batches(..., batch_size=1, compute=ActorPoolStrategy(size=num_workers))``): one model
replica per actor, ``num_gpus`` per actor when the cluster has GPUs. Each actor writes its rows
straight into the shared partial store, but only the chunks it owns entirely: zarr rewrites a
whole chunk on a partial write, so the rows of a chunk shared with the neighbouring shard (at most
one chunk per end) go to a side file. The dataset's output is one small record per shard, which
the driver consumes (progress bar) while it writes the index columns; when every shard has its
done-marker it copies the side files in and commits the store (metadata last, then the atomic
rename), so an incomplete distributed run never looks complete. Re-running resumes: shards
already marked done are not in the dataset.

Ray Data and small machines: an actor pool that takes every logical CPU starves any *task* the
pipeline needs (ray-project/ray#44687, e.g. the read tasks of ``ray.data.range``). Here the input
is built on the driver (``from_items`` puts the blocks in the object store; no read task) and the
pool is the only operator, so the actors may take all CPUs; they take at most one logical CPU each,
fractions of one when the cluster has fewer CPUs than workers, so the pool always fits (2 workers
on a 2-CPU machine, 3 workers get 2/3 CPU each).

Needs a file system shared by the driver and the actors (one machine, or NFS/Lustre on a cluster).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.data import as_corpus
from finegrain.distributed._ray import init_ray, require_ray, require_ray_data
from finegrain.errors import ModelError, ParameterError
from finegrain.extraction import buffer_index, compute_buffer, model_facts, plan_extraction
from finegrain.models import ModelAdapter, load_model, resolve_device
from finegrain.store import StoreWriter, check_output

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

MAX_BUFFERS_PER_SHARD = 64
RECORD = ("name", "rows", "seconds", "pid", "device")  # what a shard returns to the driver


def _load_model(model, task: str, device: str | None, num_threads: int | None = None):
    """The adapter of ``model`` (a name/path, a zero-argument factory or an adapter), in eval mode."""
    if num_threads:
        torch.set_num_threads(num_threads)
    if isinstance(model, str | os.PathLike):
        adapter = load_model(str(model), task=task, device=device or "auto")
    else:
        adapter = model() if callable(model) and not isinstance(model, ModelAdapter) else model
        if not isinstance(adapter, ModelAdapter):
            raise ModelError(f"the model factory returned {type(adapter).__name__}, not a finegrain adapter")
        if device is not None:
            adapter.to(resolve_device(device))
    adapter.model.eval()
    return adapter


def _model_facts(model, task: str, layers) -> dict:
    """:func:`finegrain.extract.model_facts` (layer sizes, weights hash: what the store is laid out
    with) of ``model``; a name or factory is loaded on the CPU for it, an adapter is used as is."""
    return model_facts(model if isinstance(model, ModelAdapter) else _load_model(model, task, "cpu"), layers)


# ---------------------------------------------------------------------------------------------
# the actor
class ExtractWorker:
    """One model replica of the Ray Data actor pool: ``__call__`` computes and writes the shards of
    a batch (a ``pyarrow.Table`` of shard descriptors) and returns one record per shard."""

    def __init__(self, model, plan, path: str, *, task: str = "base", device: str | None = "auto",
                 num_threads: int | None = None, batch_size: int = 32, buffer_sentences: int = 512,
                 token: str | None = None, direct_io: bool | None = None):
        self.model = _load_model(model, task, device, num_threads)
        self.plan = plan
        # the driver's partial store (its owner token): never one another run created meanwhile
        self.writer = StoreWriter.open_partial(path, token=token, direct_io=direct_io)
        self.batch_size = batch_size
        self.buffer_sentences = buffer_sentences

    def __call__(self, batch) -> dict[str, np.ndarray]:
        records = [self.run_shard(shard) for shard in batch.to_pylist()]
        return {k: np.asarray([r[k] for r in records]) for k in RECORD}

    def run_shard(self, shard: dict) -> dict:
        """Compute and write the rows of one shard (``shard["words"]``: its sentences as word lists)."""
        t0 = time.perf_counter()
        plan, writer, step = self.plan, self.writer, self.buffer_sentences
        sentences = shard["words"]
        r0, r1 = shard["r0"], shard["r1"]
        lo, hi = _owned_rows(r0, r1, writer.chunk_rows, writer.n_rows)
        edges: list[tuple[int, dict[str, np.ndarray]]] = []
        row = r0
        with plan.fast_linears(self.model, self.batch_size):  # weights packed once per shard
            for k0 in range(0, len(sentences), step):
                buf = compute_buffer(self.model, plan, sentences[k0 : k0 + step], self.batch_size)
                n = len(next(iter(buf.values())))
                a, b = row, row + n
                # rows [lo, hi) are in chunks this shard owns; the others go to the side file
                ia, ib = max(a, lo), min(b, hi)
                if ia < ib:
                    writer.write_region(ia, {k: v[ia - a : ib - a] for k, v in buf.items()})
                if a < min(b, lo):
                    edges.append((a, {k: v[: min(b, lo) - a] for k, v in buf.items()}))
                if max(a, hi) < b:
                    s = max(a, hi)
                    edges.append((s, {k: v[s - a :] for k, v in buf.items()}))
                row = b
        if row != r1:
            raise ModelError(f"shard {shard['name']}: produced rows {r0}:{row}, expected {r0}:{r1}")
        _save_edges(writer.region_dir / f"{shard['name']}.edges.npz", edges)
        writer.mark_done(shard["name"])
        return {"name": shard["name"], "rows": r1 - r0, "seconds": time.perf_counter() - t0, "pid": os.getpid(),
                "device": str(self.model.device)}


def _owned_rows(r0: int, r1: int, chunk: int, n_rows: int) -> tuple[int, int]:
    """The part of rows ``[r0, r1)`` made of whole chunks (the store's end counts as a boundary)."""
    lo = r0 if r0 % chunk == 0 else (r0 // chunk + 1) * chunk
    hi = r1 if (r1 % chunk == 0 or r1 == n_rows) else (r1 // chunk) * chunk
    return (lo, hi) if lo < hi else (r1, r1)


def _save_edges(path: Path, edges: list[tuple[int, dict[str, np.ndarray]]]) -> None:
    arrays = {"starts": np.asarray([s for s, _ in edges], dtype=np.int64)}
    for i, (_, acts) in enumerate(edges):
        for lay, arr in acts.items():
            arrays[f"p{i}__{lay}"] = arr
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_edges(path: Path, layers: Sequence[str]) -> list[tuple[int, dict[str, np.ndarray]]]:
    with np.load(path) as z:
        return [(int(s), {lay: z[f"p{i}__{lay}"] for lay in layers}) for i, s in enumerate(z["starts"])]


# ---------------------------------------------------------------------------------------------
def plan_shards(sent_start: np.ndarray, n_sentences: int, buffer_sentences: int, n_shards: int) -> list[dict]:
    """Contiguous shards of whole buffers: ``{"name", "s0", "s1", "r0", "r1"}`` (sentences, rows)."""
    n_buffers = math.ceil(n_sentences / buffer_sentences)
    n_shards = max(1, min(n_shards, n_buffers))
    bounds = np.linspace(0, n_buffers, n_shards + 1).round().astype(int)
    shards = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        s0, s1 = int(a) * buffer_sentences, min(int(b) * buffer_sentences, n_sentences)
        r0, r1 = int(sent_start[s0]), int(sent_start[s1])
        shards.append({"name": f"s{s0}-{s1}_r{r0}-{r1}", "s0": s0, "s1": s1, "r0": r0, "r1": r1})
    return shards


def shard_dataset(shards: Sequence[dict], words: Sequence[Sequence[str]], model, plan, path: str | os.PathLike, *,
                  num_workers: int, cpus_per_worker: float, num_gpus: float, task: str = "base",
                  device: str | None = "auto", batch_size: int = 32, buffer_sentences: int = 512,
                  token: str | None = None, direct_io: bool | None = None) -> ray.data.Dataset:
    """The Ray Data pipeline of :func:`extract_ray` (lazy; nothing runs until it is consumed): one
    shard descriptor per block, mapped by :class:`ExtractWorker` on a pool of ``num_workers`` actors;
    its rows are the per-shard records (``name``, ``rows``, ``seconds``, ``pid``, ``device``)."""
    rd = require_ray_data()
    items = [{**s, "words": [list(w) for w in words[s["s0"] : s["s1"]]]} for s in shards]
    ds = rd.from_items(items, override_num_blocks=len(items))
    ctx = ds.context  # a copy owned by this dataset: the caller's DataContext stays as it was
    ctx.enable_progress_bars = False  # extract_ray shows its own bar, per shard
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True  # a failing shard raises its own error in the driver
    return ds.map_batches(
        ExtractWorker,
        batch_size=1,
        batch_format="pyarrow",
        # one shard in flight per actor: a free actor pulls the next shard, as from a queue
        compute=rd.ActorPoolStrategy(size=num_workers, max_tasks_in_flight_per_actor=1),
        fn_constructor_args=(model, plan, os.fspath(path)),
        fn_constructor_kwargs={"task": task, "device": device, "num_threads": max(1, int(cpus_per_worker)),
                               "batch_size": batch_size, "buffer_sentences": buffer_sentences, "token": token,
                               "direct_io": direct_io},
        num_cpus=cpus_per_worker,
        num_gpus=num_gpus,
    )


def _write_index(writer, plan, corpus, buffer_sentences: int) -> None:
    for b0 in range(0, len(corpus), buffer_sentences):
        sents = corpus.sentences[b0 : b0 + buffer_sentences]
        writer.write_region(int(plan.sent_start[b0]), **buffer_index(plan, sents, b0))


def extract_ray(
    model: str | Callable | object,
    corpus,
    out: str | os.PathLike,
    layers: Sequence[str] | str | None = "hidden",
    aggregation: str = "mean",
    pooling: str | None = None,
    dtype: str = "auto",
    batch_size: int = 32,
    num_workers: int = 2,
    overwrite: bool = False,
    *,
    address: str | None = None,
    task: str = "base",
    device: str | None = "auto",
    num_gpus: float | None = None,
    cpus_per_worker: float | None = None,
    buffer_sentences: int = 512,
    max_length: int | None = None,
    chunk_rows: int = 8192,
    n_shards: int | None = None,
    resume: bool = True,
    progress: bool | None = None,
    precision: str = "float32",
    neurons=None,
    onednn: bool | None = None,
    direct_io: bool | None = None,
):
    """:func:`finegrain.extract.extract` with Ray Data: shards of the corpus mapped by a pool of
    ``num_workers`` actors (one model replica each); same store, same rows, same values.

    ``model``: a name/path for :func:`finegrain.models.load_model` (loaded in every actor), a
    picklable zero-argument factory returning an adapter (e.g. ``functools.partial(tiny_bert, seed=0)``)
    or an adapter (pickled to the actors). The store is laid out from the layer sizes and weights
    hash of one more copy loaded on the CPU: a factory is called here, a name is loaded by a Ray task
    (its weights may be only where the workers are).
    ``address``: an existing Ray cluster; otherwise the running Ray session, or a local one started
    here. ``num_gpus`` per actor defaults to one GPU per actor (shared when there are fewer GPUs
    than workers) if the cluster has GPUs and ``device`` allows CUDA, else 0. ``cpus_per_worker``
    (logical CPUs per actor; the actor runs ``max(1, int(cpus_per_worker))`` torch threads)
    defaults to 1, less if the cluster has fewer CPUs than workers, so that the pool always starts.
    ``precision``, ``neurons``, ``onednn``, ``direct_io``: as in :func:`~finegrain.extract.extract`. The
    driver holds the store's lock for the whole run (a second writer of ``out`` fails at once); the actors
    write only into the partial store that carries the driver's owner token. Token-level stores
    (``aggregation="token"``) need the tokenizer where the index is written: use the local engine.
    """
    if num_workers < 1:
        raise ParameterError(f"num_workers must be >= 1, got {num_workers}")
    if buffer_sentences < 1 or batch_size < 1:
        raise ParameterError("batch_size and buffer_sentences must be >= 1")
    if aggregation == "token" and not pooling:
        raise ParameterError("aggregation='token' is not available with the Ray engine; use the local engine")
    path = check_output(out, overwrite)  # before starting Ray: a refused output fails at once
    corpus = as_corpus(corpus)
    ray = init_ray(address)
    require_ray_data()
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if num_gpus is None:
        num_gpus = min(1.0, gpus / num_workers) if gpus and device in (None, "auto", "cuda") else 0
    if cpus_per_worker is None:
        cpus_per_worker = min(1.0, (cpus or 1) / num_workers)
    if num_gpus > gpus or (cpus and cpus_per_worker > cpus):
        # Ray Data would wait for such an actor forever
        raise ParameterError(f"an actor asks for {cpus_per_worker:g} CPU(s) and {num_gpus:g} GPU(s); "
                         f"the cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s)")

    t0 = time.perf_counter()
    if isinstance(model, str | os.PathLike):
        # the weights may be where the workers are, not here: read the layout in a Ray task
        facts_task = ray.remote(_model_facts).options(num_cpus=min(1.0, cpus_per_worker), num_gpus=0)
        facts = ray.get(facts_task.remote(model, task, layers))
    else:
        facts = _model_facts(model, task, layers)
    log.debug("model facts in %.1fs", time.perf_counter() - t0)
    plan = plan_extraction(facts, corpus, aggregation, pooling, dtype, max_length, precision, neurons,
                           onednn=onednn)
    writer = StoreWriter(
        path, plan.sizes, plan.n_rows, label_columns=plan.label_cols, dtype=plan.dtype, chunk_rows=chunk_rows,
        meta={**plan.meta, "engine": "ray"}, resume=resume, overwrite=overwrite, direct_io=direct_io,
    )
    try:
        return _run_shards(writer, plan, corpus, model, path, num_workers=num_workers,
                           cpus_per_worker=cpus_per_worker, num_gpus=num_gpus, task=task, device=device,
                           batch_size=batch_size, buffer_sentences=buffer_sentences, n_shards=n_shards,
                           resume=resume, progress=progress, direct_io=direct_io)
    finally:
        writer.close()  # the lock, whatever happened (a commit has released it already)


def _run_shards(writer, plan, corpus, model, path: Path, *, num_workers: int, cpus_per_worker: float,
                num_gpus: float, task: str, device, batch_size: int, buffer_sentences: int, n_shards: int | None,
                resume: bool, progress: bool | None, direct_io: bool | None):
    shards = plan_shards(plan.sent_start, len(corpus), buffer_sentences,
                         n_shards or max(4 * num_workers, math.ceil(len(corpus) / buffer_sentences
                                                                    / MAX_BUFFERS_PER_SHARD)))
    done = writer.done_regions() if resume else set()
    todo = [s for s in shards if s["name"] not in done]
    if len(todo) < len(shards):
        log.info("resuming %s: %d of %d shards already written", path, len(shards) - len(todo), len(shards))
    # the actors need only the layout, not the per-sentence arrays
    lite = dataclasses.replace(plan, rows_per_sent=np.zeros(0, np.int64), sent_start=np.zeros(0, np.int64))
    with ThreadPoolExecutor(1) as pool:
        # the index columns are the driver's job, written while the actors compute
        index_job = pool.submit(_write_index, writer, plan, corpus, buffer_sentences)
        if todo:
            ds = shard_dataset(todo, [s.words for s in corpus.sentences], model, lite, path,
                               num_workers=min(num_workers, len(todo)), cpus_per_worker=cpus_per_worker,
                               num_gpus=num_gpus, task=task, device=device, batch_size=batch_size,
                               buffer_sentences=buffer_sentences, token=writer.owner_token, direct_io=direct_io)
            bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="extract[ray]", unit="shard",
                       disable=None if progress is None else not progress)
            records = iter(ds.iter_rows())
            try:
                for rec in records:
                    log.debug("shard %s: %d rows in %.1fs (pid %s, %s)", rec["name"], rec["rows"], rec["seconds"],
                              rec["pid"], rec["device"])
                    bar.update(1)
            finally:
                bar.close()
                close = getattr(records, "close", None)
                if close is not None:  # an abandoned iteration stops the executor and its actors now
                    close()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Ray Data execution of %s:\n%s", path, ds.stats())
        index_job.result()
    # the chunks shared by neighbouring shards, written by one process now that all are done
    for shard in shards:
        edge_file = writer.region_dir / f"{shard['name']}.edges.npz"
        for start, acts in _load_edges(edge_file, plan.layer_names):
            writer.write_region(start, acts)
    return writer.commit_regions([s["name"] for s in shards])


def _ray_available() -> bool:
    try:
        require_ray()
        return True
    except ImportError:
        return False
