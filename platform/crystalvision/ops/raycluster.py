"""Connecting to Ray: an existing cluster (settings.ray.ray_address / RAY_ADDRESS) or a local one."""

from __future__ import annotations

import logging
import os

from crystalvision.core.settings import get_settings

log = logging.getLogger(__name__)

# Variables every Ray worker needs for offscreen rendering and quiet, reproducible runs.
WORKER_ENV = {
    "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow",
    "LP_NUM_THREADS": "1",
    "TQDM_DISABLE": "1",
    "PYTHONUNBUFFERED": "1",
}


def worker_env() -> dict[str, str]:
    """Env vars for Ray workers: the defaults above, overridden by the driver's own values."""
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


MIN_OBJECT_STORE = 256 * 1024**2
OBJECT_STORE_FACTOR = 3  # the cached splits, a shuffled copy of the training split, and room for blocks in flight
# A local cluster runs only what a job needs: no worker processes started ahead of tasks (each is a Python process
# with Ray's core, ~100-200 MB), and idle ones are reaped after 10 s (Ray keeps up to one per CPU for good).
LEAN_SYSTEM_ENV = {
    "RAY_prestart_worker_first_driver": "0",
    "RAY_enable_worker_prestart": "0",
    "RAY_num_workers_soft_limit": "0",
    "RAY_idle_worker_killing_time_threshold_ms": "10000",
}


def object_store_bytes(data_bytes: int | None) -> int | None:
    """Object store size of a local cluster for a job whose decoded images take ``data_bytes``: a few times that,
    at least :data:`MIN_OBJECT_STORE`, at most Ray's own default (30% of memory); None (Ray's default) without a
    size or with ``CRYSTALVISION_RAY_OBJECT_STORE_MB`` set to 0."""
    configured = os.environ.get("CRYSTALVISION_RAY_OBJECT_STORE_MB")
    if configured is not None:
        return int(float(configured) * 1024**2) or None
    if data_bytes is None:
        return None
    import psutil

    return int(min(max(OBJECT_STORE_FACTOR * data_bytes, MIN_OBJECT_STORE), 0.3 * psutil.virtual_memory().total))


def ensure_ray(include_dashboard: bool = False, data_bytes: int | None = None) -> None:
    """Initialise Ray once per process: connect to the configured cluster, or start a local one.

    ``include_dashboard`` starts the dashboard with a local cluster: Ray's state API runs in it, and Ray Train V2
    needs that API to free the resources of a run whose driver was killed (e.g. a Tune trial stopped by ASHA).
    ``data_bytes`` (decoded images of the job) sizes a local cluster's object store (:func:`object_store_bytes`);
    the first stage to start Ray sizes it.
    """
    import ray

    if ray.is_initialized():
        return
    # Ray's token auth stays as Ray sets it (on for a local cluster since 2.59: ray.init() writes a token to
    # ~/.ray/auth_token); only tests turn it off. A remote cluster needs RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings = get_settings().ray
    kwargs: dict = {"log_to_driver": True, "include_dashboard": include_dashboard}
    if settings.ray_address:
        kwargs["address"] = settings.ray_address
    else:
        kwargs["num_cpus"] = settings.ray_num_cpus
        kwargs["object_store_memory"] = object_store_bytes(data_bytes)
        for key, value in LEAN_SYSTEM_ENV.items():
            os.environ.setdefault(key, value)
        kwargs["runtime_env"] = {"env_vars": worker_env()}
    ray.init(**kwargs)
    log.info("Ray ready: %s", ray.cluster_resources())
