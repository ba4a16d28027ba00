"""Run each test file (``tests/<room>/``, ``tests/system/``) in its own pytest process, then print one total line.

What `make test` and CI do.

Ray clusters, MLflow's process-wide state and library globals of one module cannot leak into the next this way:
in one long process, a module's leftover Ray session changed what later modules connected to.

Files run ``-j`` at a time (default 1, or ``CRYSTALVISION_TEST_JOBS``), longest first by ``tests/durations.json``
(seconds per file, rewritten by ``--record``). Each process gets its own TMPDIR, so its local Ray cluster
(``$TMPDIR/ray``) and pytest's temporary folders never meet another's; what every process may reuse (a migrated
empty MLflow database) goes to the shared ``CRYSTALVISION_TEST_CACHE``, the TMPDIRs' parent. Two at a time took the
suite from CI's 1,248 s to about 950 s on 2 cores, but on 2 cores Ray Train then lost workers or a checkpoint
registration in 1-2 of about 40 runs per suite, so CI runs one at a time; use ``-j 2`` on 4+ cores. The unit files
in :data:`SHARED_PROCESS` (no Ray, no servers, no VTK) run together in one process: each file alone spent most of
its 1-10 s on interpreter and import start-up; the render files in :data:`RENDER_PROCESS` share another, and one
local Ray cluster in it. Files in :data:`LIGHT` (and both groups) start no Ray Train run: they run in a second
lane beside the files that train with Ray, which run one at a time (``--one-lane`` or ``CRYSTALVISION_TEST_LANES=1``
puts them all in one lane), at nice 19 so that the Ray Train lane, the longer one, keeps the cores; light files run
with one OpenMP (torch) thread in any lane (``OMP_NUM_THREADS=1`` unless set). A light file that did start a Ray
Train run is named at the end. Other arguments go to every pytest call (``-x``, ``-k``).
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / "tests" / "durations.json"
SHARED_PROCESS = (  # start no Ray cluster, server or GL context: safe to share one pytest process
    "test_augment.py",
    "test_bench_scripts.py",
    "test_cli.py",
    "test_config.py",
    "test_dataset.py",
    "test_evaluate.py",
    "test_folds.py",
    "test_graphnet.py",
    "test_learning_curve.py",
    "test_leakage.py",
    "test_metrics.py",
    "test_mp.py",
    "test_oof.py",
    "test_snapshot.py",
    "test_study_scripts.py",
    "test_targets.py",
    "test_tracking.py",
    "test_tune.py",
    "test_tune_search.py",
    "test_job_driver.py",
    "test_cpu_step.py",
    "test_weights_only.py",
    "test_selection.py",
    "test_card.py",
    "test_card_recipe.py",
    "test_layers.py",
    "test_road.py",
    "test_clusters.py",
    "test_tabular.py",
    "test_epoch_steps.py",
    "test_holdout.py",
    "test_folds_report.py",
    "test_run_name.py",
    # the Python face and the pyfunc: MLflow in the process, renders in helper interpreters (serve/renderproc.py)
    "test_predict.py",
    "test_face.py",
    "test_python_face.py",
)
SHARED_NAME = "unit files"
# render jobs on one local Ray cluster, started once for the process (tests/support/render.py's ray_session), no
# Ray Train run: as five processes they took 171 s, as one 120 s (shared 2 cores, load 1-1.5, 2026-12-07)
RENDER_PROCESS = (
    "test_bad_input.py",
    "test_faults.py",  # render actors and storage faults
    "test_render_job.py",
    "test_render_poison.py",
    "test_shards.py",
)
RENDER_NAME = "render files"
GROUPS = {SHARED_NAME: SHARED_PROCESS, RENDER_NAME: RENDER_PROCESS}  # files that share one pytest process
# start no Ray Train run (servers, helper processes, VTK and Ray Data render jobs are fine): the second lane
LIGHT = (
    SHARED_NAME,
    RENDER_NAME,
    "test_registry.py",
    "test_mlflow_server.py",
    "test_predict_bounds.py",
    "test_serve.py",
    "test_render.py",
    "test_console.py",
    "test_bench.py",
    "test_distributed.py",
    "test_worker_logging.py",
    "test_infra.py",
    "test_long_render.py",  # `crystalvision render` stopped and run again (Ray Data, no Ray Train)
    "test_docs.py",  # mkdocs build and the doc scripts; test_docs_run.py trains (README's `make run`): Ray lane
    "test_watch.py",  # detection, locks and leases with a recorded retrain (the real one: test_secrets.py)
    "test_secrets_masked.py",  # masking and error lines (the pipeline with every secret set: test_secrets.py)
    "test_render_helper.py",  # predicting renders in helper processes (the job driver's pipeline: test_driver_imports)
)
COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


@dataclass
class FileResult:
    name: str
    returncode: int
    output: str
    seconds: float
    warnings: list[str] = field(default_factory=list)


def _group_name(paths: list[Path]) -> str:
    """A pytest process's name in the report and in durations.json: its file, or its group's (:data:`GROUPS`)."""
    if len(paths) == 1:
        return paths[0].name
    return next(name for name, members in GROUPS.items() if paths[0].name in members)


LIGHT_NICE = 19  # the light lane yields the cores to the Ray Train lane (whose Ray workers run at nice 15)
# The light files train, evaluate and predict with tiny models in the test process. With torch's default of one
# OpenMP thread per core, every small op waits for both threads to be scheduled: on 2 shared cores (load 13-15,
# 2026-12-07) the 16 steps of test_epoch_steps.py's fit test took 44 s with 2 threads and 0.7 s with 1.
LIGHT_THREADS = "1"


def _run_one(paths: list[Path], pytest_args: list[str], tmpdir: Path, nice: int = 0) -> FileResult:
    res = _run_pytest(paths, pytest_args, tmpdir, nice)
    if res.name in LIGHT and any((tmpdir / "ray").glob("session_*/logs/train")):
        res.warnings.append(f"{res.name} started a Ray Train run: take it out of LIGHT in tests/run_files.py")
    return res


def _run_pytest(paths: list[Path], pytest_args: list[str], tmpdir: Path, nice: int = 0) -> FileResult:
    """Test files in one pytest process and TMPDIR (short: Ray's socket paths must stay < 108 bytes)."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "CRYSTALVISION_TEST_CACHE": str(tmpdir.parent)}
    if _group_name(paths) in LIGHT:  # tiny models in the test process itself: one torch/OpenMP thread
        env.setdefault("OMP_NUM_THREADS", LIGHT_THREADS)
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            *(["nice", "-n", str(nice)] if nice else []),
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=4",
            "--durations-min=10",
            *(str(p.relative_to(ROOT)) for p in paths),
            *pytest_args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return FileResult(_group_name(paths), proc.returncode, proc.stdout, time.monotonic() - t0)


def _counts(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if COUNTS.search(line)]
    out: dict[str, int] = {}
    for count, kind in COUNTS.findall(lines[-1] if lines else ""):
        key = "failed" if kind in ("error", "errors") else kind
        out[key] = out.get(key, 0) + int(count)
    return out


RECAP_CHARS = 6000


def _failure_recap(res: FileResult) -> str:
    """The end of a failed file's output, repeated last: CI logs are often read from the tail."""
    tail = res.output[-RECAP_CHARS:]
    return f"---- recap of {res.name} (last {len(tail)} characters of its output) ----\n{tail}"


def _groups(files: list[Path]) -> list[list[Path]]:
    """One group per pytest process: the files of each of :data:`GROUPS` together, every other file alone; longest
    first (known durations; unknown files count as long), so the last process to start is a short one."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    shared = [[p for p in files if p.name in members] for members in GROUPS.values()]
    grouped = {name for members in GROUPS.values() for name in members}
    groups = [[p] for p in files if p.name not in grouped] + [g for g in shared if g]
    return sorted(groups, key=lambda g: -float(known.get(_group_name(g), 60.0)))


def test_files() -> list[Path]:
    """Every test file: ``tests/<room>/`` for a room's own tests, ``tests/system/`` for what spans stages. Names
    stay unique across folders (the lanes above and durations.json go by file name)."""
    files = sorted((ROOT / "tests").rglob("test_*.py"))
    names = [p.name for p in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SystemExit(f"test file names must be unique across tests/ folders: {dupes}")
    return files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("CRYSTALVISION_TEST_JOBS", "1")))
    parser.add_argument("--record", action="store_true", help="rewrite tests/durations.json from this run")
    parser.add_argument("--one-lane", action="store_true", default=os.environ.get("CRYSTALVISION_TEST_LANES") == "1",
                        help="run the light files in the Ray files' lane, not beside them")  # fmt: skip
    args, pytest_args = parser.parse_known_args(argv)
    files = test_files()
    groups = _groups(files)
    totals: dict[str, int] = {}
    results: list[FileResult] = []
    start = time.monotonic()
    lanes = 1 if args.one_lane else 2
    with (
        tempfile.TemporaryDirectory(prefix="cvt") as tmp,
        ThreadPoolExecutor(max(1, args.jobs)) as pool,
        ThreadPoolExecutor(1) as light_pool,
    ):
        futures = []
        for i, group in enumerate(groups):
            light = lanes == 2 and _group_name(group) in LIGHT
            args_ = (group, pytest_args, Path(tmp) / f"{i:02d}", LIGHT_NICE if light else 0)
            futures.append((light_pool if light else pool).submit(_run_one, *args_))
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
    for res in results:
        for warning in res.warnings:
            print(f"warning: {warning}")
    light = "" if lanes == 1 else ", the light files beside them"
    print(f"{len(files)} test files in {len(groups)} processes in {took:.0f} s, {args.jobs} at a time{light}")
    for res in sorted(results, key=lambda r: r.name):
        if res.returncode not in (0, 5):
            print(_failure_recap(res))
    if failed_files:
        print("files with failures: " + ", ".join(sorted(failed_files)))
    print(f"{totals.get('passed', 0)} passed, {totals.get('failed', 0)} failed{extra}")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
