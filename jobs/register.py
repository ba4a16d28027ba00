"""Job: register a run's model as challenger and promote it to champion only if it is better.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/register.yaml \
        -- python -m jobs.register --config pipelines/quickstart.yaml --run-id RUN_ID
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("register", load_config(args), run_id=args.run_id)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run-id", required=True, help="MLflow run id whose model to register.")
    return p


if __name__ == "__main__":
    run(main, build_parser())
