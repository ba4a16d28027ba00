"""Run every benchmark in bench/: one table on stdout, one JSON file.

Each ``bench/*_bench.py`` module exposes ``run(quick: bool) -> list[dict]`` with rows
``{"benchmark", "metric", "value", "unit", "notes"}``; this runner adds the end-to-end quickstart (wall time,
peak memory of the whole process tree, per-stage times, evaluation time). Ratios are always measured within one
run. The default run is sized to finish in about 15 minutes on 2 CPU cores; ``--quick`` in a few minutes. A full run
writes ``bench/results/bench.json`` (committed), a ``--quick`` smoke run ``$CRYSTALVISION_HOME/bench/bench-quick.json``.

    python -m bench.run_all [--quick] [--out FILE]
    python -m bench.run_all --only render_bench.ray_simulated --merge --readme docs/benchmarks.md   # refresh one part
    python -m bench.run_all --only train_bench.cpu_step --merge --readme docs/benchmarks.md   # CPU step
    python -m bench.run_all --only space_study_bench --merge --readme docs/benchmarks.md   # space study
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import platform as stdlib_platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import print_table, row, smoke_results

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench.json"
BENCH_MODULES = ("render_bench", "train_bench")
LONG_MODULES = ("space_study_bench",)  # an hour or more: only run when named with --only


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _rss(pid: int, source: str = "status", field: str = "VmRSS:") -> int:
    """A memory figure of ``pid`` from /proc (RSS; ``smaps_rollup``/``Pss:`` counts shared pages once)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc (Linux; psutil is not a dependency)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.append(p)
            todo += _children(p)
    return found


def _tree_rss(pid: int, *how: str) -> int:
    """Resident memory of ``pid`` and all its descendants (RSS, or with ``"smaps_rollup", "Pss:"`` PSS)."""
    return sum(_rss(p, *how) for p in _tree(pid))


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        first = argv[0].decode(errors="replace")
        return first if first.startswith("ray::") else " ".join(a.decode(errors="replace") for a in argv[:3])[-40:]
    return "?"


def tree_pss(pid: int) -> tuple[int, int, list[tuple[str, int]]]:
    """(PSS, RSS, [(process, PSS)] largest first) of the process tree: PSS (``smaps_rollup``, as smem counts it)
    splits shared pages between the processes that map them, so it is what the tree really takes."""
    per = [(p, _rss(p, "smaps_rollup", "Pss:"), _rss(p)) for p in _tree(pid)]
    top = sorted(((_name(p), pss) for p, pss, _ in per), key=lambda x: -x[1])
    return sum(x[1] for x in per), sum(x[2] for x in per), top


def quickstart_e2e(quick: bool) -> list[dict]:
    """Run `crystalvision pipeline run pipelines/quickstart.yaml` in a fresh home; time it, sample peak memory."""
    overrides = ["--set", "train.epochs=1", "--set", "render.views_per_structure=4"] if quick else []
    cmd = [sys.executable, "-m", "crystalvision.app.cli", "pipeline", "run", "pipelines/quickstart.yaml", "--json"]
    cmd += overrides
    with tempfile.TemporaryDirectory(prefix="cv-bench-") as home:
        env = {**os.environ, "CRYSTALVISION_HOME": home, "RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), env.get("PYTHONPATH", "")])
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = peak_pss = 0
        at_peak: list[tuple[str, int]] = []
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_pss, at_peak
            while not done.is_set():
                pss, rss, top = tree_pss(proc.pid)
                peak = max(peak, rss)
                if pss > peak_pss:
                    peak_pss, at_peak = pss, top
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        done.set()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        log.error("quickstart failed:\n%s", err[-3000:])
        return [row("quickstart", "status", float(proc.returncode), "exit code", "failed; see log")]
    summary = json.loads(out[out.index("{") :])
    largest = ", ".join(f"{name} {pss / 2**20:.0f}" for name, pss in at_peak[:6])
    rows = [
        row("quickstart", "wall time", round(wall, 1), "s", "fresh home, incl. Ray start-up"),
        row(
            "quickstart",
            "peak memory PSS (process tree)",
            round(peak_pss / 2**20),
            "MiB",
            f"smem-style, shared pages split, sampled every 0.5 s; at the peak (MiB): {largest}",
            "<= 3072",
        ),
        row("quickstart", "peak memory RSS sum (process tree)", round(peak / 2**20), "MiB", "shared pages counted"),
    ]
    stages = summary.get("stage_seconds", {})
    rows += [row("quickstart", f"stage {k}", v, "s") for k, v in stages.items()]
    if "evaluate" in stages:
        note = "quickstart test split: metrics, plots, baselines, saliency"
        rows.append(row("evaluation", "wall time", stages["evaluate"], "s", note))
    return rows


def _gpu_note() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover - torch always installed here
        return "unknown"


def _parts(only: list[str] | None) -> list[tuple[str, str | None]]:
    """(bench module, function or None for its ``run``) for every part to run, in table order.

    ``only`` names modules (``render_bench``), single functions of one (``render_bench.memory``) or ``quickstart``.
    """
    if not only:
        return [(m, None) for m in BENCH_MODULES] + [("quickstart", None)]
    parts = []
    for name in only:
        module, _, func = name.partition(".")
        if module not in (*BENCH_MODULES, *LONG_MODULES, "quickstart"):
            known = ", ".join((*BENCH_MODULES, *LONG_MODULES, "quickstart"))
            raise ValueError(f"unknown benchmark {name!r}; choose from {known}")
        parts.append((module, func or None))
    return parts


def _run_part(module: str, func: str | None, quick: bool) -> list[dict]:
    """Run one part in its own Python process and stamp its rows with the load average at its start and the date
    (the benchmark table shows both)."""
    load, when = round(os.getloadavg()[0], 2), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [{**r, "load_avg": load, "time": when} for r in _part_rows(module, func, quick)]


def _part_rows(module: str, func: str | None, quick: bool) -> list[dict]:
    """One part's rows, from its own Python process (VTK's GL libraries and torch's do not share a process safely,
    and each part gets a fresh local Ray cluster)."""
    if module == "quickstart":
        log.info("running the end-to-end quickstart")
        return quickstart_e2e(quick)
    name = f"{module}.{func}" if func else module
    log.info("running bench.%s (quick=%s)", name, quick)
    with tempfile.TemporaryDirectory(prefix="cv-bench-part-") as tmp:
        rows_file = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "bench.run_all", "--part", name, "--rows-out", str(rows_file)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([*cmd, *(["--quick"] if quick else [])], cwd=ROOT, env=env, check=False)
        if done.returncode != 0 or not rows_file.exists():
            log.error("bench.%s failed with exit code %d", name, done.returncode)
            return [row(name, "status", float(done.returncode), "exit code", "failed; see log")]
        return json.loads(rows_file.read_text())


def run_part_here(name: str, quick: bool, rows_out: Path) -> None:
    """Child side of :func:`_run_part`: run ``module[.function]`` in this process and write its rows."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    module, _, func = name.partition(".")
    rows = getattr(importlib.import_module(f"bench.{module}"), func or "run")(quick=quick)
    rows_out.write_text(json.dumps(rows))


def merge_rows(old: dict, new_rows: list[dict], parts: list[str], meta: dict) -> dict:
    """``old`` results with the rows of a partial run put in: a row with the same (benchmark, metric) replaces the
    old one in place, others are appended; the partial run's own total-time row is left out (the old total stays).
    Every row keeps its own load average and date, and ``meta["merged"]`` lists the parts rerun and when."""
    fresh = {(r["benchmark"], r["metric"]): r for r in new_rows if r["benchmark"] != "bench"}
    rows = [fresh.pop((r["benchmark"], r["metric"]), r) for r in old["rows"]]
    rerun = {"parts": parts, "time": meta["time"], "load_avg": meta["load_avg_at_start"]}
    merged = [*old["meta"].get("merged", []), rerun]
    return {"meta": {**old["meta"], "merged": merged}, "rows": rows + list(fresh.values())}


def main(
    out: Path | None = None,
    quick: bool = False,
    only: list[str] | None = None,
    readme: Path | None = None,
    merge: bool = False,
) -> list[dict]:
    """Run all benchmarks (or ``only`` those named), print the table, write JSON ``{"meta", "rows"}``; with
    ``merge`` (and ``only``), put the rows rerun into the existing JSON instead (:func:`merge_rows`); with
    ``readme``, rewrite that file's benchmark table from the JSON (:mod:`bench.readme_table`). ``out`` defaults
    to ``bench/results/bench.json``, for a ``quick`` run to :func:`bench.common.smoke_results`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    start, load = time.perf_counter(), os.getloadavg()[0]
    rows: list[dict] = []
    for module, func in _parts(only):
        rows += _run_part(module, func, quick)
    total = time.perf_counter() - start
    rows.append(row("bench", "total wall time", round(total, 1), "s", f"load avg at start {load:.1f}"))
    rows[-1] |= {"load_avg": round(load, 2), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print_table(rows)
    out = Path(out) if out is not None else smoke_results(RESULTS) if quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": stdlib_platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": round(load, 2),
        "gpu": _gpu_note(),
        "quick": quick,
        "only": only or [],
        "total_s": round(total, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results = {"meta": meta, "rows": rows}
    if merge and only and out.exists():
        results = merge_rows(json.loads(out.read_text()), rows, only, meta)
    out.write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out)
    if readme is not None:
        from bench.readme_table import update_readme

        update_readme(Path(readme), out)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"smallest sizes (smoke run); writes {smoke_results(RESULTS)}"
    )
    parser.add_argument("--out", type=Path, help=f"JSON results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--only", nargs="*", help="render_bench, train_bench, quickstart or MODULE.FUNCTION")
    parser.add_argument("--readme", type=Path, help="rewrite the benchmark table in this page (docs/benchmarks.md)")
    parser.add_argument("--merge", action="store_true", help="with --only: replace those rows in the existing JSON")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    parser.add_argument("--rows-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part_here(args.part, args.quick, args.rows_out)
    else:
        main(args.out, args.quick, args.only, args.readme, args.merge)
