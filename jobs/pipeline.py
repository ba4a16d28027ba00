"""Job: the whole pipeline, snapshot -> render -> train -> evaluate -> register.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/pipeline.yaml \
        -- python -m jobs.pipeline --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run


def main(args: argparse.Namespace) -> dict[str, Any]:
    from crystalvision.pipeline import run_pipeline

    return run_pipeline(load_config(args)).summary()


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
