"""Distributed extraction on Ray: many model replicas fill one activation store.

The corpus is cut into *shards*, contiguous runs of whole extraction buffers (the buffers of
:func:`finegrain.extract.extract`, so every batch is the one a single process would run and the
values are the same). A pool of Ray actors, one model replica each (``num_gpus`` per actor when
the cluster has GPUs), takes shards from a queue. Each actor writes its rows straight into the
shared partial store, but only the chunks it owns entirely: zarr rewrites a whole chunk on a
partial write, so the rows of a chunk shared with the neighbouring shard (at most one chunk per
end) go to a side file. The driver writes the index columns while the actors run; when every
shard has its done-marker it copies the side files in and commits the store (metadata last, then
the atomic rename), so an incomplete distributed run never looks complete. Re-running resumes:
shards already marked done are skipped.

Needs a file system shared by the driver and the actors (one machine, or NFS/Lustre on a cluster).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finegrain.distributed._ray import init_ray, require_ray

log = logging.getLogger(__name__)

MAX_BUFFERS_PER_SHARD = 64


# ---------------------------------------------------------------------------------------------
# the actor
class ExtractWorker:
    """One model replica. Plain class; wrapped with ``ray.remote`` by :func:`extract_ray`."""

    def __init__(self, model, task: str = "base", device: str | None = "auto", num_threads: int | None = None):
        import torch

        from finegrain.models import ModelAdapter, load_model, resolve_device

        if num_threads:
            torch.set_num_threads(num_threads)
        if isinstance(model, str | os.PathLike):
            self.model = load_model(str(model), task=task, device=device or "auto")
        else:
            self.model = model() if callable(model) and not isinstance(model, ModelAdapter) else model
            if not isinstance(self.model, ModelAdapter):
                raise TypeError(f"the model factory returned {type(self.model).__name__}, not a finegrain adapter")
            if device is not None:
                self.model.to(resolve_device(device))
        self.model.model.eval()
        self.plan = None
        self.writer = None

    def facts(self, layers) -> dict:
        from finegrain.extract import model_facts

        return model_facts(self.model, layers)

    def device(self) -> str:
        return str(self.model.device)

    def setup(self, plan, path: str) -> bool:
        from finegrain.store import StoreWriter

        self.plan = plan
        self.writer = StoreWriter.open_partial(path)
        return True

    def run_shard(self, shard: dict, sentences: list[list[str]], batch_size: int, buffer_sentences: int) -> dict:
        """Compute and write the rows of one shard; returns timing for the driver's log."""
        from finegrain.extract import compute_buffer

        t0 = time.perf_counter()
        plan, writer = self.plan, self.writer
        r0, r1 = shard["r0"], shard["r1"]
        lo, hi = _owned_rows(r0, r1, writer.chunk_rows, writer.n_rows)
        edges: list[tuple[int, dict[str, np.ndarray]]] = []
        row = r0
        for k0 in range(0, len(sentences), buffer_sentences):
            buf = compute_buffer(self.model, plan, sentences[k0 : k0 + buffer_sentences], batch_size)
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
            raise RuntimeError(f"shard {shard['name']}: produced rows {r0}:{row}, expected {r0}:{r1}")
        _save_edges(writer.region_dir / f"{shard['name']}.edges.npz", edges)
        writer.mark_done(shard["name"])
        return {"name": shard["name"], "rows": r1 - r0, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


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


def extract_ray(
    model: str | Callable | object,
    corpus,
    out: str | os.PathLike,
    layers: Sequence[str] | str | None = "hidden",
    aggregation: str = "mean",
    pooling: str | None = None,
    dtype: str = "float32",
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
):
    """:func:`finegrain.extract.extract` on a Ray actor pool; same store, same rows, same values.

    ``model``: a name/path for :func:`finegrain.models.load_model` (loaded in every actor), a
    picklable zero-argument factory returning an adapter (e.g. ``functools.partial(tiny_bert, seed=0)``)
    or an adapter (pickled to the actors). ``address``: an existing Ray cluster; otherwise the
    running Ray session, or a local one started here. ``num_gpus`` per actor defaults to one GPU
    per actor (shared when there are fewer GPUs than workers) if the cluster has GPUs and ``device``
    allows CUDA, else 0. ``cpus_per_worker`` defaults to 1 (less if the cluster has fewer CPUs than
    workers, so that the pool always starts).
    """
    from finegrain.extract import _as_corpus, plan_extraction
    from finegrain.store import StoreError, StoreWriter

    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if buffer_sentences < 1 or batch_size < 1:
        raise ValueError("batch_size and buffer_sentences must be >= 1")
    path = Path(out)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists (pass overwrite=True to replace it)")
    corpus = _as_corpus(corpus)
    if len(corpus) == 0:
        raise ValueError("empty corpus")
    ray = init_ray(address)
    resources = ray.cluster_resources()
    if num_gpus is None:
        gpus = float(resources.get("GPU", 0))
        num_gpus = min(1.0, gpus / num_workers) if gpus and device in (None, "auto", "cuda") else 0
    if cpus_per_worker is None:
        cpus_per_worker = min(1.0, float(resources.get("CPU", 1)) / num_workers)
    threads = max(1, int(cpus_per_worker))
    worker_cls = ray.remote(ExtractWorker)
    model_arg = model if isinstance(model, str | os.PathLike) or callable(model) else ray.put(model)
    actors = [
        worker_cls.options(num_cpus=cpus_per_worker, num_gpus=num_gpus).remote(model_arg, task, device, threads)
        for _ in range(num_workers)
    ]
    try:
        facts = ray.get(actors[0].facts.remote(layers))
        plan = plan_extraction(facts, corpus, aggregation, pooling, dtype, max_length)
        writer = StoreWriter(
            path, plan.sizes, plan.n_rows, label_columns=plan.label_cols, dtype=dtype, chunk_rows=chunk_rows,
            meta={**plan.meta, "engine": "ray"}, resume=resume, overwrite=overwrite,
        )
        shards = plan_shards(plan.sent_start, len(corpus), buffer_sentences,
                             n_shards or max(4 * num_workers, math.ceil(len(corpus) / buffer_sentences
                                                                        / MAX_BUFFERS_PER_SHARD)))
        done = writer.done_regions() if resume else set()
        todo = [s for s in shards if s["name"] not in done]
        if len(todo) < len(shards):
            log.info("resuming %s: %d of %d shards already written", path, len(shards) - len(todo), len(shards))
        # the actors need only the layout, not the per-sentence arrays
        lite = dataclasses.replace(plan, rows_per_sent=np.zeros(0, np.int64), sent_start=np.zeros(0, np.int64))
        ray.get([a.setup.remote(lite, str(path)) for a in actors])
        bar = tqdm(total=len(corpus), initial=len(corpus) - sum(s["s1"] - s["s0"] for s in todo), desc="extract[ray]",
                   unit="sent", disable=None if progress is None else not progress)
        words = [s.words for s in corpus.sentences]

        def submit(actor, shard):
            return actor.run_shard.remote(shard, words[shard["s0"] : shard["s1"]], batch_size, buffer_sentences)

        queue = list(todo)
        running = {}
        for actor in actors:
            if queue:
                shard = queue.pop(0)
                running[submit(actor, shard)] = (actor, shard)
        # the index columns are the driver's job, done while the actors compute
        from finegrain.extract import buffer_index

        for b0 in range(0, len(corpus), buffer_sentences):
            sents = corpus.sentences[b0 : b0 + buffer_sentences]
            writer.write_region(int(plan.sent_start[b0]), **buffer_index(plan, sents, b0))
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, shard = running.pop(ready[0])
            info = ray.get(ready[0])  # re-raises an actor's error here
            log.debug("shard %s: %d rows in %.1fs (pid %s)", info["name"], info["rows"], info["seconds"], info["pid"])
            bar.update(shard["s1"] - shard["s0"])
            if queue:
                nxt = queue.pop(0)
                running[submit(actor, nxt)] = (actor, nxt)
        bar.close()
        # the chunks shared by neighbouring shards, written by one process now that all are done
        for shard in shards:
            edge_file = writer.region_dir / f"{shard['name']}.edges.npz"
            for start, acts in _load_edges(edge_file, plan.layer_names):
                writer.write_region(start, acts)
        return writer.commit_regions([s["name"] for s in shards])
    finally:
        for a in actors:
            ray.kill(a)


def _ray_available() -> bool:
    try:
        require_ray()
        return True
    except ImportError:
        return False
