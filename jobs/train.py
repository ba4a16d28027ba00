"""Job: render if needed, then train with Ray Train and log to MLflow (no evaluation, no registration).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/train.yaml \
        -- python -m jobs.train --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("train", load_config(args))


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
