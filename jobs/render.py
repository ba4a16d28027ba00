"""Job: render the selected structures into images + labels in the object store (Ray Data).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/render.yaml \
        -- python -m jobs.render --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run


def main(args: argparse.Namespace) -> dict[str, Any]:
    from crystalvision.pipeline import run_render_stage

    return run_render_stage(load_config(args)).summary()


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
