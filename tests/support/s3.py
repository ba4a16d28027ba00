"""A real S3 API for tests: moto's server on 127.0.0.1 and a free port, plus a bucket and StorageSettings.

Use it from a test module with ``from tests.support.s3 import s3_server  # noqa: F401`` (or ``from .support.s3
import s3_server``) and take the ``s3_server`` fixture, or call :func:`start_moto` yourself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from crystalvision.settings import StorageSettings

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto server."""

    endpoint_url: str
    process: subprocess.Popen

    def settings(self) -> StorageSettings:
        """Storage settings pointing at this server (pass them to ObjectStore explicitly)."""
        return StorageSettings(
            object_store_uri="s3://unused",
            s3_endpoint_url=self.endpoint_url,
            s3_region=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"cv-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(timeout_s: float = 30.0) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1 and a free port; wait until it answers."""
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    port = free_port()
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode} before answering on {url}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return S3Server(url, proc)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the whole test module."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()
