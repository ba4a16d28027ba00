"""Job: evaluate a logged training run on its test split and log metrics, plots and report into it.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/evaluate.yaml \
        -- python -m jobs.evaluate --config pipelines/quickstart.yaml --run-id RUN_ID
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("evaluate", load_config(args), run_id=args.run_id)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run-id", required=True, help="MLflow run id of a training run.")
    return p


if __name__ == "__main__":
    run(main, build_parser())
