"""The whole Li-Mn-Ni-O space study as one benchmark part (long: not in the default run).

``pipelines/space-grouped.yaml`` in one background run: 5 grouped folds over the 883 usable structures of
``lmno-space``, 8 uniform views at 64 px, at most 12 epochs (patience 4), the CGCNN baseline, pooled out-of-fold
metrics overall and on the quaternaries. The row is its wall time (goal: at most 90 minutes on 2 cores); the JSON
summary it prints is the study's record, written beside its command to ``docs/study/records/space-grouped.json``
(``--quick``: a tiny run, record in a temporary folder). It runs in ``CRYSTALVISION_HOME`` (renders and finished
trainings are reused, so a killed study resumes), and its rows say how many images it rendered itself.

    python -m bench.run_all --only space_study_bench --merge --readme docs/benchmarks.md
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import row

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
PIPELINE = "pipelines/space-grouped.yaml"
RECORD = ROOT / "docs" / "study" / "records" / "space-grouped.json"
GOAL_S = 90 * 60
QUICK = [
    "snapshot.max_structures=12",
    "render.views_per_structure=2",
    "render.image_size=32",
    "split.folds=2",
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "evaluate.graph_epochs=2",
    "evaluate.graph_size=small",
    "evaluate.bootstrap_resamples=50",
]


def command(quick: bool) -> list[str]:
    """The study's command line (the CLI as a module, this checkout's package)."""
    sets = [a for item in (QUICK if quick else []) for a in ("--set", item)]
    return [sys.executable, "-m", "crystalvision.app.cli", "pipeline", "run", PIPELINE, "--json", *sets]


def rows_from(summary: dict, wall_s: float, quick: bool) -> list[dict]:
    """Benchmark rows of one finished study: wall time against the goal, then where the time went."""
    m, stages, render = summary["metrics"], summary.get("stage_seconds", {}), summary.get("render", {})
    n_images, n_new = render.get("render_n_images", 0), render.get("render_n_new", 0)
    scope = (
        f"{m.get('n_folds', 0):.0f} grouped folds over {m.get('pooled_n_structures', 0):.0f} structures, "
        f"{n_images} images ({n_new} rendered in this run), {m.get('pooled_n_seeds', 0):.0f} seed(s)"
    )
    rows = [row("space study", "wall time", round(wall_s, 1), "s", scope, "" if quick else f"<= {GOAL_S}")]
    for kind in ("render", "train", "evaluate"):
        spent = sum(v for k, v in stages.items() if k == kind or k.startswith(f"{kind}_fold"))
        rows.append(row("space study", f"{kind} time", round(spent, 1), "s", "summed over folds"))
    return rows


def run(quick: bool = False) -> list[dict]:
    """Run the study, write its record and command, return its rows."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), env.get("PYTHONPATH", "")])
    cmd = command(quick)
    with tempfile.TemporaryDirectory(prefix="cv-study-") as tmp:
        if quick:
            env["CRYSTALVISION_HOME"] = str(Path(tmp) / "home")
        record = Path(tmp) / RECORD.name if quick else RECORD
        log.info("space study: %s", " ".join(cmd[3:]))
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            return [row("space study", "status", float(done.returncode), "exit code", "failed; see log")]
        summary = json.loads(done.stdout[done.stdout.index("{") :])
        write_record(record, summary, cmd, wall)
        return rows_from(summary, wall, quick)


def write_record(path: Path, summary: dict, cmd: list[str], wall_s: float) -> None:
    """The summary as the study's record, and beside it the command that made it, with date and wall time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(path)
    when = time.strftime("%Y-%m-%d", time.gmtime())
    how = "python -m bench.run_all --only space_study_bench"
    note = f"# {when}, {os.cpu_count()} CPUs, wall time {wall_s / 60:.1f} min ({how})"
    path.with_suffix(".cmd").write_text(f"{note}\ncrystalvision {' '.join(cmd[3:])}\n")
