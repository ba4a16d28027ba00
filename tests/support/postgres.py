"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries (``initdb``, ``pg_ctl``) run on 127.0.0.1
and a free port, with a password, in a temporary data folder (as ``nobody`` when the tests run as root, since
PostgreSQL refuses to run as root). The ``postgres`` fixture skips, saying why, only when the binaries are absent
(``make test`` installs the apt package)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import free_port


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("initdb") and shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(shutil.which("initdb"))).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    """A running server: superuser ``postgres`` with ``password`` on 127.0.0.1:``port``."""

    port: int
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _connect(self, database: str):
        import psycopg

        return psycopg.connect(self.uri(database), autocommit=True)

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URI."""
        conn = self._connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def query(self, database: str, sql: str) -> list[tuple]:
        conn = self._connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()


def _as_user() -> dict:
    """``subprocess`` arguments to run PostgreSQL as ``nobody`` when we are root."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temporary folder; stopped and removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are absent: apt-get install postgresql (make test does)")
    pytest.importorskip("psycopg", reason="psycopg is absent: pip install -e '.[test]'")
    run_as = _as_user()
    root = Path(tempfile.mkdtemp(prefix="cv-pg-", dir="/tmp"))
    data, pwfile = root / "data", root / "pwfile"
    password = secrets.token_urlsafe(16)
    pwfile.write_text(password)
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
        os.chown(pwfile, run_as["user"], run_as["group"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    port = free_port()
    try:
        subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=root,
            timeout=120,
            **run_as,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "120",
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=root,
            timeout=180,
            **run_as,
        )
        yield PostgresServer(port=port, password=password)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                env=env,
                cwd=root,
                timeout=60,
                **run_as,
            )
        shutil.rmtree(root, ignore_errors=True)
