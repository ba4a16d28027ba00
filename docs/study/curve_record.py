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
import shutil
from pathlib import Path

import space_table as st  # the sibling whose table parts these tables share (this script's folder is on sys.path)

from crystalvision.app import curve_record as cr

IMBALANCE = [
    ("balanced_acc", "crystal_system", "bal. acc system"),
    ("macro_f1", "crystal_system", "macro-F1 system"),
    ("balanced_acc", "spacegroup", "bal. acc space group"),
    ("macro_f1", "spacegroup", "macro-F1 space group"),
]


def size_label(point: dict) -> str:
    """``62 (50 + 12)``, ``all: 706 (565 + 141)``: structures per fold, training + validation (means over the
    folds)."""
    n = point["train_structures"]
    size = f"{n}" if n is not None else f"all: {point['n_structures_mean']:.0f}"
    return f"{size} ({point['n_train_mean']:.0f} + {point['n_val_mean']:.0f})"


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
    """The tables: every size and method per head, the class heads' imbalance metrics, each size's differences."""
    points = record["points"]
    diffs = [st.diff_table(record, p, f"image model minus, at {size_label(p)} structures per fold") for p in points]
    curve = st.curve_table(record, size_label, "structures per fold (train + val)")
    parts = [header(record, source, missing or []), curve, imbalance_table(record), *filter(None, diffs)]
    return "\n\n".join(parts) + "\n"


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
        args.readme.write_text(st.replace_between(args.readme.read_text(), "space-table", text))
    else:
        print(text)
    return figure


if __name__ == "__main__":
    main()
