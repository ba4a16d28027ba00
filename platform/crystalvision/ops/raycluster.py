"""Connecting to Ray: an existing cluster (settings.ray.ray_address / RAY_ADDRESS) or a local one; and taking a
local cluster down with the command that started it (:func:`processes_stopped_on_exit`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from crystalvision.core import get_settings

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
    on_sigterm = signal.getsignal(signal.SIGTERM)
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
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)  # ray.init's own handler exits 15 and skips the caller's cleanup
    log.info("Ray ready: %s", ray.cluster_resources())


# ---- taking the processes a command started down with it ------------------------------------------------------

SAMPLE_S = 1.0  # how often the processes a command started are listed (a killed raylet's children go to init)
SETTLE_S = 3.0  # after ray.shutdown(), how long its processes get to exit by themselves


@dataclass
class Started:
    """The processes started inside a :func:`processes_stopped_on_exit` block, and the signal that ended it."""

    before: set[int]
    seen: dict[int, Any] = field(default_factory=dict)  # pid -> psutil.Process (which remembers its start time)
    signal: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self) -> None:
        """Remember every live descendant of this process that descends from a child started in the block."""
        import psutil

        with suppress(psutil.Error):
            for child in psutil.Process().children():
                if child.pid in self.before:
                    continue
                with suppress(psutil.Error):
                    found = [child, *child.children(recursive=True)]
                    with self._lock:
                        for proc in found:
                            self.seen.setdefault(proc.pid, proc)

    def alive(self) -> list[Any]:
        with self._lock:
            return [p for p in self.seen.values() if _running(p)]


def _running(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextmanager
def processes_stopped_on_exit(grace_s: float = 10.0) -> Iterator[Started]:
    """For a long command that may start a local Ray cluster: inside the block SIGTERM acts as Ctrl-C (Ray Tune
    saves its sweep and stops its trials; elsewhere KeyboardInterrupt), and ``started.signal`` records it. However
    the block ends, Ray is shut down, then every process started inside the block that is still alive (Ray's
    workers and agents: a killed raylet leaves them to init) gets SIGTERM, and SIGKILL after ``grace_s``.
    Processes that were children before the block (a test's servers) are left alone."""
    import psutil

    started = Started(before={c.pid for c in psutil.Process().children()})
    main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}

    def interrupt(signum: int, frame: Any) -> None:
        started.signal = started.signal or signum
        handler = signal.getsignal(signal.SIGINT)  # Tune's while a sweep runs, else Python's KeyboardInterrupt
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def on_sigint(signum: int, frame: Any) -> None:
        started.signal = started.signal or signum
        raise KeyboardInterrupt

    if main:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(started, stop), name="started-processes", daemon=True)
    watcher.start()
    try:
        yield started
    finally:
        stop.set()
        watcher.join(timeout=5)
        started.sample()
        try:
            _shutdown_ray()
        finally:
            _stop(started, grace_s)
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _watch(started: Started, stop: threading.Event) -> None:
    while True:
        started.sample()
        if stop.wait(SAMPLE_S):
            return


def _shutdown_ray() -> None:
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _stop(started: Started, grace_s: float) -> None:
    """SIGTERM to what is left of ``started`` after a short wait, SIGKILL after ``grace_s``."""
    import psutil

    left = started.alive()
    if left:
        _gone, left = psutil.wait_procs(left, timeout=SETTLE_S)
    left = [p for p in left if _running(p)]
    if not left:
        return
    log.info("stopping %d processes left by this command: %s", len(left), ", ".join(_name(p) for p in left))
    for proc in left:
        with suppress(psutil.Error):
            proc.terminate()
    _gone, left = psutil.wait_procs(left, timeout=grace_s)
    for proc in left:
        with suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)


def _name(proc: Any) -> str:
    import psutil

    try:
        return f"{proc.pid} ({proc.name()})"
    except psutil.Error:
        return str(proc.pid)
