"""Job: query the Materials Project (needs MP_API_KEY in the job's environment) and write a snapshot.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env/ingest.yaml \
        -- python -m jobs.ingest --config pipelines/watch.yaml
"""

from __future__ import annotations

import argparse

from jobs._common import load_config, parser, run, run_command


def main(args: argparse.Namespace) -> dict[str, str]:
    return run_command("ingest", load_config(args), out=args.out)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0], default_config="pipelines/watch.yaml")
    p.add_argument("--out", default=None, help="Snapshots folder (default: CRYSTALVISION_SNAPSHOTS_ROOT).")
    return p


if __name__ == "__main__":
    run(main, build_parser())
