"""What every job entrypoint shares: arguments, logging, error handling and the JSON result on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("crystalvision.jobs")

PATH_ARGS = ("config", "out", "uri")  # job arguments that may name a local path (ingest --out, snapshot --uri)
# Settings read from the environment that may hold a local path (relative ones resolve against the working dir).
PATH_VARS = (
    "CRYSTALVISION_HOME",
    "CRYSTALVISION_SNAPSHOT_URI",
    "CRYSTALVISION_SNAPSHOTS_ROOT",
    "CRYSTALVISION_OBJECT_STORE_URI",
    "CRYSTALVISION_RAY_STORAGE_PATH",
    "CRYSTALVISION_MLFLOW_ARTIFACT_LOCATION",
    "CRYSTALVISION_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
)


def parser(description: str, default_config: str = "pipelines/quickstart.yaml") -> argparse.ArgumentParser:
    """An argument parser with ``--config`` and repeatable ``--set section.key=value``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help="Pipeline YAML, relative to the working dir.")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Override: section.key=value.")
    return p


def load_config(args: argparse.Namespace):
    """The pipeline config named by ``--config`` with ``--set`` overrides applied."""
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides

    return load_pipeline(args.config, parse_overrides(args.overrides))


def _absolute(value: str) -> str:
    """A local path or ``sqlite:///`` / ``file:`` URI made absolute; remote URIs unchanged."""
    for scheme in ("sqlite:///", "file://"):
        if value.startswith(scheme):
            rest = value[len(scheme) :]
            return value if rest.startswith("/") else f"{scheme}{Path(rest).resolve()}"
    return value if not value or "://" in value else str(Path(value).resolve())


def pin_paths(args: argparse.Namespace) -> Path:
    """Resolve path arguments and local path settings against the working dir, then move into the home folder.

    A job's working dir is a runtime-env package that Ray deletes once no worker uses it; MLflow's stores ask for
    the current directory whenever they open (even with absolute URIs), so the driver must not stay in it.
    """
    from crystalvision.core.settings import get_settings

    for name in PATH_ARGS:
        if getattr(args, name, None):
            setattr(args, name, _absolute(str(getattr(args, name))))
    for var in PATH_VARS:
        if os.environ.get(var):
            os.environ[var] = _absolute(os.environ[var])
    get_settings.cache_clear()
    home = get_settings().paths.home
    os.environ["CRYSTALVISION_HOME"] = str(home)  # the defaults (MLflow db, artifacts, store) live under it
    get_settings.cache_clear()
    home.mkdir(parents=True, exist_ok=True)
    os.chdir(home)
    return home


def run_command(name: str, cfg: Any, **options: Any) -> Any:
    """Command ``name`` of the table the CLI uses too (:mod:`crystalvision.app.commands`)."""
    from crystalvision.app.commands import run as run_table_command

    return run_table_command(name, cfg, **options)


def run(main: Callable[[argparse.Namespace], Any], args: argparse.ArgumentParser) -> None:
    """Parse arguments, run ``main`` and write its result as one JSON line on stdout (exit 2 on user errors)."""
    from crystalvision.core.errors import CrystalVisionError
    from crystalvision.core.logs import setup_logging

    setup_logging()
    ns = args.parse_args()
    try:
        pin_paths(ns)
        result = main(ns)
    except CrystalVisionError as exc:
        log.error("%s", exc)
        sys.exit(2)
    sys.stdout.write(json.dumps({"result": result}, default=str) + "\n")
    sys.stdout.flush()
