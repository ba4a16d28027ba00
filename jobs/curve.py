"""Job: the learning curve of a grouped k-fold pipeline (one k-fold run per training size; long).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/pipeline.yaml \
        -- python -m jobs.curve --config pipelines/space-curve.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run_command("curve", load_config(args), out=args.out)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0], default_config="pipelines/space-curve.yaml")
    p.add_argument("--out", default=None, help="Folder for learning_curve.json and its figure (default: home).")
    return p


if __name__ == "__main__":
    run(main, build_parser())
