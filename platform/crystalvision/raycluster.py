"""Connecting to Ray: an existing cluster (settings.ray.ray_address / RAY_ADDRESS) or a local one."""

from __future__ import annotations

import logging
import os

from crystalvision.settings import get_settings

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


def ensure_ray(include_dashboard: bool = False) -> None:
    """Initialise Ray once per process: connect to the configured cluster, or start a local one.

    ``include_dashboard`` starts the dashboard with a local cluster: Ray's state API runs in it, and Ray Train V2
    needs that API to free the resources of a run whose driver was killed (e.g. a Tune trial stopped by ASHA).
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
        kwargs["runtime_env"] = {"env_vars": worker_env()}
    ray.init(**kwargs)
    log.info("Ray ready: %s", ray.cluster_resources())
