"""Launch the MLflow tracking server in one of two modes.

``embedded``    SQLite backend + local artifact folder under CRYSTALVISION_HOME (default .crystalvision), no auth.
``production``  Postgres (any SQLAlchemy URI) backend, S3 artifact destination (MLFLOW_S3_ENDPOINT_URL for
                MinIO/Ceph/moto), MLflow's basic-auth app with the admin password from MLFLOW_AUTH_ADMIN_PASSWORD.

    python mlflow/launch.py embedded [--host 127.0.0.1] [--port 5000]
    python mlflow/launch.py production --host 0.0.0.0 --port 5000

Production reads (all required unless noted):
    MLFLOW_BACKEND_STORE_URI       postgresql://user:pass@host:5432/mlflow
    MLFLOW_AUTH_DATABASE_URI       postgresql://user:pass@host:5432/mlflow_auth (a separate database)
    MLFLOW_ARTIFACTS_DESTINATION   s3://bucket/prefix
    MLFLOW_AUTH_ADMIN_PASSWORD     first-start admin password
    MLFLOW_FLASK_SERVER_SECRET_KEY CSRF key of the auth app (the same on every replica)
    MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (optional: S3 endpoint and credentials)
    MLFLOW_WORKERS (optional, default 2), MLFLOW_SERVER_ALLOWED_HOSTS (optional, e.g. "mlflow,mlflow.ns.svc")

This file lives in ``mlflow/`` without an ``__init__.py`` on purpose: a package there would shadow mlflow.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("crystalvision.mlflow")
HERE = Path(__file__).resolve().parent
AUTH_TEMPLATE = HERE / "basic_auth.ini"
STOP_GRACE_S = 20.0  # after the server exits, how long what it started has to follow SIGTERM before SIGKILL
PRODUCTION_REQUIRED = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_AUTH_DATABASE_URI",
    "MLFLOW_ARTIFACTS_DESTINATION",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


class LaunchError(Exception):
    """A setting the launcher needs is missing or wrong (the message names it)."""


def redact_uri(uri: str) -> str:
    """``scheme://user:***@host/db``: the user info of every URI in ``uri`` hidden for logs, by crystalvision's
    one URL-aware masking function (a password holding ``@ / ? #`` or a blank is hidden whole)."""
    from crystalvision.core.uris import mask_uris

    return mask_uris(uri)


def render_auth_ini(env: dict[str, str]) -> str:
    """The auth ini from the template. MLflow reads it with configparser's interpolation, so each ``%`` of a value
    (a URL-encoded password in ``MLFLOW_AUTH_DATABASE_URI``) is written ``%%``; a line break would start a new
    setting and is refused."""
    values = {k: v.replace("%", "%%") for k, v in env.items()}
    if any(c in env["MLFLOW_AUTH_DATABASE_URI"] for c in "\r\n"):
        raise LaunchError("MLFLOW_AUTH_DATABASE_URI holds a line break; set it to one postgresql://... URI")
    return string.Template(AUTH_TEMPLATE.read_text()).substitute(values)


def embedded_command(host: str, port: int, env: dict[str, str]) -> list[str]:
    """``mlflow server`` arguments for the embedded mode (SQLite + local artifacts, no auth)."""
    home = Path(env.get("CRYSTALVISION_HOME", ".crystalvision")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return [
        *_base(host, port),
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        str(home / "mlartifacts"),
        "--serve-artifacts",
        "--workers",
        "1",
    ]


def production_command(host: str, port: int, env: dict[str, str], auth_dir: Path) -> list[str]:
    """``mlflow server`` arguments for production; writes the rendered auth ini into ``auth_dir``."""
    missing = [k for k in PRODUCTION_REQUIRED if not env.get(k)]
    if missing:
        raise LaunchError(f"production mode needs {', '.join(missing)} in the environment (see mlflow/launch.py)")
    if not env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://"):
        raise LaunchError("MLFLOW_ARTIFACTS_DESTINATION must be an s3://bucket/prefix URI in production mode")
    if not env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql"):
        log.warning("MLFLOW_BACKEND_STORE_URI is not PostgreSQL; fine for tests, not for production")
    ini = auth_dir / "basic_auth.ini"
    ini.write_text(render_auth_ini(env))
    ini.chmod(0o600)
    # The backend URI holds the database password: `mlflow server` reads it from MLFLOW_BACKEND_STORE_URI in the
    # environment, never from the command line (which every local user can read in /proc or `ps`).
    cmd = [
        *_base(host, port),
        "--app-name",
        "basic-auth",
        "--artifacts-destination",
        env["MLFLOW_ARTIFACTS_DESTINATION"],
        "--serve-artifacts",
        "--workers",
        env.get("MLFLOW_WORKERS", "2"),
    ]
    if env.get("MLFLOW_SERVER_ALLOWED_HOSTS"):
        cmd += ["--allowed-hosts", env["MLFLOW_SERVER_ALLOWED_HOSTS"]]
    return cmd


def _base(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]


def require_environment() -> None:
    """Exit 2 with one line naming the fix when this python lacks MLflow or crystalvision (the system's python; the
    ``mlflow/`` folder beside this file would then pass for a namespace package and ``-m mlflow`` fail obscurely)."""
    import importlib.util

    missing = [m for m in ("mlflow", "crystalvision") if getattr(importlib.util.find_spec(m), "origin", None) is None]
    if missing:
        print(
            f"error: {sys.executable} lacks the project's packages ({', '.join(missing)}); run the launcher with the "
            "project's environment: source .venv/bin/activate, then python mlflow/launch.py ... "
            "(or .venv/bin/python mlflow/launch.py ...)",
            file=sys.stderr,
        )
        sys.exit(2)


def run_server(cmd: list[str], env: dict[str, str], grace_s: float = STOP_GRACE_S) -> int:
    """Run ``mlflow server`` in its own process group and wait for it. SIGTERM or SIGINT here is SIGTERM to the
    whole group (uvicorn stops gracefully, MLflow's job runner and its huey consumers stop too: they would only notice
    the server is gone once it had exited); once the server has exited, anything left in the group gets SIGTERM
    again, then SIGKILL after ``grace_s``. Returns 128 + the signal when one stopped it, else the server's exit
    code."""
    proc = subprocess.Popen(cmd, env=env, process_group=0)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    code = proc.wait()
    stop_group(proc.pid, grace_s)
    return 128 + received[0] if received else code


def stop_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to every process left in group ``pgid``, SIGKILL to those alive after ``grace_s``; returns once the
    group is empty (orphans this process adopted, as a container's PID 1, are reaped on the way)."""
    deadline, signum = time.monotonic() + grace_s, signal.SIGTERM
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            if signum == signal.SIGKILL:
                log.warning("processes of group %d are still there after SIGKILL; giving up", pgid)
                return
            signum, deadline = signal.SIGKILL, time.monotonic() + 5
            log.warning("processes of group %d ignored SIGTERM for %.0f s; sending SIGKILL", pgid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap children that already exited (zombies count as members)
            pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run ``mlflow server`` until it stops (:func:`run_server`)."""
    require_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["embedded", "production"])
    p.add_argument("--host", default=None, help="Bind address (embedded: 127.0.0.1, production: 0.0.0.0).")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    env = dict(os.environ)
    try:
        if args.mode == "embedded":
            cmd = embedded_command(args.host or "127.0.0.1", args.port, env)
        else:
            auth_dir = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))
            cmd = production_command(args.host or "0.0.0.0", args.port, env, auth_dir)
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_dir / "basic_auth.ini")
    except LaunchError as exc:
        log.error("%s", exc)
        sys.exit(2)
    log.info("starting: %s", " ".join(redact_uri(c) for c in cmd[1:]))
    sys.exit(run_server(cmd, env))


if __name__ == "__main__":
    main()
