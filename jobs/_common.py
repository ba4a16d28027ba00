"""What every job entrypoint shares: arguments, a durable home, error handling and the summary at the end of the log.

A job ends its log as the CLI ends a run: the human summary, then ``result    <file>`` naming the JSON file under
``$CRYSTALVISION_HOME/jobs/`` that holds the whole result (:func:`read_result` reads it back).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
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
# The ones that hold state a later job must find (registry, store, checkpoints): never inside the job's package.
STATE_VARS = tuple(v for v in PATH_VARS if v != "CRYSTALVISION_SNAPSHOT_URI")
DURABLE_HOME = "~/.crystalvision"  # a job's home when CRYSTALVISION_HOME is not set
RESULT_LINE = re.compile(r"^result\s+(?P<path>\S.*\.json)\s*$", re.MULTILINE)
SHORT_RESULT_LINES = 40  # a result (not a pipeline's) up to this many lines of JSON is printed whole


def parser(description: str, default_config: str = "pipelines/quickstart.yaml") -> argparse.ArgumentParser:
    """An argument parser with ``--config`` and repeatable ``--set section.key=value``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help="Pipeline YAML, relative to the working dir.")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Override: section.key=value.")
    return p


def load_config(args: argparse.Namespace):
    """The pipeline config named by ``--config`` with ``--set`` overrides applied (paths in the file resolve against
    its folder, paths in overrides against the job's working dir)."""
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides

    return load_pipeline(args.config, parse_overrides(args.overrides), base=getattr(args, "workdir", None))


def _absolute(value: str) -> str:
    """A local path or ``sqlite:///`` / ``file:`` URI made absolute; remote URIs unchanged."""
    for scheme in ("sqlite:///", "file://"):
        if value.startswith(scheme):
            rest = value[len(scheme) :]
            return value if rest.startswith("/") else f"{scheme}{Path(rest).resolve()}"
    return value if not value or "://" in value else str(Path(value).expanduser().resolve())


def runtime_env_package(folder: Path) -> Path | None:
    """The Ray runtime-env package that ``folder`` lies in (``.../working_dir_files/_ray_pkg_<hash>``), or None."""
    for p in (folder, *folder.parents):
        if p.name.startswith("_ray_pkg_") or p.parent.name == "working_dir_files":
            return p
    return None


def _local_path(value: str) -> Path | None:
    """The local path an absolute setting names (``sqlite:///``, ``file://`` or a plain path), else None."""
    for scheme in ("sqlite:///", "file://"):
        if value.startswith(scheme):
            return Path(value[len(scheme) :])
    return None if "://" in value else Path(value)


def refuse_state_inside(package: Path) -> None:
    """ConfigError naming the first state setting that points inside ``package``, which Ray deletes."""
    from crystalvision.core.errors import ConfigError

    for var in STATE_VARS:
        path = _local_path(os.environ[var]) if os.environ.get(var) else None
        if path is not None and path.resolve().is_relative_to(package.resolve()):
            raise ConfigError(
                f"{var}={os.environ[var]} lies inside this job's runtime-env package {package}, which Ray deletes "
                f"(and every edit of the checkout is a new package): set {var} to an absolute path on durable "
                f"storage in the environment of the Ray nodes, e.g. CRYSTALVISION_HOME={DURABLE_HOME} on one machine "
                "or a shared volume on a cluster (docs/cluster.md)"
            )


def pin_paths(args: argparse.Namespace) -> Path:
    """Resolve path arguments and local path settings against the working dir, then move into the home folder.

    A job's working dir is a runtime-env package that Ray deletes once no worker uses it; MLflow's stores ask for
    the current directory whenever they open (even with absolute URIs), so the driver must not stay in it. In a
    package, the home defaults to ``~/.crystalvision`` and no state setting may point inside the package.
    """
    from crystalvision.core.settings import get_settings

    work = Path.cwd()
    args.workdir = str(work)
    package = runtime_env_package(work)
    for name in PATH_ARGS:
        if getattr(args, name, None):
            setattr(args, name, _absolute(str(getattr(args, name))))
    if package is not None and not os.environ.get("CRYSTALVISION_HOME"):
        os.environ["CRYSTALVISION_HOME"] = str(Path(DURABLE_HOME).expanduser())
    for var in PATH_VARS:
        if os.environ.get(var):
            os.environ[var] = _absolute(os.environ[var])
    if package is not None:
        refuse_state_inside(package)
    get_settings.cache_clear()
    home = get_settings().paths.home
    os.environ["CRYSTALVISION_HOME"] = str(home)  # the defaults (MLflow db, artifacts, store) live under it
    get_settings.cache_clear()
    home.mkdir(parents=True, exist_ok=True)
    os.chdir(home)
    log.info("job home %s (CRYSTALVISION_HOME)", home)
    return home


def run_command(name: str, cfg: Any, **options: Any) -> Any:
    """Command ``name`` of the table the CLI uses too (:mod:`crystalvision.app.commands`)."""
    from crystalvision.app.commands import run as run_table_command

    return run_table_command(name, cfg, **options)


def write_result(home: Path, job: str, result: Any) -> Path:
    """The whole result as JSON in ``<home>/jobs/<UTC time>-<job>-<pid>.json`` (written atomically)."""
    folder = home / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{job}-{os.getpid()}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
    return path


def print_summary(result: Any, path: Path) -> None:
    """The end of the job's log: a pipeline's summary as the CLI prints it, a registry decision as its line,
    any other short result as JSON; then the file that holds the whole result."""
    from rich.console import Console
    from rich.text import Text

    from crystalvision.app.summary import pipeline_summary, registry_line
    from crystalvision.core.logs import mask

    console = Console(file=sys.stdout, width=1000, soft_wrap=True, highlight=False)
    if isinstance(result, dict) and "pipeline" in result:
        console.print(pipeline_summary(result))
    elif isinstance(result, dict) and "promoted" in result:
        console.print(Text(registry_line(result) or ""))
    else:
        text = json.dumps(result, indent=2, default=str)
        lines = text.splitlines()
        short = len(lines) <= SHORT_RESULT_LINES and max(map(len, lines), default=0) <= 300
        console.print(Text(mask(text) if short else f"{type(result).__name__} of {len(lines)} JSON lines"))
    console.print(Text(f"result    {path}"))
    sys.stdout.flush()


def read_result(log_text: str) -> Any:
    """The whole result of a job from its log: the JSON file its last ``result    <file>`` line names."""
    found = RESULT_LINE.findall(log_text)
    if not found:
        raise ValueError(f"no 'result <file>' line in the job's log:\n{log_text[-3000:]}")
    return json.loads(Path(found[-1]).read_text())


def run(main: Callable[[argparse.Namespace], Any], args: argparse.ArgumentParser) -> None:
    """Parse arguments, run ``main``, write its result to a file and end the log with the summary. A user error or
    an unreachable MLflow server: one masked line, exit 2; anything else: its masked traceback, exit 1."""
    from crystalvision.app.failure import describe
    from crystalvision.core.logs import setup_logging

    setup_logging()
    ns = args.parse_args()
    try:
        home = pin_paths(ns)
        result = main(ns)
        path = write_result(home, Path(sys.argv[0]).stem or "job", result)
    except Exception as exc:
        code, text = describe(exc)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        sys.exit(code)
    print_summary(result, path)
