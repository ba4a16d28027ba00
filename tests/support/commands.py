"""A long command (`crystalvision render`, `tune`) as a person runs it, for tests: its own session, stdout and
stderr in files, and every process it started remembered (a killed raylet's children are handed to init, out of
the command's tree) so that a test can say which still run after it exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
TINY = [  # the bundled snapshot's first 6 structures, 2 small views each
    "snapshot.max_structures=6",
    "render.image_size=32",
    "render.views_per_structure=2",
    "render.num_workers=1",
]
TINY_TRAIN = [  # one epoch of two steps of 4 images on the test backbone
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """``crystalvision ARGS`` in its own session (``extra_env`` added to its environment), its stdout and stderr in
    files, its processes remembered."""

    def __init__(
        self, home: Path, name: str, args: list[str], sets: list[str], extra_env: dict[str, str] | None = None
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env |= {"CRYSTALVISION_HOME": str(home), "CRYSTALVISION_RAY_NUM_CPUS": "2"}
        for var in ("RAY_ADDRESS", "CRYSTALVISION_RAY_ADDRESS", "CRYSTALVISION_OBJECT_STORE_URI"):
            env.pop(var, None)
        env |= extra_env or {}
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

    def log(self) -> str:
        """The command's log file (``<home>/logs/<time>-<command>-<pid>.log``), '' if it wrote none."""
        logs = sorted(self.home.glob(f"logs/*-{self.proc.pid}.log"))
        return logs[-1].read_text(errors="replace") if logs else ""

    def report(self) -> str:
        """What the command printed and the end of its log, for a failure message."""
        log = self.log()[-3000:] or "(no log)"
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


def interrupted(cmd: Command, signum: int, when: Callable[[], bool], what: str) -> None:
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


def summary_lines(stderr: str, title: str) -> list[str]:
    """The summary: from its title line to the end."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[start:]
