"""Job: render the selected structures into images + labels in the object store (Ray Data).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/render.yaml \
        -- python -m jobs.render --config pipelines/quickstart.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("render", load_config(args))


if __name__ == "__main__":
    run(main, parser(__doc__.splitlines()[0]))
