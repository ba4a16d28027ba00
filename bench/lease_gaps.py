"""The longest stretch without progress in a pipeline run: what the watch and train leases must outlast.

Runs a pipeline file (default ``pipelines/quickstart.yaml``, with ``--set`` overrides) in a fresh
``CRYSTALVISION_HOME`` with a progress listener and records every gap between two progress points, twice: counting
only stage, render-batch and epoch events (what renewed a lease before heartbeats existed) and counting the
heartbeats too (start-up, training and validation batches, evaluation steps, registry calls). Writes
``bench/results/lease_gaps.json``.

    python -m bench.lease_gaps [--config FILE] [--set key=value ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "lease_gaps.json"
log = logging.getLogger("bench.lease_gaps")


def longest_gaps(events: list[dict], end: float, heartbeats: bool, n: int = 5) -> list[dict]:
    """The ``n`` longest gaps (seconds) between consecutive events, from the start (0) to ``end``, each named by the
    event that ended it (``end of run`` for the last stretch)."""
    kept = [e for e in events if heartbeats or not e["heartbeat"]]
    marks = [{"t": 0.0, "stage": "start", "step": ""}, *kept, {"t": end, "stage": "end of run", "step": ""}]
    gaps = [{"gap_s": round(b["t"] - a["t"], 2), "ended_by": f"{b['stage']} {b['step']}".strip(),
             "after": f"{a['stage']} {a['step']}".strip()} for a, b in itertools.pairwise(marks)]  # fmt: skip
    return sorted(gaps, key=lambda g: -g["gap_s"])[:n]


def measure(config: Path, overrides: list[str]) -> dict:
    """Run the pipeline once in a fresh home; the progress events and the longest gaps with and without heartbeats."""
    from crystalvision.app.pipeline import run_pipeline
    from crystalvision.core import progress
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
    from crystalvision.core.settings import get_settings

    cfg = load_pipeline(config, parse_overrides(overrides))
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cv-lease-gaps-") as home:
        os.environ["CRYSTALVISION_HOME"] = home
        get_settings.cache_clear()
        start = time.perf_counter()

        def listen(event: progress.ProgressEvent) -> None:
            step = event.info.get("step") or event.info.get("beat") or ("done" if event.finished else "")
            events.append({"t": round(time.perf_counter() - start, 3), "stage": event.stage,
                           "step": str(step), "heartbeat": event.heartbeat})  # fmt: skip

        with progress.listening(listen):
            result = run_pipeline(cfg)
        wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 1),
        "stage_seconds": result.stage_seconds,
        "n_events": sum(not e["heartbeat"] for e in events),
        "n_heartbeats": sum(e["heartbeat"] for e in events),
        "longest_gaps_without_heartbeats": longest_gaps(events, wall, heartbeats=False),
        "longest_gaps_with_heartbeats": longest_gaps(events, wall, heartbeats=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    record = {
        "command": " ".join(["python -m bench.lease_gaps", *(f"--set {o}" for o in args.overrides)]),
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "overrides": args.overrides,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
        **measure(args.config, args.overrides),
    }
    record["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("wall_s", "longest_gaps_without_heartbeats",
                                             "longest_gaps_with_heartbeats")}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
