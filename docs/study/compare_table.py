"""Compare grouped k-fold runs that differ in one setting (radii sets, training recipes): a Markdown table.

Each argument is ``LABEL=RECORD`` (the JSON summary ``crystalvision pipeline run <k-fold config> --json`` prints).
Per run: the validation metrics (mean ± sample std over the folds: the numbers a choice is made on), the best epoch
(counted from 1) against the epochs run, and the pooled out-of-fold test metric with its 95 % interval when the record
has one (reported, never chosen on). A caption line above the table says what each group of columns counts (per image
or per structure), read from the metric names (:func:`unit`). ``--out FILE --marker NAME`` rewrites the table between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in FILE.

Usage: ``python docs/study/compare_table.py vesta=docs/study/records/radii-vesta.json
shannon=docs/study/records/radii-shannon.json [--out docs/study.md --marker radii-table]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

HEADS = {  # head -> (metric prefix, title)
    "crystal_system": ("acc", "system acc"),
    "spacegroup": ("acc", "space group acc"),
    "band_gap": ("r2", "gap R²"),
    "energy_above_hull": ("r2", "e_hull R²"),
}


VAL = "val_{metric}_{head}"  # the record's per-fold validation metric (``_mean`` / ``_std`` over the folds)
OOF = "pooled_model_{metric}_{head}"  # its pooled section's out-of-fold score (``_lo`` / ``_hi``: 95 % interval)


def unit(metric: str) -> str:
    """What a metric name counts: ``per structure`` for ``test_struct_*`` / ``val_struct_*`` and the pooled
    out-of-fold ``pooled_*`` (a structure's views averaged), ``per image`` for ``test_*`` / ``val_*``."""
    level, _, rest = metric.partition("_")
    return "per structure" if level == "pooled" or rest.startswith("struct_") else "per image"


def units(pattern: str) -> str:
    """The unit of every head's metric named by ``pattern`` (:data:`VAL`, :data:`OOF`), e.g. ``per image``."""
    return ", ".join(sorted({unit(pattern.format(metric=m, head=h)) for h, (m, _) in HEADS.items()}))


def _mean_std(metrics: dict, name: str) -> str:
    mean, std = metrics.get(f"{name}_mean", math.nan), metrics.get(f"{name}_std", math.nan)
    if not math.isfinite(mean):
        return ""
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _pooled(pooled: dict, key: str) -> str:
    if key not in pooled:
        return ""
    lo, hi = pooled.get(f"{key}_lo"), pooled.get(f"{key}_hi")
    return f"{pooled[key]:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def caption(runs: dict[str, dict]) -> str:
    """The line above the table: what each group of columns counts, read from the metric names."""
    text = f"Validation columns: {units(VAL)}, mean ± std over the folds."
    if any((record.get("pooled") or {}).get("metrics") for record in runs.values()):
        text += f" Out-of-fold columns: {units(OOF)}, pooled out of fold (each structure predicted once)."
    return text


def table(runs: dict[str, dict]) -> str:
    """The caption line, then one row per run: validation mean ± std per head, best epoch / epochs run, pooled test
    per head."""
    titles = [t for _, t in HEADS.values()]
    lines = [
        caption(runs),
        "",
        "| run | folds | "
        + " | ".join(f"val {t}" for t in titles)
        + " | best epoch / run | "
        + " | ".join(f"out-of-fold {t}" for t in titles)
        + " |",
        "|---|---|" + "---|" * (2 * len(titles) + 1),
    ]
    for label, record in runs.items():
        m, pooled = record["metrics"], (record.get("pooled") or {}).get("metrics", {})
        val = [_mean_std(m, VAL.format(metric=metric, head=head)) for head, (metric, _) in HEADS.items()]
        best = m.get("best_epoch_mean", math.nan) + 1  # logged from 0; shown from 1
        epochs = f"{best:.1f} / {m.get('epochs_trained_mean', math.nan):.1f}"
        test = [_pooled(pooled, OOF.format(metric=metric, head=head)) for head, (metric, _) in HEADS.items()]
        lines.append(f"| {label} | {m.get('n_folds', math.nan):.0f} | " + " | ".join([*val, epochs, *test]) + " |")
    return "\n".join(lines)


def write_between(path: Path, marker: str, text: str) -> None:
    """Replace what lies between the marker pair in ``path`` (both markers must exist)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    body = path.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"{path} has no {start} ... {end} markers; add them where the table belongs")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RECORD.json")
    parser.add_argument("--out", type=Path, help="Markdown file to rewrite between the markers.")
    parser.add_argument("--marker", default="compare-table")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, _, path = item.partition("=")
        runs[label] = json.loads(Path(path).read_text())
    text = table(runs)
    if args.out:
        write_between(args.out, args.marker, text)
    print(text)


if __name__ == "__main__":
    main()
