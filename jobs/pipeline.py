"""Job: the whole pipeline, snapshot -> render -> train -> evaluate -> register.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/pipeline.yaml \
        -- python -m jobs.pipeline --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("pipeline", load_config(args))


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
