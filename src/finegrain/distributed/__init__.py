"""Scale-out on Ray (an optional extra: ``pip install finegrain[ray]``).

* :func:`extract_ray` — extraction with Ray Data: corpus shards mapped by a pool of Ray actors
  (one model replica each) writing one store; same rows and values as
  :func:`finegrain.extract.extract` (:func:`shard_dataset` is its Ray Data pipeline);
* :func:`run_parallel` — independent jobs (probes per layer / property / control task / seed) as
  Ray tasks, or sequentially with ``engine="local"``;
* :func:`probe_layers_ray` — :func:`finegrain.probe.probe_layers` with one task per layer.

Importing this package does not import Ray; calling into it without Ray installed raises
:class:`RayNotInstalledError` saying how to install it.
"""

from finegrain.lazy import lazy_api

# loaded on first use: the command line registers ``finegrain ray`` without importing torch
_API = {
    **{name: "finegrain.distributed._ray" for name in ("INSTALL_HINT", "RayNotInstalledError", "init_ray",
                                                         "require_ray")},
    **{name: "finegrain.distributed.ray_extract" for name in ("ExtractWorker", "extract_ray", "plan_shards",
                                                                "shard_dataset")},
    **{name: "finegrain.distributed.ray_probe" for name in ("probe_layers_ray", "run_parallel")},
}

__getattr__, __dir__, __all__ = lazy_api(__name__, _API)
