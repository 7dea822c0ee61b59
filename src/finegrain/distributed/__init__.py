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

from finegrain.distributed._ray import INSTALL_HINT, RayNotInstalledError, init_ray, require_ray
from finegrain.distributed.ray_extract import ExtractWorker, extract_ray, plan_shards, shard_dataset
from finegrain.distributed.ray_probe import probe_layers_ray, run_parallel

__all__ = [
    "INSTALL_HINT",
    "ExtractWorker",
    "RayNotInstalledError",
    "extract_ray",
    "init_ray",
    "plan_shards",
    "probe_layers_ray",
    "require_ray",
    "run_parallel",
    "shard_dataset",
]
