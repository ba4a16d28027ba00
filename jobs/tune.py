"""Job: sweep learning rate and loss weights with Ray Tune; trials are nested MLflow runs.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/tune.yaml \
        -- python -m jobs.tune --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> Any:
    return run_command("tune", load_config(args))


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
