"""Long commands as a person runs them (`render`, `tune`): stage progress, a short summary at the end, JSON only
with ``--json``, and an interrupted command (Ctrl-C, SIGTERM) that takes every process it started with it.

Each command runs as ``python -m crystalvision.app.cli`` in its own session; while it runs, the test keeps a list of
every process it started (a killed raylet's children are handed to init, out of the command's tree), and after it
exits none of them may still run.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from crystalvision.app.summary import MAX_LINES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = "lmno-long-commands-test"
TINY = [
    "snapshot.max_structures=6",
    "render.image_size=32",
    "render.views_per_structure=2",
    "render.num_workers=1",
]
TINY_TUNE = [
    *TINY,
    "stages=[snapshot, render, train, evaluate, register]",
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
    "tune.num_samples=1",
    "tune.max_concurrent=1",
    "evaluate.saliency=false",
    f"registry.model_name={MODEL}",
]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """``crystalvision ARGS`` in its own session, its stdout and stderr in files, its processes remembered."""

    def __init__(self, home: Path, name: str, args: list[str], sets: list[str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env |= {"CRYSTALVISION_HOME": str(home), "CRYSTALVISION_RAY_NUM_CPUS": "2"}
        for var in ("RAY_ADDRESS", "CRYSTALVISION_RAY_ADDRESS", "CRYSTALVISION_OBJECT_STORE_URI"):
            env.pop(var, None)
        argv = [sys.executable, "-m", "crystalvision.app.cli", *args, *[x for s in sets for x in ("--set", s)]]
        self.home, self.out, self.err = home, home.parent / f"{name}.out", home.parent / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            # Ctrl-C's default action, as in a person's terminal, even when the suite itself was started in the
            # background (a non-interactive shell starts background jobs with SIGINT ignored, and children inherit it)
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True,
                                         preexec_fn=_default_sigint)  # fmt: skip
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.Error:
                return

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"exited before {what}: {self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s: {self.stderr()[-3000:]}"
            time.sleep(0.5)

    def finish(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._stop.set()
            self._watcher.join(timeout=5)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return code

    def left_running(self) -> list[str]:
        """Processes this command started that still run (zombies excepted), and any left in its session."""
        left = set()
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.add(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
            except psutil.Error:
                continue
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == self.proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    left.add(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
            except (psutil.Error, OSError):
                continue
        return sorted(left)

    def report(self) -> str:
        """What the command printed and the end of its log, for a failure message."""
        logs = sorted(self.home.glob(f"logs/*-{self.proc.pid}.log"))
        log = logs[-1].read_text(errors="replace")[-3000:] if logs else "(no log)"
        printed = f"stdout: {self.stdout()[-1000:]}\nstderr: {self.stderr()[-2000:]}"
        return f"exit {self.proc.returncode}\n{printed}\nlog: {log}"

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill_leftovers(self) -> None:
        for proc in self.seen.values():
            try:
                proc.kill()
            except psutil.Error:
                continue


def _interrupted(cmd: Command, signum: int, when: Callable[[], bool], what: str) -> None:
    """Send ``signum`` to the command (its own process only, as `kill` does) once ``when()``; it must exit 128 +
    ``signum``, say so, and leave no process running."""
    try:
        cmd.wait_for(when, what)
        time.sleep(2)  # into the work, not at its first line
        cmd.proc.send_signal(signum)
        code = cmd.finish(timeout=180)
        left = cmd.left_running()
    finally:
        cmd.kill_leftovers()
    assert code == 128 + signum, cmd.report()
    assert f"interrupted by {signal.Signals(signum).name}" in cmd.stderr()
    assert not left, f"still running after the command exited: {left}"


def _summary(stderr: str, title: str) -> list[str]:
    """The summary: from its title line to the end."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[start:]


def test_render_and_tune_show_progress_end_in_a_summary_and_stop_whole(cv_home: Path) -> None:
    """One home, as a person would go: a render stopped with Ctrl-C (exit 130, no process left: Ray's workers and
    agents included), run again to the end (progress, a summary, no JSON), and with --json (JSON only); then a
    sweep with --json (progress, JSON only; its result makes a summary naming the model version it registered), and
    a sweep of another split stopped with SIGTERM while its trial starts (exit 143, no process left, nothing
    registered)."""
    import mlflow
    from mlflow import MlflowClient
    from rich.console import Console

    from crystalvision.app.summary import result_summary

    home = cv_home
    render = ["render", "-c", "pipelines/quickstart.yaml"]
    # a render long enough that Ctrl-C lands inside it (240 images), not after it
    stopped = Command(home, "render-1", render, [*TINY, "render.views_per_structure=40", "render.image_size=96"])
    _interrupted(stopped, signal.SIGINT, lambda: "render    0/" in stopped.stderr(), "render progress")

    made = Command(home, "render-2", render, TINY)
    assert made.finish() == 0, made.report()
    assert made.stdout() == "", "no JSON without --json"
    screen = made.stderr()
    assert re.search(r"^render\s+12/12 img", screen, flags=re.M), screen  # progress
    summary = _summary(screen, "crystalvision: render finished")
    assert len(summary) <= MAX_LINES and not any(line.lstrip().startswith(("{", '"')) for line in summary), screen
    assert re.search(r"12 images \(\d+ new(, \d+ already there)?\), 0 structures quarantined", summary[1]), summary
    assert any(line.startswith("images") and "/renders/" in line for line in summary)

    as_json = Command(home, "render-3", [*render, "--json"], TINY)
    assert as_json.finish() == 0, as_json.report()
    result = json.loads(as_json.stdout())
    assert result["render_n_images"] == 12 and result["render_n_skipped"] == 12
    assert "/renders/" in result["render_uri"] and "{" not in as_json.stderr()

    # one sweep, with --json: what the terminal would show after it is its result's summary (the same function
    # prints it without --json, as the render above did)
    tune = ["tune", "-c", "pipelines/quickstart.yaml"]
    swept = Command(home, "tune-1", [*tune, "--json"], TINY_TUNE)
    assert swept.finish() == 0, swept.report()
    result = json.loads(swept.stdout())
    assert re.search(r"^tune\s+1/1 trials", swept.stderr(), flags=re.M), swept.stderr()  # progress
    assert "crystalvision: sweep" not in swept.stderr() and result["sweep"].startswith("tune-quickstart-")
    assert result["registry"]["challenger_version"] == "1"
    console = Console(width=1000, soft_wrap=True, record=True, file=io.StringIO())
    console.print(result_summary(result, "tune.log"))
    summary = _summary(console.export_text(), f"crystalvision: sweep {result['sweep']} finished")
    assert len(summary) <= MAX_LINES and not any(line.lstrip().startswith(("{", '"')) for line in summary), summary
    assert any(line.startswith(f"model     {MODEL} v1 -> champion") for line in summary), summary
    assert any(line.startswith("best      trial ") for line in summary)
    assert any(line.startswith("sweep     1 trials: 0 failed") for line in summary), summary

    other = Command(home, "tune-3", tune, [*TINY_TUNE, "split.seed=1"])  # another split: another sweep
    _interrupted(other, signal.SIGTERM, lambda: "tune      0/1 trials" in other.stderr(), "trial started")
    assert "run the same command again to resume it" in other.stderr()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    versions = MlflowClient().search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"], "an interrupted sweep registered a model"
