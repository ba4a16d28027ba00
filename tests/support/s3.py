"""A real S3 API for tests: moto's server on 127.0.0.1 and a free port, buckets, StorageSettings, and a TCP proxy
in front of it that can take the endpoint down and bring it back (fault tests).

* the ``s3_server`` fixture (one server per test module): ``from tests.support.s3 import s3_server  # noqa: F401``
* :func:`moto_s3` (context manager, server + one bucket) or :func:`start_moto` (you stop it)
* :class:`FlakyEndpoint`: ``with FlakyEndpoint(server.port) as proxy: proxy.down(); proxy.up()``

The process helpers live in :mod:`tests.support.procs`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from crystalvision.core.settings import StorageSettings
from tests.support.procs import free_port, stop_group, wait_http

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}


@dataclass
class S3Server:
    """A running moto server; ``bucket`` is the bucket :func:`moto_s3` made (None from :func:`start_moto`)."""

    endpoint_url: str
    process: subprocess.Popen
    bucket: str | None = None

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def settings(self, endpoint_url: str | None = None) -> StorageSettings:
        """Storage settings for this server (or another endpoint in front of it); pass them to ObjectStore."""
        return StorageSettings(
            object_store_uri="s3://unused",
            s3_endpoint_url=endpoint_url or self.endpoint_url,
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

    def keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every key under ``prefix`` in ``bucket`` (default: this server's bucket)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket or self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop(self) -> None:
        stop_group(self.process)


def start_moto(timeout_s: float = 60.0) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1 and a free port (its own process group); wait until it answers."""
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    port = free_port()
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = S3Server(f"http://127.0.0.1:{port}", proc)
    try:
        wait_http(f"{server.endpoint_url}/moto-api/", timeout=timeout_s, alive=lambda: proc.poll() is None)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def moto_s3(bucket: str = "crystalvision-test") -> Iterator[S3Server]:
    """A moto server with ``bucket`` created; stopped on exit."""
    server = start_moto()
    try:
        server.bucket = server.make_bucket(bucket)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the whole test module."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


class FlakyEndpoint:
    """A TCP proxy on 127.0.0.1 (a free port) to ``127.0.0.1:target_port``: :meth:`down` closes the listening
    socket and every open connection (clients get 'connection refused'), :meth:`up` listens on the same port again.
    The server behind keeps its state, so only the endpoint's availability changes."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> FlakyEndpoint:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Listen again on the same port."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for s in [listener, *conns]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                backend = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, backend]
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
