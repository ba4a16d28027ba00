"""Run every benchmark in bench/: one table on stdout, one JSON file.

Each ``bench/*_bench.py`` module exposes ``run(quick: bool) -> list[dict]`` with rows
``{"benchmark", "metric", "value", "unit", "notes"}``; this runner adds the end-to-end quickstart (wall time,
peak memory of the whole process tree, per-stage times). Ratios are always measured within one run.

    python -m bench.run_all [--quick] [--out bench/results/bench.json]
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

import psutil

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
BENCH_MODULES = ("render_bench", "train_bench")


def _row(benchmark: str, metric: str, value: float, unit: str, notes: str = "") -> dict:
    return {"benchmark": benchmark, "metric": metric, "value": value, "unit": unit, "notes": notes}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def quickstart_e2e(quick: bool) -> list[dict]:
    """Run `crystalvision pipeline run pipelines/quickstart.yaml` in a fresh home; time it, sample peak memory."""
    overrides = ["--set", "train.epochs=1", "--set", "render.views_per_structure=4"] if quick else []
    cmd = [sys.executable, "-m", "crystalvision.cli", "pipeline", "run", "pipelines/quickstart.yaml", *overrides]
    with tempfile.TemporaryDirectory(prefix="cv-bench-") as home:
        env = {**os.environ, "CRYSTALVISION_HOME": home, "RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), env.get("PYTHONPATH", "")])
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = 0
        ps = psutil.Process(proc.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(ps))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        done.set()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        log.error("quickstart failed:\n%s", err[-3000:])
        return [_row("quickstart", "status", float(proc.returncode), "exit code", "failed; see log")]
    summary = json.loads(out[out.index("{") :])
    rows = [
        _row("quickstart", "wall time", round(wall, 1), "s", "fresh home, incl. Ray start-up"),
        _row("quickstart", "peak memory (process tree)", round(peak / 2**20), "MiB", "sampled every 0.5 s"),
    ]
    rows += [_row("quickstart", f"stage {k}", v, "s") for k, v in summary.get("stage_seconds", {}).items()]
    return rows


def _gpu_note() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover - torch always installed here
        return "unknown"


def print_table(rows: list[dict]) -> None:
    """Print rows as an aligned text table."""
    headers = ["benchmark", "metric", "value", "unit", "notes"]
    cells = [[str(r.get(h, "")) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sys.stdout.write(line + "\n" + "-" * len(line) + "\n")
    for c in cells:
        sys.stdout.write("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + "\n")


def main(
    out: Path = Path("bench/results/bench.json"), quick: bool = False, only: list[str] | None = None
) -> list[dict]:
    """Run all benchmarks (or ``only`` those named), print the table, write JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    rows: list[dict] = []
    for name in BENCH_MODULES:
        if only and name not in only:
            continue
        log.info("running bench.%s (quick=%s)", name, quick)
        module = importlib.import_module(f"bench.{name}")
        rows += module.run(quick=quick)
    if not only or "quickstart" in only:
        log.info("running the end-to-end quickstart")
        rows += quickstart_e2e(quick)
    print_table(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": stdlib_platform.platform(),
        "cpus": os.cpu_count(),
        "gpu": _gpu_note(),
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    log.info("wrote %s", out)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench.json"))
    parser.add_argument("--only", nargs="*", help="bench modules to run (render_bench train_bench quickstart)")
    args = parser.parse_args()
    main(args.out, args.quick, args.only)
