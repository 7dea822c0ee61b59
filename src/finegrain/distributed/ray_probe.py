"""Independent probing jobs (per layer, per property, control tasks, seeds) as Ray tasks.

Every job is a pure function of its arguments (probes seed their own RNGs), so running the jobs as
parallel Ray tasks gives the results of running them one after the other; only the wall time
changes. Stores travel as paths and are opened by each task, so nothing large is shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from finegrain.distributed._ray import init_ray
from finegrain.probe import LayerProbeResult, LinearProbe
from finegrain.probe.layers import prepare_layers, probe_group
from finegrain.store import ActivationStore
from finegrain.store.view import View

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


def probe_layers_ray(
    store,
    label: str,
    layers: Sequence[str] | None = None,
    probe=None,
    splits=None,
    include_all: bool = True,
    stream: bool = False,
    seed: int = 0,
    control: bool = True,
    engine: str = "ray",
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
):
    """:func:`finegrain.probe.probe_layers` with one Ray task per layer (and one for all layers
    concatenated); returns the same :class:`~finegrain.probe.LayerProbeResult` (baselines, control task,
    ``above_baseline``): the splits, baselines and control labels are computed once here, and every task
    runs :func:`finegrain.probe.layers.probe_group` on its layers' views.

    ``store`` is an :class:`~finegrain.store.ActivationStore`, its path or a labelled store view (store views
    travel as a path and a selection, so the store must be on a file system the workers see).
    """
    if not isinstance(store, ActivationStore | View):
        store = ActivationStore(store)
    probe = probe if probe is not None else LinearProbe()
    task = prepare_layers(store, label, layers, splits, include_all, seed, control)
    jobs = []
    for name, lays in task.groups:
        train, dev, test = task.views(lays)
        jobs.append({"train": train, "dev": dev, "test": test, "name": name, "probe": probe,
                     "baselines": task.baselines, "control": task.control_parts(), "stream": stream, "seed": seed})
    rows = run_parallel(probe_group, jobs, engine=engine, num_cpus=num_cpus, num_gpus=num_gpus, address=address)
    return LayerProbeResult(label=task.base.label, probe=repr(probe), rows=rows, split_sizes=task.split_sizes(),
                            baselines=task.baseline_acc)
