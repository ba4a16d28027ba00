"""What every benchmark module shares: the row format, the table printer and the stand-alone entry point."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

HEADERS = ("benchmark", "metric", "value", "unit", "goal", "notes")


def row(benchmark: str, metric: str, value: float, unit: str, notes: str = "", goal: str = "") -> dict:
    """One result row; ``goal`` is the target it is measured against (e.g. ">= 800"), "" for none."""
    return {"benchmark": benchmark, "metric": metric, "value": value, "unit": unit, "goal": goal, "notes": notes}


def format_value(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict]) -> None:
    """Print rows as an aligned text table on stdout."""
    cells = [[format_value(r.get(h, "")) for h in HEADERS] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    sys.stdout.write(line + "\n" + "-" * len(line) + "\n")
    for c in cells:
        sys.stdout.write("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + "\n")


def smoke_results(results: Path) -> Path:
    """Where a ``--quick`` (smoke) run writes by default: ``$CRYSTALVISION_HOME/bench/`` (default
    ``.crystalvision/bench/``), never over the committed results in ``bench/results/``."""
    home = Path(os.environ.get("CRYSTALVISION_HOME", ".crystalvision")).resolve()
    return home / "bench" / f"{results.stem}-quick{results.suffix}"


def module_main(run: Callable[..., list[dict]], results: Path, description: str, quick_help: str) -> None:
    """``python -m bench.X [--quick] [--out FILE]``: run, print the table, write the rows as JSON (``results``;
    a ``--quick`` run to :func:`smoke_results`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"{quick_help}; writes {smoke_results(results)}")
    parser.add_argument("--out", type=Path, help=f"JSON results file (default {results})")
    args = parser.parse_args()
    out = args.out or (smoke_results(results) if args.quick else results)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = run(quick=args.quick)
    print_table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    logging.getLogger("bench").info("wrote %s", out)
