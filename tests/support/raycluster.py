"""A real two-node Ray cluster on 127.0.0.1 for job tests: ``ray start --head`` plus ``ray start --address``.

Every port is chosen free at run time and every node gets its own temp dir, so clusters of other people on
the same machine are never touched; the nodes are stopped by killing only the process groups started here
(never ``ray stop``, which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import free_port, stop_group

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class Cluster:
    """Addresses of a running test cluster."""

    gcs_address: str
    dashboard_url: str
    env: dict[str, str]


def _node_args(temp_dir: str) -> list[str]:
    worker_base = random.randrange(40000, 49000, 100)
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--min-worker-port": worker_base,
        "--max-worker-port": worker_base + 99,
    }
    return [
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        f"--object-store-memory={100 * 1024**2}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"{k}={v}" for k, v in ports.items()),
    ]


def _cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"})
    # The cluster must get crystalvision from the job's runtime env (py_modules), not from this test's path.
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # `python` = this venv
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_for_nodes(dashboard_url: str, n: int, timeout: float = 120) -> None:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout
    while True:
        try:
            alive = [x for x in list_nodes(address=dashboard_url) if x.state == "ALIVE"]
            if len(alive) >= n:
                return
        except Exception:  # the dashboard is still starting
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray cluster at {dashboard_url} did not reach {n} live nodes in {timeout}s")
        time.sleep(1)


@contextmanager
def two_node_cluster(log_dir: Path) -> Iterator[Cluster]:
    """Start a head (with dashboard + job server) and one worker node; stop both on exit."""
    env = _cluster_env()
    gcs_port, dash_port = free_port(), free_port()
    temp_dirs = [tempfile.mkdtemp(prefix="cvray-", dir="/tmp") for _ in range(2)]  # short: Unix socket paths
    head_cmd = [
        RAY,
        "start",
        "--head",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        f"--ray-client-server-port={free_port()}",
        *_node_args(temp_dirs[0]),
    ]
    worker_cmd = [RAY, "start", f"--address=127.0.0.1:{gcs_port}", *_node_args(temp_dirs[1])]
    procs: list[subprocess.Popen] = []
    cluster = Cluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", env)
    try:
        for name, cmd in (("head", head_cmd), ("worker", worker_cmd)):
            log = (log_dir / f"ray-{name}.log").open("wb")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            _wait_for_nodes(cluster.dashboard_url, len(procs))
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
