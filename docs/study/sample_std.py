"""Put a k-fold record's "± std" on the study's one convention, the sample std over folds (ddof=1).

Records made before 2026-12-02 (``paper-grouped.json``, ``records-64px/paper-grouped.json``, ``select/*.json``) hold
the population std (numpy's ``np.std``, ddof=0) of each metric over its ``<name>_n`` folds; every run since writes
the sample std (``data.folds.aggregate_folds``). Each ``<name>_std`` of such a record becomes
``std * sqrt(n / (n - 1))``, exactly the sample std of the same per-fold values (no retraining); a metric of one
fold loses its std, as a run writes it now. The record gets an ``annotations`` entry saying so, and its ``.cmd`` the
command; a record already converted, or one whose annotations say it holds sample std, is refused.

Usage: ``python docs/study/sample_std.py RECORD.json [RECORD.json ...]``
"""

from __future__ import annotations

import json
import math
import sys
from datetime import date
from pathlib import Path
from typing import Any

CONVENTION = "sample std over folds (ddof=1)"


def to_sample_std(metrics: dict[str, float]) -> int:
    """Rescale every ``<name>_std`` of ``metrics`` in place from ddof=0 to ddof=1; returns how many changed."""
    changed = 0
    for key in [k for k in metrics if k.endswith("_std")]:
        n = metrics.get(f"{key.removesuffix('_std')}_n")
        if n is None:
            raise SystemExit(f"{key} has no {key.removesuffix('_std')}_n: the number of folds is needed to convert")
        if n < 2:
            del metrics[key]
        else:
            metrics[key] *= math.sqrt(n / (n - 1))
        changed += 1
    return changed


def convert(path: Path) -> dict[str, Any]:
    """Convert one record file in place (the JSON format the run wrote), annotate it and its ``.cmd``."""
    record = json.loads(path.read_text())
    if any(CONVENTION in str(note.get("what", "")) for note in record.get("annotations", [])):
        raise SystemExit(f"{path} already holds the {CONVENTION}; nothing to convert")
    changed = to_sample_std(record["metrics"])
    note = {
        "date": date.today().isoformat(),
        "command": f"python docs/study/sample_std.py {path.as_posix()}",
        "changed": changed,
        "what": f"every <metric>_std is now the {CONVENTION}: the run wrote the population std (ddof=0), "
        "multiplied by sqrt(n / (n - 1)) with the n folds of each metric; no retraining",
    }
    record.setdefault("annotations", []).append(note)
    path.write_text(json.dumps(record, indent=2) + "\n")
    cmd = path.with_suffix(".cmd")
    if cmd.is_file():
        cmd.write_text(cmd.read_text().rstrip("\n") + f"\n# {note['date']}: {note['what']}:\n{note['command']}\n")
    return note


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    for arg in argv:
        note = convert(Path(arg))
        print(f"{arg}: {note['changed']} std values converted to the {CONVENTION}")


if __name__ == "__main__":
    main(sys.argv[1:])
