"""N consecutive ``ray job submit`` runs of the quickstart pipeline on README's two-node loopback cluster.

A measurement, not a test: it guards against native-library crashes of the job driver (issue 14, point 11: one
of four submissions once died right after the render stage with ``Intel oneMKL FATAL ERROR: Cannot load
.../libtorch_cpu.so``). Each run gets a fresh ``CRYSTALVISION_HOME`` so it really renders, then trains, evaluates
and registers in the same driver. Per run: exit status, wall time, and whether the log names a native crash.

    python -m bench.job_submissions --runs 20            # the tiny default config (~40-60 s a run on 2 cores)
    python -m bench.job_submissions --runs 4 --no-tiny   # the quickstart as configured

The cluster is started with README's own ``ray start`` lines (parsed from its "local two-node cluster" block, token
auth on, ``--block`` added so that exactly these nodes are stopped at the end) and jobs go to README's dashboard
address. Writes ``bench/results/job_submissions.json`` after every run and prints a table; the cluster is always torn
down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs._common import RESULT_LINE  # noqa: E402
from tests.support.procs import stop_group  # noqa: E402
from tests.support.raycluster import RAY, Cluster, wait_for_nodes  # noqa: E402

log = logging.getLogger("bench.job_submissions")

RESULTS = ROOT / "bench" / "results" / "job_submissions.json"
CRASH_MARKERS = ("oneMKL", "FATAL", "Segmentation", "SIGSEGV", "core dumped")
# The smallest quickstart that still renders (4 structures x 4 views x 32 px) and trains (1 epoch) in the driver.
TINY = (
    "snapshot.max_structures=4",
    "render.image_size=32",
    "render.views_per_structure=4",
    "render.num_workers=1",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
    "evaluate.saliency=false",
    "evaluate.baselines=false",
    "registry.model_name=bench-job-submissions",
)
RUN_TIMEOUT_S = 900
NO_AGENT = "No available agent to submit job"
AGENT_TRIES = 24
README = ROOT / "README.md"
README_CLUSTER = "A local two-node cluster to try it"  # the sentence that introduces README's cluster block


def readme_cluster(readme: Path = README) -> tuple[list[list[str]], str]:
    """README's two ``ray start`` command lines (argument lists) and the address its ``ray job submit`` uses."""
    text = readme.read_text()
    if README_CLUSTER not in text:
        raise SystemExit(f"{readme} has no '{README_CLUSTER}' block; update README_CLUSTER in {__file__}")
    block = text.split(README_CLUSTER, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    starts = [cmd for cmd in lines if cmd[:2] == ["ray", "start"]]
    submit = next(cmd for cmd in lines if cmd[:3] == ["ray", "job", "submit"])
    return starts, submit[submit.index("--address") + 1]


@contextmanager
def readme_two_node_cluster(log_dir: Path) -> Iterator[Cluster]:
    """README's cluster with a token of its own; each node runs with ``--block`` and is stopped by its process
    group (never ``ray stop``, which would stop every Ray cluster on the machine)."""
    starts, address = readme_cluster()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    env["PATH"] = os.pathsep.join([str(Path(RAY).parent), env.get("PATH", "")])  # `ray`, `python` = this venv
    temp_dirs = [arg.split("=", 1)[1] for cmd in starts for arg in cmd if arg.startswith("--temp-dir=")]
    fresh = [d for d in temp_dirs if not Path(d).exists()]
    os.environ |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": env["RAY_AUTH_TOKEN"]}  # the state API asks too
    procs: list[subprocess.Popen] = []
    try:
        for n, cmd in enumerate(starts, 1):
            with (log_dir / f"ray-node-{n}.log").open("ab") as out:
                procs.append(
                    subprocess.Popen(
                        [RAY, *cmd[1:], "--block"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            wait_for_nodes(address, n, procs[-1])
        yield Cluster(gcs_address="", dashboard_url=address, env=env)
    finally:
        for proc in reversed(procs):
            stop_group(proc, grace=10)
        for d in fresh:
            shutil.rmtree(d, ignore_errors=True)


def runtime_env(home: Path, tracking_uri: str) -> dict:
    """jobs/runtime_env/pipeline.yaml with absolute paths and this run's home and MLflow database."""
    env = yaml.safe_load((ROOT / "jobs/runtime_env/pipeline.yaml").read_text())
    env["working_dir"] = str(ROOT)
    env["py_modules"] = [str(ROOT / p) for p in env["py_modules"]]
    env["env_vars"] |= {"CRYSTALVISION_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri}
    return env


def submit_once(cluster: Cluster, index: int, work: Path, config: str, overrides: list[str]) -> dict:
    """One ``ray job submit`` (waits for the job); its exit status, wall time and crash markers."""
    run_dir = work / f"run-{index:02d}"
    run_dir.mkdir(parents=True)
    env_file = run_dir / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env(run_dir / "home", f"sqlite:///{run_dir / 'mlflow.db'}")))
    sets = [arg for s in overrides for arg in ("--set", s)]
    cmd = [
        RAY,
        "job",
        "submit",
        f"--address={cluster.dashboard_url}",
        f"--runtime-env={env_file}",
        f"--submission-id=bench-{index:02d}-{int(time.time())}",
        "--",
        "python",
        "-m",
        "jobs.pipeline",
        "--config",
        config,
        *sets,
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for attempt in range(AGENT_TRIES):  # a cluster that just started may have no job agent yet: no job started
        cmd[cmd.index(next(a for a in cmd if a.startswith("--submission-id=")))] = (
            f"--submission-id=bench-{index:02d}-{int(time.time())}-{attempt}"
        )
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            rc, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, text = 124, f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out after {RUN_TIMEOUT_S} s)"
        if NO_AGENT not in text:
            break
        time.sleep(5)
        start = time.perf_counter()
    wall = time.perf_counter() - start
    (run_dir / "job.log").write_text(text)
    markers = [m for m in CRASH_MARKERS if m in text]
    succeeded = rc == 0 and RESULT_LINE.search(text) is not None  # the job's log ends naming its result file
    return {
        "run": index,
        "exit_status": rc,
        "succeeded": succeeded,
        "wall_s": round(wall, 1),
        "crash_markers": markers,
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "log": str(run_dir / "job.log"),
    }


def summarise(runs: list[dict]) -> dict:
    """Counts and wall-time range of the runs so far."""
    walls = sorted(r["wall_s"] for r in runs)
    return {
        "runs": len(runs),
        "succeeded": sum(r["succeeded"] for r in runs),
        "failed": sum(not r["succeeded"] for r in runs),
        "with_crash_markers": sum(bool(r["crash_markers"]) for r in runs),
        "wall_s_min": walls[0] if walls else None,
        "wall_s_median": walls[len(walls) // 2] if walls else None,
        "wall_s_max": walls[-1] if walls else None,
    }


def print_runs(runs: list[dict]) -> None:
    """One line per run, then the summary."""
    sys.stdout.write(f"{'run':>3}  {'exit':>4}  {'ok':>3}  {'wall s':>7}  {'load':>5}  crash markers\n")
    for r in runs:
        ok, markers = "yes" if r["succeeded"] else "NO", ", ".join(r["crash_markers"]) or "-"
        sys.stdout.write(
            f"{r['run']:>3}  {r['exit_status']:>4}  {ok:>3}  {r['wall_s']:>7.1f}  "
            f"{r['load_avg_1m_before']:>5.1f}  {markers}\n"
        )
    sys.stdout.write(json.dumps(summarise(runs)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="Consecutive submissions (default 20).")
    parser.add_argument("--config", default="pipelines/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Extra section.key=value.")
    parser.add_argument("--no-tiny", action="store_true", help="Do not apply the tiny overrides (4 x 4 x 32 px).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = [*([] if args.no_tiny else TINY), *args.overrides]
    work = Path(tempfile.mkdtemp(prefix="cv-jobsub-", dir=os.environ.get("TMPDIR", "/tmp")))
    report = {
        "config": args.config,
        "overrides": overrides,
        "cluster": "README's two nodes on 127.0.0.1",
        "cpu_count": os.cpu_count(),
        "work_dir": str(work),
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with readme_two_node_cluster(work) as cluster:
        for i in range(1, args.runs + 1):
            result = submit_once(cluster, i, work, args.config, overrides)
            report["runs"].append(result)
            report["summary"] = summarise(report["runs"])
            args.out.write_text(json.dumps(report, indent=1))
            log.info(
                "run %d/%d: exit %d in %.1f s%s",
                i,
                args.runs,
                result["exit_status"],
                result["wall_s"],
                f", markers {result['crash_markers']}" if result["crash_markers"] else "",
            )
    print_runs(report["runs"])
    log.info("wrote %s (job logs under %s)", args.out, work)


if __name__ == "__main__":
    main()
