"""Pick the grouped-fold training recipe by validation, never by the test folds.

Each argument is the JSON summary that ``crystalvision pipeline run pipelines/paper-grouped.yaml ... --json``
printed for one candidate recipe, with the command that made it beside it (``<name>.cmd``). The rule, fixed before
any candidate ran: the highest mean over folds of the validation accuracy of the two class heads, averaged
(``(val_acc_crystal_system_mean + val_acc_spacegroup_mean) / 2``; validation structures are 20% of each fold's
training structures); on a tie, the earlier candidate (the simpler recipe comes first). Validation loss is not
comparable across recipes with and without label smoothing, so it is not the rule.

Usage: ``python docs/study/select_recipe.py BASE.json CAND.json ... [--sets] [--readme PAGE [--marker NAME]]``: prints
one Markdown row per candidate (validation and test numbers, mean ± sample std over folds, the pick marked);
``--readme PAGE`` also rewrites the table between the page's ``select-table`` markers (or ``NAME``'s); ``--sets``
prints only the winner's ``--set`` options that are not about size, the epoch budget or the hold-out, to append to
the final run's command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import compare_table as ct  # the sibling whose marker rewrite this shares (this script's folder is on sys.path)

# not the recipe: the size, the epoch budget, and the hold-out a selection run leaves out (split.holdout)
BUDGET_KEYS = ("render.image_size", "train.epochs", "train.patience", "evaluate.saliency", "split.holdout")


RULE = ("val_acc_crystal_system", "val_acc_spacegroup")  # the rule's metrics (``_mean`` / ``_std`` over folds)
REPORTED = (("test_struct_acc_crystal_system", "test acc system"), ("test_struct_r2_band_gap", "test R² gap"))


def score(metrics: dict[str, float]) -> float:
    """The selection score: mean validation accuracy of the class heads over folds."""
    return sum(metrics[f"{name}_mean"] for name in RULE) / len(RULE)


def recipe(summary: Path) -> list[str]:
    """The ``--set key=value`` options of the command beside ``summary`` that define the recipe."""
    cmd = summary.with_suffix(".cmd")
    words = shlex.split(cmd.read_text(), comments=True) if cmd.exists() else []
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    return [s for s in sets if not s.startswith(BUDGET_KEYS)]


def header() -> list[str]:
    """The header rows; every number column says whether it counts per image or per structure, read from the
    metric's name (``val_acc_*`` per image, ``test_struct_*`` per structure)."""
    rule = ", ".join(sorted({ct.unit(name) for name in RULE}))
    cols = [f"val acc (2 heads, mean over folds; {rule})"]
    cols += [f"val acc {title} ({ct.unit(name)})" for name, title in zip(RULE, ("system", "space group"), strict=True)]
    cols += [f"{title} ({ct.unit(name)})" for name, title in REPORTED]
    return ["| recipe | " + " | ".join(cols) + " | picked |", "|---|" + "---|" * (len(cols) + 1)]


def table(rows: list[tuple[float, Path, dict[str, float]]], best: int) -> str:
    """One Markdown row per candidate: validation (the rule's numbers) and test (reported only)."""
    lines = header()
    for i, (s, path, m) in enumerate(rows):
        name = " ".join(recipe(path)) or "defaults (no augmentation, no smoothing, no TTA)"
        val = [f"{m[f'{n}_mean']:.2f} ± {m[f'{n}_std']:.2f}" for n in RULE]
        test = [f"{m.get(f'{n}_mean', float('nan')):.2f}" for n, _ in REPORTED]
        lines.append(f"| {name} | {s:.3f} | " + " | ".join([*val, *test]) + f" | {'yes' if i == best else ''} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="the candidates' k-fold records (a .cmd beside each)")
    parser.add_argument("--readme", type=Path, help="Markdown page to rewrite between the markers")
    parser.add_argument("--marker", default="select-table", help="the page's marker pair (default: select-table)")
    parser.add_argument("--sets", action="store_true", help="print only the picked recipe's --set options")
    args = parser.parse_args(argv)
    rows = []
    for path in args.records:
        metrics = json.loads(path.read_text())["metrics"]
        rows.append((score(metrics), path, metrics))
    best = max(range(len(rows)), key=lambda i: (rows[i][0], -i))
    if args.sets:
        print(" ".join(f"--set {s}" for s in recipe(rows[best][1])))
        return
    text = table(rows, best)
    if args.readme is not None:
        ct.write_between(args.readme, args.marker, text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
