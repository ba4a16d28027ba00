"""What every job entrypoint shares: arguments, logging, error handling and the JSON result on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("crystalvision.jobs")


def parser(description: str, default_config: str = "pipelines/quickstart.yaml") -> argparse.ArgumentParser:
    """An argument parser with ``--config`` and repeatable ``--set section.key=value``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help="Pipeline YAML, relative to the working dir.")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Override: section.key=value.")
    return p


def load_config(args: argparse.Namespace):
    """The pipeline config named by ``--config`` with ``--set`` overrides applied."""
    from crystalvision.config import load_pipeline, parse_overrides

    return load_pipeline(args.config, parse_overrides(args.overrides))


def run_command(name: str, cfg: Any, **options: Any) -> Any:
    """Command ``name`` of the table the CLI uses too (:mod:`crystalvision.commands`)."""
    from crystalvision.commands import run as run_table_command

    return run_table_command(name, cfg, **options)


def run(main: Callable[[argparse.Namespace], Any], args: argparse.ArgumentParser) -> None:
    """Parse arguments, run ``main`` and write its result as one JSON line on stdout (exit 2 on user errors)."""
    from crystalvision.errors import CrystalVisionError
    from crystalvision.logs import setup_logging

    setup_logging()
    ns = args.parse_args()
    try:
        result = main(ns)
    except CrystalVisionError as exc:
        log.error("%s", exc)
        sys.exit(2)
    sys.stdout.write(json.dumps({"result": result}, default=str) + "\n")
    sys.stdout.flush()
