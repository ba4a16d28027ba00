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

from tests.support.procs import TEST_PORTS, free_port, stop_group

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class Cluster:
    """Addresses of a running test cluster."""

    gcs_address: str
    dashboard_url: str
    env: dict[str, str]


def _worker_port_base(taken: set[int]) -> int:
    """Start of a 100-port range for a node's workers, below both the ports ``free_port`` hands out
    (:data:`TEST_PORTS`) and the kernel's ephemeral range (where every port-0 bind of the Ray processes lands), and
    apart from the ranges of the other nodes (``taken``)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = min(TEST_PORTS[0], low)
    bases = [b for b in range(max(top - 10000, 1024), top - 100, 100) if b not in taken]
    base = random.choice(bases)
    taken.add(base)
    return base


def _node_args(temp_dir: str, worker_base: int, ports_taken: set[int]) -> list[str]:
    ports = {
        "--node-manager-port": free_port(ports_taken),
        "--object-manager-port": free_port(ports_taken),
        "--dashboard-agent-listen-port": free_port(ports_taken),
        "--dashboard-agent-grpc-port": free_port(ports_taken),
        "--runtime-env-agent-port": free_port(ports_taken),
        "--metrics-export-port": free_port(ports_taken),
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


def wait_for_nodes(dashboard_url: str, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll the dashboard until ``n`` nodes are alive; fail early when the node process ``proc`` exits."""
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout
    while True:
        try:
            alive = [x for x in list_nodes(address=dashboard_url) if x.state == "ALIVE"]
            if len(alive) >= n:
                return
        except Exception:  # the dashboard is still starting
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {proc.returncode} before node {n} joined {dashboard_url}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray cluster at {dashboard_url} did not reach {n} live nodes in {timeout}s")
        time.sleep(1)


def _start_node(cmd: list[str], env: dict[str, str], log_path: Path, dashboard_url: str, n: int) -> subprocess.Popen:
    """Run one ``ray start --block`` and wait until the cluster has ``n`` live nodes; on failure the node's process
    group is stopped and the error carries the tail of its log."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_nodes(dashboard_url, n, proc)
    except (TimeoutError, RuntimeError) as e:
        stop_group(proc)
        raise type(e)(f"{e}; tail of {log_path}:\n{log_path.read_text(errors='replace')[-2000:]}") from None
    return proc


@contextmanager
def two_node_cluster(log_dir: Path, node_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Start a head (with dashboard + job server) and one worker node, ``node_env`` added to the environment they
    start in (and their job drivers inherit); stop both on exit."""
    env = _cluster_env() | (node_env or {})
    ports: set[int] = set()  # every port picked for this cluster: none is bound until its node starts
    gcs_port, dash_port = free_port(ports), free_port(ports)
    temp_dirs = [tempfile.mkdtemp(prefix="cvray-", dir="/tmp") for _ in range(2)]  # short: Unix socket paths
    taken: set[int] = set()
    head_cmd = [
        RAY,
        "start",
        "--head",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        f"--ray-client-server-port={free_port(ports)}",
        *_node_args(temp_dirs[0], _worker_port_base(taken), ports),
    ]
    procs: list[subprocess.Popen] = []
    cluster = Cluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", env)
    try:
        procs.append(_start_node(head_cmd, env, log_dir / "ray-head.log", cluster.dashboard_url, 1))
        procs.append(_start_worker(cluster, temp_dirs[1], taken, log_dir / "ray-worker.log"))
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_group(proc, grace=5)  # `ray start --block` drains for up to 30 s on SIGTERM; the test is over
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _start_worker(cluster: Cluster, temp_dir: str, taken: set[int], log_path: Path, tries: int = 2) -> subprocess.Popen:
    """Join a worker node. Its ports are picked only now, with the head's processes already bound, and a node that
    does not join is started once more on fresh ports (a port taken between picking and binding is a race no
    picking can close)."""

    def start() -> subprocess.Popen:
        ports: set[int] = set()  # this node's own picks may not meet (the head's are bound by now)
        cmd = [RAY, "start", f"--address={cluster.gcs_address}", *_node_args(temp_dir, _worker_port_base(taken), ports)]
        return _start_node(cmd, cluster.env, log_path, cluster.dashboard_url, 2)

    for _ in range(tries - 1):
        try:
            return start()
        except (TimeoutError, RuntimeError):
            shutil.rmtree(temp_dir, ignore_errors=True)
    return start()
