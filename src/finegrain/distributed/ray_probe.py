"""Independent probing jobs (per layer, per property, control tasks, seeds) as Ray tasks.

Every job is a pure function of its arguments (probes seed their own RNGs), so running the jobs as
parallel Ray tasks gives the results of running them one after the other; only the wall time
changes. Stores travel as paths and are opened by each task, so nothing large is shipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from finegrain.distributed._ray import init_ray

ENGINES = ("local", "ray")
_PUT_BYTES = 1 << 20  # arrays above this are put in the object store once, not once per task


def run_parallel(
    fn: Callable,
    kwargs_list: Sequence[dict],
    engine: str = "ray",
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
) -> list:
    """``[fn(**kw) for kw in kwargs_list]``, as parallel Ray tasks with ``engine="ray"``.

    Results come back in the order of ``kwargs_list``; an exception in a task is re-raised here.
    ``fn`` must be importable by the workers or picklable by value (a module-level function of an
    installed package, or a closure/lambda defined in ``__main__``). Large numpy arguments shared by
    several jobs are sent to the object store once.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    kwargs_list = [dict(kw) for kw in kwargs_list]
    if engine == "local" or not kwargs_list:
        return [fn(**kw) for kw in kwargs_list]
    ray = init_ray(address)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(fn)
    shared: dict[int, object] = {}

    def ref(v):
        if isinstance(v, np.ndarray) and v.nbytes > _PUT_BYTES:
            if id(v) not in shared:
                shared[id(v)] = ray.put(v)
            return shared[id(v)]
        return v

    refs = [remote.remote(**{k: ref(v) for k, v in kw.items()}) for kw in kwargs_list]
    return ray.get(refs)


def _probe_group(store_path: str, label: str, name: str, lays: list[str], probe, train, dev, test,
                 stream: bool) -> dict:
    """One row of :func:`finegrain.probe.probe_layers` (same reads, same probe, same metrics)."""
    from finegrain.probe.layers import probe_group
    from finegrain.store import ActivationStore

    store = ActivationStore(store_path)
    return probe_group(store, store.labels(label), name, lays, probe, train, dev, test, stream)


def probe_layers_ray(
    store,
    label: str,
    layers: Sequence[str] | None = None,
    probe=None,
    splits=None,
    include_all: bool = True,
    stream: bool = False,
    seed: int = 0,
    engine: str = "ray",
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
):
    """:func:`finegrain.probe.probe_layers` with one Ray task per layer (and one for all layers
    concatenated); returns the same :class:`~finegrain.probe.LayerProbeResult`.

    ``store`` is an :class:`~finegrain.store.ActivationStore` or its path (the tasks open it
    themselves, so the store must be on a file system the workers see).
    """
    from finegrain.probe import LayerProbeResult, LinearProbe, resolve_splits
    from finegrain.probe.layers import ALL
    from finegrain.store import ActivationStore

    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    probe = probe if probe is not None else LinearProbe()
    layers = list(layers) if layers is not None else list(store.layers)
    if not layers:
        raise ValueError("no layers to probe")
    store.labels(label)  # fail here, not in every task, on an unknown label column
    parts = resolve_splits(store, splits, seed)
    train, test = parts[0], parts[-1]
    dev = parts[1] if len(parts) == 3 else None
    groups: list[tuple[str, list[str]]] = [(lay, [lay]) for lay in layers]
    if include_all and len(layers) > 1:
        groups.append((ALL, layers))
    jobs = [
        {"store_path": os.fspath(store.path), "label": label, "name": name, "lays": lays, "probe": probe,
         "train": train, "dev": dev, "test": test, "stream": stream}
        for name, lays in groups
    ]
    rows = run_parallel(_probe_group, jobs, engine=engine, num_cpus=num_cpus, num_gpus=num_gpus, address=address)
    return LayerProbeResult(
        label=label,
        probe=repr(probe),
        rows=rows,
        split_sizes={"train": len(train), "dev": 0 if dev is None else len(dev), "test": len(test)},
    )
