"""Run each test file in its own pytest process (what `make test` and CI do), then print one total line.

Ray clusters, MLflow's process-wide state and library globals of one module cannot leak into the next this way:
in one long process, a module's leftover Ray session changed what later modules connected to. Extra arguments go
to every pytest call (e.g. `-x`, `-k name`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


def main(argv: list[str]) -> int:
    files = sorted((ROOT / "tests").glob("test_*.py"))
    totals: dict[str, int] = {}
    worst, start = 0, time.monotonic()
    for path in files:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path.relative_to(ROOT)), *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        sys.stdout.write(proc.stdout)
        sys.stdout.flush()
        lines = [line for line in proc.stdout.splitlines() if COUNTS.search(line)]
        for count, kind in COUNTS.findall(lines[-1] if lines else ""):
            key = "failed" if kind in ("error", "errors") else kind
            totals[key] = totals.get(key, 0) + int(count)
        if proc.returncode not in (0, 5):  # 5: no tests selected in this file (e.g. with -k)
            worst = max(worst, 1)
            totals["failed"] = max(totals.get("failed", 0), 1)
    took = time.monotonic() - start
    extra = "".join(f", {totals[k]} {k}" for k in ("skipped", "xfailed", "xpassed") if totals.get(k))
    print(f"{len(files)} test files in {took:.0f} s")
    print(f"{totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed{extra}")
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
