"""Job: check the Materials Project once and retrain + promote on a new database version (else exit quietly).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/watch.yaml \
        -- python -m jobs.watch --config pipelines/watch.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("watch", load_config(args), force=args.force)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0], default_config="pipelines/watch.yaml")
    p.add_argument("--force", action="store_true", help="Retrain even if nothing changed.")
    return p


if __name__ == "__main__":
    run(main, build_parser())
