"""Process helpers for tests that start real servers: free ports, readiness polling, process-group teardown."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import requests

# Servers the tests start take ports from here: below the kernel's ephemeral range (where Ray's own components and
# every bind(0) land) and above Ray's worker ports (10002-19999), so that a test file in the other lane of
# tests/run_files.py cannot take the port between this check and the server's bind.
TEST_PORTS = (20000, 32000)


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 right now, picked at random from :data:`TEST_PORTS`; with ``taken``, also not
    among those, and added to them (ports handed out for one cluster before any is bound: two picks may not meet)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*TEST_PORTS)
        if taken is not None and port in taken:
            continue
        with closing(socket.socket()) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if taken is not None:
            taken.add(port)
        return port
    raise RuntimeError(f"no free port in {TEST_PORTS}")


def wait_http(
    url: str, timeout: float = 60, ok: tuple[int, ...] = (200,), alive: Callable[[], bool] | None = None
) -> None:
    """Poll ``url`` until it answers one of ``ok`` (fail early once ``alive()`` says the server died)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise RuntimeError(f"the server behind {url} exited before answering")
        try:
            if requests.get(url, timeout=5).status_code in ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up in {timeout}s")
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it spawned (SIGTERM, then SIGKILL
    after ``grace`` seconds)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def start_embedded_mlflow(home: Path, port: int, log_path: Path, jobs: bool = False) -> subprocess.Popen:
    """``mlflow/launch.py embedded`` (the platform's own MLflow server) on 127.0.0.1:``port`` for ``home``, without
    the caller's MLFLOW_*/AWS_* variables; returns once it answers /health (appends to ``log_path``).

    A new ``home`` gets a migrated empty database (:mod:`tests.support.mlflow_db`). MLflow's job runner (its GenAI
    jobs: 8 more Python processes, which no crystalvision code uses) starts only with ``jobs=True``; the launcher's
    own test (tests/system/test_mlflow_server.py) runs the server as deployed, runner included."""
    from .mlflow_db import place_fresh_db

    root = Path(__file__).resolve().parents[2]
    place_fresh_db(home / "mlflow.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    if not jobs:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(root / "mlflow/launch.py"), "embedded", "--host", "127.0.0.1", "--port", str(port)],
            env=env | {"CRYSTALVISION_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_http(f"http://127.0.0.1:{port}/health", timeout=180, alive=lambda: proc.poll() is None)
    return proc
