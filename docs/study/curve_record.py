"""A learning-curve record from finished k-fold runs: for a curve stopped before its last sizes ran.

Each point of ``crystalvision curve`` is one k-fold pipeline run (MLflow parent run ``<name>-n<size>``, with its
pooled out-of-fold metrics and ``evaluation/oof_predictions.parquet``). This rebuilds ``learning_curve.json`` and
its figure from the points that finished, with the same config (for its name, hash and bootstrap settings).

Usage (``CRYSTALVISION_HOME`` / ``MLFLOW_TRACKING_URI`` as for the curve's run)::

    python docs/study/curve_record.py pipelines/space-curve.yaml --set KEY=VALUE ... \
        --run 62=RUN_ID --run 250=RUN_ID --out docs/study/records/space-curve
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crystalvision.app.learning_curve import points_from_runs, write_record
from crystalvision.core.pipeline_file import load_pipeline, parse_overrides


def parse_run(text: str) -> tuple[int | None, str]:
    """``62=abc`` -> (62, "abc"); ``all=abc`` -> (None, "abc")."""
    size, _, run_id = text.partition("=")
    if not run_id:
        raise argparse.ArgumentTypeError(f"--run {text!r}: write SIZE=RUN_ID, e.g. 62=0123abcd")
    return (None if size == "all" else int(size)), run_id


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run", dest="runs", action="append", type=parse_run, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cfg = load_pipeline(args.config, parse_overrides(args.overrides))
    _, figure = write_record(cfg, points_from_runs(cfg, dict(args.runs)), args.out)
    return figure


if __name__ == "__main__":
    main()
