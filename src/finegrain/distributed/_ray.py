"""Optional Ray dependency: imported lazily, with one clear message when it is missing."""

from __future__ import annotations

import os

from finegrain.errors import DependencyError

INSTALL_HINT = (
    "this needs Ray, which is an optional extra of finegrain: pip install 'finegrain[ray]' "
    "(or pip install 'ray[data]')"
)


class RayNotInstalledError(DependencyError, RuntimeError):
    """Ray is not installed (``pip install finegrain[ray]``).

    Also a ``RuntimeError`` so that the command line reports it as a one-line error.
    """


def require_ray():
    """Import and return the ``ray`` module, or raise :class:`RayNotInstalledError`."""
    try:
        import ray  # optional: the ray extra
    except ImportError as e:
        raise RayNotInstalledError(INSTALL_HINT) from e
    return ray


def require_ray_data():
    """Import and return ``ray.data`` (Ray's ``data`` extra: pyarrow & co.), or raise
    :class:`RayNotInstalledError`."""
    require_ray()
    try:
        import ray.data  # optional: Ray's data extra (pyarrow & co.)
    except ImportError as e:
        raise RayNotInstalledError(f"Ray Data is missing ({e}); {INSTALL_HINT}") from e
    return ray.data


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Connect to Ray once: the running session if any, else ``address`` (an existing cluster,
    e.g. ``"ray://head:10001"`` or ``"auto"``), else a local instance without dashboard."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    env = {"env_vars": {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                    "TOKENIZERS_PARALLELISM") if k in os.environ}}
    kwargs.setdefault("runtime_env", env)
    kwargs.setdefault("log_to_driver", True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray
