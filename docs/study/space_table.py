"""docs/study.md's Li-Mn-Ni-O space tables from a grouped k-fold run's record, and the table parts the other study
scripts share.

A k-fold run's record (the JSON summary ``crystalvision pipeline run pipelines/space-grouped.yaml --json`` prints)
gives one table per scope (every structure, then each ``evaluate.subsets`` subset of 20 structures or more): each
method's pooled out-of-fold score, then the image model minus each baseline, paired over structures, with its 95 %
interval; ``--readme`` rewrites it between the ``space-grouped-table`` markers. A learning curve's tables come from
``curve_record.py`` (its point records), the seed-merged headlines' from ``seed_record.py``.

Usage: ``python docs/study/space_table.py docs/study/records/space-grouped.json [--readme docs/study.md]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

HEAD_TITLES = {
    "crystal_system": "acc system",
    "spacegroup": "acc space group",
    "band_gap": "R² gap",
    "energy_above_hull": "R² e_hull",
}
BASELINES = {"trees": "tabular", "CGCNN": "cgcnn", "1-NN": "1nn", "majority / mean": "dummy"}
# what every number here counts: the records' pooled_* metrics score each structure once (its views averaged)
UNIT = "per structure, pooled out of fold"


def interval(cell: dict[str, float]) -> str:
    """``0.41 [0.37, 0.45]``; blank when the method was not run."""
    if not math.isfinite(cell.get("value", math.nan)):
        return ""
    return f"{cell['value']:.2f} [{cell['lo']:.2f}, {cell['hi']:.2f}]"


def curve_table(record: dict, label: Callable[[dict], str], column: str) -> str:
    """A learning curve's every size and method: pooled out-of-fold value [95 % interval] per head; ``label`` names a
    point's size in the first column, headed ``column``."""
    heads = list(record["heads"])
    lines = [
        f"| {column} | method | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for point in record["points"]:
        for method, cells in point["series"].items():
            if any(math.isfinite(cells[h]["value"]) for h in heads):
                lines.append("| " + " | ".join([label(point), method, *(interval(cells[h]) for h in heads)]) + " |")
    return "\n".join(lines)


def diff_cell(metrics: dict, key: str) -> str:
    """``-0.14 [-0.18, -0.10]``: a paired difference with its 95 % interval; blank when the record has none."""
    return f"{metrics[key]:+.2f} [{metrics[key + '_lo']:+.2f}, {metrics[key + '_hi']:+.2f}]" if key in metrics else ""


def diff_table(record: dict, point: dict, title: str) -> str:
    """One size of a learning curve: image model minus each baseline, paired over structures, with the 95 %
    interval, under the header ``title`` (which names the size). Blank when the point has no differences."""
    metrics, heads = point["metrics"], record["heads"]  # heads: each head's metric
    lines = [f"| {title} | " + " | ".join(HEAD_TITLES[h] for h in heads) + " |", "|---|" + "---|" * len(heads)]
    for label, predictor in BASELINES.items():
        cells = [diff_cell(metrics, f"pooled_diff_model_vs_{predictor}_{heads[h]}_{h}") for h in heads]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


PREDICTORS = {"image model": "model", "trees": "tabular", "CGCNN": "cgcnn", "1-NN": "1nn", "majority / mean": "dummy"}
# (head, metric, title): accuracy, then the class heads' imbalance-proof metrics, then R²
COLUMNS = [
    ("crystal_system", "acc", "acc system"),
    ("crystal_system", "balanced_acc", "bal. acc system"),
    ("crystal_system", "macro_f1", "macro-F1 system"),
    ("spacegroup", "acc", "acc space group"),
    ("spacegroup", "balanced_acc", "bal. acc space group"),
    ("spacegroup", "macro_f1", "macro-F1 space group"),
    ("band_gap", "r2", "R² gap"),
    ("energy_above_hull", "r2", "R² e_hull"),
]


def cgcnn_label(metrics: dict) -> str:
    """``CGCNN 3 x 64`` from the record's ``cgcnn_layers`` / ``cgcnn_atom_features`` (per-fold means); records made
    before those were logged trained the size of that time, 2 convolutions x 32 features."""
    layers, width = metrics.get("cgcnn_layers_mean"), metrics.get("cgcnn_atom_features_mean")
    return f"CGCNN {layers:.0f} x {width:.0f}" if layers and width else "CGCNN 2 x 32"


def value_cell(metrics: dict, key: str, spread: bool = False) -> str:
    """``0.41``; with ``spread``, ``0.41 [0.37, 0.45] ± 0.02``: the 95 % interval over structures where the record
    has one (``<key>_lo`` / ``_hi``) and the sample std over seeds where it has several (``<key>_seed_std``) and
    it shows (0.01 or more: baselines refit with fixed seeds repeat)."""
    if key not in metrics:
        return ""
    text = f"{metrics[key]:.2f}"
    if spread and f"{key}_lo" in metrics and f"{key}_hi" in metrics:
        text += f" [{metrics[key + '_lo']:.2f}, {metrics[key + '_hi']:.2f}]"
    if spread and round(metrics.get(f"{key}_seed_std", 0.0), 2) > 0:
        text += f" ± {metrics[key + '_seed_std']:.2f}"
    return text


def scope_table(metrics: dict, subset: str = "", spread: bool = False) -> str:
    """One scope of a k-fold record: every method's pooled score, then the paired differences with intervals;
    a column only where some method has it (records made before balanced accuracy have none). ``spread``: each
    score with its interval and seed spread where the record has them (:func:`value_cell`)."""
    prefix = f"pooled_{subset}" if subset else "pooled"
    cols = [(h, m, t) for h, m, t in COLUMNS if any(f"{prefix}_{p}_{m}_{h}" in metrics for p in PREDICTORS.values())]
    lines = ["| method | " + " | ".join(t for _, _, t in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, p in PREDICTORS.items():
        cells = [value_cell(metrics, f"{prefix}_{p}_{m}_{h}", spread) for h, m, _ in cols]
        if any(cells):
            lines.append(f"| {cgcnn_label(metrics) if p == 'cgcnn' else label} | " + " | ".join(cells) + " |")
    for label, p in BASELINES.items():
        cells = [diff_cell(metrics, f"{prefix}_diff_model_vs_{p}_{m}_{h}") for h, m, _ in cols]
        if any(cells):
            lines.append(f"| image model − {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def subset_names(metrics: dict) -> list[str]:
    """The ``evaluate.subsets`` scopes a record scores (``pooled_<name>_n_structures``), sorted."""
    counts = [k for k in metrics if k.startswith("pooled_") and k.endswith("_n_structures")]
    named = {k.removeprefix("pooled_").removesuffix("_n_structures") for k in counts}
    return sorted(named - {"", "pooled_n_structures", "n_structures"})


MIN_SUBSET = 20  # a subset with fewer structures is named, not scored: R² and accuracies on a handful mean nothing


def subset_sections(metrics: dict, spread: bool = False) -> list[str]:
    """Each subset scope's heading and table (:func:`scope_table`); one under :data:`MIN_SUBSET` structures gets a
    line saying so instead."""
    parts = []
    for name in subset_names(metrics):
        n = metrics[f"pooled_{name}_n_structures"]
        if n < MIN_SUBSET:
            parts.append(f"Subset `{name}`: {n:.0f} structures, too few to score (fewer than {MIN_SUBSET}); not shown.")
        else:
            parts += [f"Subset `{name}` ({n:.0f} structures):", scope_table(metrics, name, spread)]
    return parts


def render_grouped(summary: dict, source: str) -> str:
    """Every scope of a grouped k-fold run's record, each with its number of structures."""
    m = summary["metrics"]
    head = (
        f"Record: `{source}` (pipeline `{summary['pipeline']}`, {m['n_folds']:.0f} grouped folds, "
        f"{m['pooled_n_seeds']:.0f} seed(s)). Scores {UNIT}; differences paired over structures with "
        "95 % bootstrap intervals; band gap and e_hull are surrogate labels (see the data section), the band gaps a "
        "pretrained CGCNN's predictions, which favours CGCNN on that head."
    )
    parts = [head, f"Every structure ({m['pooled_n_structures']:.0f}):", scope_table(m), *subset_sections(m)]
    return "\n\n".join(parts) + "\n"


def replace_between(text: str, marker: str, body: str) -> str:
    """``text`` with the part between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` set to ``body``."""
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"the page has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--readme", type=Path)
    args = ap.parse_args(argv)
    record = json.loads(args.record.read_text())
    if "points" in record:
        raise SystemExit(f"{args.record} is a learning curve's record: python docs/study/curve_record.py FOLDER")
    text = render_grouped(record, args.record.as_posix())
    if args.readme:
        args.readme.write_text(replace_between(args.readme.read_text(), "space-grouped-table", text))
    else:
        print(text)


if __name__ == "__main__":
    main()
