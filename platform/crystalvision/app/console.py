"""What a person sees on the terminal: library logs in a file, live stage progress, and a short summary.

``quiet_output`` sends everything the process and its children write to stdout/stderr (Python logging, Ray and
MLflow messages, C++ warnings of Ray's core worker, subprocesses) to a log file under
``$CRYSTALVISION_HOME/logs/``, and hands back a rich console on the real terminal. ``StageDisplay`` listens to
:mod:`crystalvision.core.progress` events: rich bars with rate and ETA on a terminal, one plain line per milestone
elsewhere (CI, ``ray job`` logs), so no carriage-return frames reach a file.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from crystalvision.core import ProgressEvent

log = logging.getLogger(__name__)

# Environment for quiet runs: no progress bars or usage banners from the libraries themselves.
QUIET_ENV = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}
PLAIN_STEPS = 4  # plain (non-terminal) output prints a line every 1/PLAIN_STEPS of a counted stage


@dataclass
class Output:
    """Where a command writes for people (``console``) and for machines (``stdout``), and the log file."""

    console: Console
    stdout: IO[str]
    log_path: Path | None


def log_file_path(home: Path, command: str) -> Path:
    """``<home>/logs/<UTC time>-<command>.log`` (folder created)."""
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{command}-{os.getpid()}.log"


@contextmanager
def quiet_output(home: Path, command: str, verbose: bool = False) -> Iterator[Output]:
    """Route stdout/stderr (file descriptors 1 and 2, so children too) to a log file unless ``verbose``."""
    if verbose:
        yield Output(_console(sys.stderr), sys.stdout, None)
        return
    path = log_file_path(home, command)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    logfile = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in finally
    terminal_out, own_out = _terminal(sys.stdout, saved_out)
    terminal_err, own_err = _terminal(sys.stderr, saved_err)
    os.dup2(logfile.fileno(), 1)
    os.dup2(logfile.fileno(), 2)
    logging.captureWarnings(True)
    try:
        yield Output(_console(terminal_err), terminal_out, path)
    finally:
        for stream in (sys.stdout, sys.stderr, terminal_out, terminal_err):
            _flush(stream)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err):
            os.close(fd)
        for stream, own in ((terminal_out, own_out), (terminal_err, own_err), (logfile, True)):
            if own:
                stream.close()
        logging.captureWarnings(False)


def _terminal(stream: IO[str], saved_fd: int) -> tuple[IO[str], bool]:
    """What stays on the terminal: a copy of the saved descriptor, or the stream itself when it writes elsewhere
    (a test runner's buffer); the flag says whether the caller must close it."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return stream, False
    if fd not in (1, 2):
        return stream, False
    return os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8"), True


def _console(stream: IO[str]) -> Console:
    """A rich console on ``stream``; off a terminal (CI, job logs) lines are never wrapped, so paths stay whole."""
    console = Console(file=stream)
    if not console.is_terminal:
        console = Console(file=stream, width=1000, soft_wrap=True)
    return console


def _flush(stream: IO[str]) -> None:
    with suppress(ValueError, OSError, io.UnsupportedOperation):
        stream.flush()


class StageDisplay:
    """A progress listener: rich bars on a terminal, milestone lines otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._printed: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}  # the last count per stage: a lower one starts the stage again

    def __enter__(self) -> StageDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description:<9}"),
                BarColumn(bar_width=28),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.heartbeat:  # finer progress for leases, nothing to show
            return
        if not event.finished and event.done < self._last.get(event.stage, 0):  # the same stage again (next fold)
            self._printed.pop(event.stage, None)
            self._started.pop(event.stage, None)
        if not event.finished:
            self._last[event.stage] = event.done
        self._started.setdefault(event.stage, time.perf_counter())
        if self._progress is not None:
            self._live(event)
        else:
            self._plain(event)

    def _live(self, event: ProgressEvent) -> None:
        assert self._progress is not None
        task = self._tasks.get(event.stage)
        info = format_info(event.info)
        if task is None:
            task = self._progress.add_task(event.stage, total=event.total, unit=event.unit, info=info)
            self._tasks[event.stage] = task
        if event.finished:
            total = self._progress.tasks[task].total
            self._progress.update(task, completed=total if total is not None else 1, total=total or 1, info=info)
            return
        self._progress.update(task, completed=event.done, total=event.total, info=info)

    def _plain(self, event: ProgressEvent) -> None:
        elapsed = time.perf_counter() - self._started[event.stage]
        if event.finished:
            info = dict(event.info)
            took = float(info.pop("seconds", elapsed))  # the stage's own timing, when it sends one
            self.console.print(f"{event.stage:<9} done in {took:.1f} s {format_info(info)}".rstrip(), highlight=False)
            return
        info = format_info(event.info)
        step = milestone(event.done, event.total)
        if step <= self._printed.get(event.stage, -1):
            return
        self._printed[event.stage] = step
        if not event.total and not event.done:
            self.console.print(f"{event.stage:<9} started", highlight=False)
            return
        count = f"{event.done:g}/{event.total:g}" if event.total else f"{event.done:g}"
        rate = f" ({_rate(event.done, elapsed, event.unit)})" if event.unit and elapsed >= 1 and event.done else ""
        self.console.print(f"{event.stage:<9} {count} {event.unit}{rate} {info}".rstrip(), highlight=False)


def _rate(done: float, elapsed: float, unit: str) -> str:
    """``12.5 img/s``, or ``48 s/epoch`` when fewer than one a second."""
    per_s = done / elapsed
    return f"{per_s:.1f} {unit}/s" if per_s >= 1 else f"{elapsed / done:.0f} s/{unit}"


def milestone(done: float, total: float | None) -> int:
    """Which plain-output line an event belongs to: quarters of a counted stage, every event otherwise."""
    if not total:
        return int(done)
    return int(PLAIN_STEPS * min(done, total) / total)


def format_info(info: dict[str, Any]) -> str:
    """``loss 0.52  val_acc 0.61``: numbers to 3 significant digits, others as text."""
    parts = []
    for key, value in info.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key} {text}")
    return "  ".join(parts)
