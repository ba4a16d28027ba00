"""``crystalvision serve``: a registered model over REST, through MLflow's scoring server, from this interpreter.

``mlflow models serve`` starts ``uvicorn`` from ``PATH``, which outside an activated environment is not this
environment's (``exec: uvicorn: not found``). Here the server runs as ``python -m mlflow models serve`` with this
interpreter, its scripts folder first on ``PATH``, the configured tracking server (``MLFLOW_TRACKING_URI``, default
``$CRYSTALVISION_HOME/mlflow.db``) and ``--env-manager local``; the process is replaced by it (``exec``), so signals
reach the server directly.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from crystalvision.core import ModelError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001  # 5000 is the MLflow UI's


def scripts_dir() -> Path:
    """The folder of this environment's console scripts (``.venv/bin``), where ``uvicorn`` is installed."""
    return Path(sysconfig.get_path("scripts"))


def server_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    """MLflow's ``models serve`` with this interpreter."""
    return [
        sys.executable,
        *("-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"),
        *("-h", host, "-p", str(port), "--workers", str(workers)),
    ]


def server_env(tracking_uri: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with this environment's scripts first on ``PATH`` and the tracking server set."""
    env = dict(os.environ if environ is None else environ)
    env["PATH"] = os.pathsep.join(filter(None, [str(scripts_dir()), env.get("PATH")]))
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar line per model file otherwise
    return env


def check_model(model_uri: str) -> None:
    """Refuse an unknown model with one line (MLflow's server would print a traceback)."""
    import mlflow

    try:
        mlflow.models.get_model_info(model_uri)
    except Exception as exc:  # MlflowException, OSError... for unknown models and versions
        raise ModelError(f"cannot load model {model_uri} ({exc}); train and register one first") from exc


def serve(model_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1) -> None:
    """Check the model, then replace this process with MLflow's scoring server (never returns)."""
    import mlflow

    from crystalvision.core import get_settings

    if not (scripts_dir() / "uvicorn").exists():
        raise ModelError(f"uvicorn is not in {scripts_dir()}; install it: {sys.executable} -m pip install uvicorn")
    tracking_uri = get_settings().tracking.mlflow_tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    check_model(model_uri)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, server_command(model_uri, host, port, workers), server_env(tracking_uri))
