"""Run each test file in its own pytest process (what `make test` and CI do), then print one total line.

Ray clusters, MLflow's process-wide state and library globals of one module cannot leak into the next this way:
in one long process, a module's leftover Ray session changed what later modules connected to.

Files run ``-j`` at a time (default 1, or ``CRYSTALVISION_TEST_JOBS``), longest first by
``tests/durations.json`` (seconds per file, rewritten by ``--record``). Each process gets its own TMPDIR, so its
local Ray cluster (``$TMPDIR/ray``) and pytest's temporary folders never meet another's. Two at a time took the
suite from CI's 1,248 s to about 950 s on 2 cores, but on 2 cores Ray Train then lost workers or a checkpoint
registration in 1-2 of about 40 runs per suite, so CI runs one at a time; use ``-j 2`` on 4+ cores. Other
arguments go to every pytest call (e.g. ``-x``, ``-k name``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / "tests" / "durations.json"
COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


@dataclass
class FileResult:
    name: str
    returncode: int
    output: str
    seconds: float


def _run_one(path: Path, pytest_args: list[str], tmpdir: Path) -> FileResult:
    """One test file in its own pytest process and TMPDIR (short: Ray's socket paths must stay < 108 bytes)."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=4", "--durations-min=10",
         str(path.relative_to(ROOT)), *pytest_args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return FileResult(path.name, proc.returncode, proc.stdout, time.monotonic() - t0)


def _counts(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if COUNTS.search(line)]
    out: dict[str, int] = {}
    for count, kind in COUNTS.findall(lines[-1] if lines else ""):
        key = "failed" if kind in ("error", "errors") else kind
        out[key] = out.get(key, 0) + int(count)
    return out


def _ordered(files: list[Path]) -> list[Path]:
    """Longest first (known durations; unknown files count as long), so the last file to start is a short one."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    return sorted(files, key=lambda p: -float(known.get(p.name, 60.0)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("CRYSTALVISION_TEST_JOBS", "1")))
    parser.add_argument("--record", action="store_true", help="rewrite tests/durations.json from this run")
    args, pytest_args = parser.parse_known_args(argv)
    files = _ordered(sorted((ROOT / "tests").glob("test_*.py")))
    totals: dict[str, int] = {}
    results: list[FileResult] = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cvt") as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(_run_one, path, pytest_args, Path(tmp) / f"{i:02d}") for i, path in enumerate(files)]
        for future in as_completed(futures):
            res = future.result()
            results.append(res)
            sys.stdout.write(f"{res.output}[{res.name}: {res.seconds:.0f} s]\n")
            sys.stdout.flush()
            for key, count in _counts(res.output).items():
                totals[key] = totals.get(key, 0) + count
    took = time.monotonic() - start
    failed_files = [r.name for r in results if r.returncode not in (0, 5)]  # 5: no tests selected (e.g. -k)
    if failed_files:
        totals["failed"] = max(totals.get("failed", 0), len(failed_files))
    if args.record:
        DURATIONS.write_text(json.dumps({r.name: round(r.seconds) for r in sorted(results, key=lambda r: r.name)},
                                        indent=1) + "\n")  # fmt: skip
    slowest = sorted(results, key=lambda r: -r.seconds)[:8]
    print("slowest files: " + ", ".join(f"{r.name} {r.seconds:.0f} s" for r in slowest))
    extra = "".join(f", {totals[k]} {k}" for k in ("skipped", "xfailed", "xpassed") if totals.get(k))
    print(f"{len(files)} test files in {took:.0f} s, {args.jobs} at a time")
    if failed_files:
        print("files with failures: " + ", ".join(sorted(failed_files)))
    print(f"{totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed{extra}")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
