"""README's Li-Mn-Ni-O space rows, regenerated from a learning-curve record.

Reads ``learning_curve.json`` (written by ``crystalvision curve pipelines/space-curve.yaml``; its last point is the
grouped 5-fold protocol on every training structure) and prints two Markdown tables: the pooled out-of-fold metric
of every method on every head at each training size, with its 95 % bootstrap interval over structures, and the
image model against each baseline at full size (paired bootstrap of the difference). ``--readme README.md``
rewrites them between README's ``space-table`` markers; ``--figure DST`` copies the curve's figure there.

Usage: ``python docs/study/space_table.py docs/study/records/space-curve.json [--readme README.md]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path

HEAD_TITLES = {
    "crystal_system": "acc system",
    "spacegroup": "acc space group",
    "band_gap": "R² gap",
    "energy_above_hull": "R² e_hull",
}
BASELINES = {"CGCNN": "cgcnn", "1-NN": "1nn", "majority / mean": "dummy"}
METRIC = {"crystal_system": "acc", "spacegroup": "acc", "band_gap": "r2", "energy_above_hull": "r2"}


def interval(cell: dict[str, float]) -> str:
    """``0.41 [0.37, 0.45]``; blank when the method was not run."""
    if not math.isfinite(cell.get("value", math.nan)):
        return ""
    return f"{cell['value']:.2f} [{cell['lo']:.2f}, {cell['hi']:.2f}]"


def size_label(point: dict) -> str:
    n = point["train_structures"]
    return f"{n}" if n is not None else f"all ({point['n_train_mean']:.0f})"


def curve_table(record: dict) -> str:
    """Every size and method: pooled out-of-fold value [95 % interval] per head."""
    heads = list(record["heads"])
    lines = [
        "| training structures per fold | method | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for point in record["points"]:
        for method, cells in point["series"].items():
            if not any(math.isfinite(cells[h]["value"]) for h in heads):
                continue
            row = [size_label(point), method, *(interval(cells[h]) for h in heads)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def diff_table(record: dict) -> str:
    """Full size: image model minus each baseline, paired over structures, with the 95 % interval."""
    metrics = record["points"][-1]["metrics"]
    heads = list(record["heads"])
    lines = ["| image model minus | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |", "|---|" + "---|" * len(heads)]
    for label, predictor in BASELINES.items():
        cells = []
        for h in heads:
            key = f"pooled_diff_model_vs_{predictor}_{METRIC[h]}_{h}"
            cells.append(
                f"{metrics[key]:+.2f} [{metrics[key + '_lo']:+.2f}, {metrics[key + '_hi']:+.2f}]"
                if key in metrics
                else ""
            )
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(record: dict, source: str) -> str:
    n = record["points"][-1]["metrics"].get("pooled_n_structures")
    head = (
        f"Record: `{source}` (pipeline `{record['pipeline']}`; {n:.0f} structures, each predicted once out of fold). "
        "Values are pooled out-of-fold scores with 95 % bootstrap intervals over structures; band gap and e_hull are "
        "surrogate labels (see the data section)."
    )
    return f"{head}\n\n{curve_table(record)}\n\n{diff_table(record)}\n"


def replace_between(text: str, marker: str, body: str) -> str:
    """``text`` with the part between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` set to ``body``."""
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--figure", type=Path, help="Copy the curve's figure (beside the record) here.")
    args = ap.parse_args(argv)
    record = json.loads(args.record.read_text())
    text = render(record, args.record.as_posix())
    if args.figure:
        shutil.copyfile(args.record.with_suffix(".png"), args.figure)
    if args.readme:
        args.readme.write_text(replace_between(args.readme.read_text(), "space-table", text))
    else:
        print(text)


if __name__ == "__main__":
    main()
