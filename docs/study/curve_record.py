"""The learning curve's table and figure, from its point records.

``crystalvision curve pipelines/space-curve.yaml --size N --out DIR`` writes one record per point
(``DIR/point-<N>.json``, ``DIR/point-all.json``). This merges every point record in ``DIR`` into
``DIR/learning_curve.json`` and its figure ``DIR/learning_curve.png`` (after checking that they are points of one
curve: one config, one budget, the same test folds), and prints Markdown tables: every method's pooled out-of-fold
score on every head at each size with its 95 % bootstrap interval over structures, the class heads' balanced
accuracy and macro-F1, and per size, labelled with it, the image model minus each baseline (paired over
structures). ``--readme docs/study.md`` rewrites them between the page's ``space-table`` markers;
``--figure DST`` copies the figure there too.

Usage: ``python docs/study/curve_record.py docs/study/records/space-curve [--readme docs/study.md]``
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
from pathlib import Path

from crystalvision.app import curve_record as cr

HEAD_TITLES = {
    "crystal_system": "acc system",
    "spacegroup": "acc space group",
    "band_gap": "R² gap",
    "energy_above_hull": "R² e_hull",
}
IMBALANCE = [
    ("balanced_acc", "crystal_system", "bal. acc system"),
    ("macro_f1", "crystal_system", "macro-F1 system"),
    ("balanced_acc", "spacegroup", "bal. acc space group"),
    ("macro_f1", "spacegroup", "macro-F1 space group"),
]
BASELINES = {"trees": "tabular", "CGCNN": "cgcnn", "1-NN": "1nn", "majority / mean": "dummy"}


def interval(cell: dict[str, float]) -> str:
    """``0.41 [0.37, 0.45]``; blank when the method was not run."""
    if not math.isfinite(cell.get("value", math.nan)):
        return ""
    return f"{cell['value']:.2f} [{cell['lo']:.2f}, {cell['hi']:.2f}]"


def size_label(point: dict) -> str:
    """``62 (50 + 12)``, ``all: 706 (565 + 141)``: structures per fold, training + validation (means over the
    folds)."""
    n = point["train_structures"]
    size = f"{n}" if n is not None else f"all: {point['n_structures_mean']:.0f}"
    return f"{size} ({point['n_train_mean']:.0f} + {point['n_val_mean']:.0f})"


def curve_table(record: dict) -> str:
    """Every size and method: pooled out-of-fold value [95 % interval] per head."""
    heads = list(record["heads"])
    lines = [
        "| structures per fold (train + val) | method | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for point in record["points"]:
        for method, cells in point["series"].items():
            if any(math.isfinite(cells[h]["value"]) for h in heads):
                lines.append(
                    "| " + " | ".join([size_label(point), method, *(interval(cells[h]) for h in heads)]) + " |"
                )
    return "\n".join(lines)


def imbalance_table(record: dict) -> str:
    """Every size and method: the class heads' pooled balanced accuracy and macro-F1."""
    lines = ["| structures per fold | method | " + " | ".join(t for *_, t in IMBALANCE) + " |",
             "|---|---|" + "---|" * len(IMBALANCE)]  # fmt: skip
    for point in record["points"]:
        m = point["metrics"]
        for method, predictor in cr.METHODS.items():
            cells = [
                f"{m[k]:.2f}" if (k := f"pooled_{predictor}_{metric}_{h}") in m else "" for metric, h, _ in IMBALANCE
            ]
            if any(cells):
                lines.append(f"| {cr.point_key(point['train_structures'])} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(record: dict, point: dict) -> str:
    """One size: image model minus each baseline, paired over structures, with the 95 % interval; the header names
    the size. Blank when the point has no differences."""
    metrics, heads = point["metrics"], list(record["heads"])
    title = f"image model minus, at {size_label(point)} structures per fold"
    lines = [f"| {title} | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |", "|---|" + "---|" * len(heads)]
    for label, predictor in BASELINES.items():
        cells = []
        for h in heads:
            key = f"pooled_diff_model_vs_{predictor}_{record['heads'][h]}_{h}"
            cells.append(f"{metrics[key]:+.2f} [{metrics[key + '_lo']:+.2f}, {metrics[key + '_hi']:+.2f}]"
                         if key in metrics else "")  # fmt: skip
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def header(record: dict, source: str, missing: list[str]) -> str:
    """Where the numbers come from, what a point is, the budget and each point's run."""
    b = record["budget"]
    n = record["points"][-1]["metrics"].get("pooled_n_structures", math.nan)
    runs = "; ".join(
        f"{cr.point_key(p['train_structures'])}: {p['finished'][:10]}, {p['seconds'] / 60:.0f} min ({p['hardware']})"
        for p in record["points"]
    )
    text = (
        f"Records: `{source}/point-*.json`, merged into `{source}/{cr.CURVE_FILE}` (pipeline `{record['pipeline']}`; "
        f"{n:.0f} structures, each predicted once out of fold at every point). A point: {record['protocol']}. "
        f"Budget at every point: {b['views_per_structure']} views of {b['image_size']} px, {b['epochs']} epoch(s) x "
        f"{b['steps_per_epoch']} optimiser steps of batch {b['batch_size']} ({b['optimiser_steps']} steps), "
        f"{b['early_stopping']}, {b['kept_weights']}, seed(s) {b['seeds']}. Runs: {runs}. Pooled out-of-fold scores "
        "per structure with 95 % bootstrap intervals over structures; band gap and e_hull are surrogate labels (see "
        "the data section), the band gaps a pretrained CGCNN's predictions, which favours CGCNN on that head."
    )
    return text + (f" Points not run yet: {', '.join(missing)}." if missing else "")


def render(record: dict, source: str, missing: list[str] | None = None) -> str:
    diffs = [t for point in record["points"] if (t := diff_table(record, point))]
    parts = [header(record, source, missing or []), curve_table(record), imbalance_table(record), *diffs]
    return "\n\n".join(parts) + "\n"


def replace_between(text: str, marker: str, body: str) -> str:
    """``text`` with the part between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` set to ``body``."""
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"the page has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="The curve's folder of point records (--out of crystalvision curve).")
    ap.add_argument("--sizes", nargs="*", default=None, help="The curve's points, to name the missing ones.")
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--figure", type=Path, help="Copy the figure here too.")
    args = ap.parse_args(argv)
    record = cr.merge(cr.read_points(args.folder))
    _, figure = cr.write_curve(record, args.folder)
    have = {cr.point_key(n) for n in record["sizes"]}
    missing = [s for s in args.sizes or [] if s not in have]
    text = render(record, args.folder.as_posix(), missing)
    if args.figure:
        shutil.copyfile(figure, args.figure)
    if args.readme:
        args.readme.write_text(replace_between(args.readme.read_text(), "space-table", text))
    else:
        print(text)
    return figure


if __name__ == "__main__":
    main()
