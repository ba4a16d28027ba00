"""Rendering for processes that run torch (prediction: the CLI, the pyfunc, the REST server).

VTK and its OpenGL stack never load beside torch (:mod:`crystalvision.core.natives`): CIFs are parsed and their views
rendered in helper processes, each a fresh interpreter running :mod:`crystalvision.serve.renderhelper` (never a fork:
a forked GL context hangs; never multiprocessing's spawn: it re-imports the caller's main module). Helpers are kept
for the next request and replaced when they die. A bounded pool of ``RENDER_HELPERS`` helpers serves concurrent
requests. Every call has deadlines: waiting for a free helper ``QUEUE_TIMEOUT_S``, parsing a CIF ``PARSE_TIMEOUT_S``,
rendering ``RENDER_TIMEOUT_S``, all within the request's own :class:`Deadline`. A helper past a deadline is killed
at once (the next call starts a new one) and that row alone fails.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from crystalvision.core import CrystalVisionError, RenderError, StructureError

log = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 30.0
RENDER_TIMEOUT_S = 120.0
RENDER_HELPERS = max(2, min(4, (os.cpu_count() or 1) // 2))
QUEUE_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0  # an idle helper asked to stop gets this long before it is killed
# the folder that holds this crystalvision package (the checkout's platform/, or a logged model's code/)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from crystalvision.serve.renderhelper import main; main(sys.argv[2:])"
)


class Deadline(NamedTuple):
    """A request's wall-clock budget: ``at`` on :func:`time.monotonic`'s clock, ``budget_s`` for messages."""

    at: float
    budget_s: float

    @classmethod
    def after(cls, budget_s: float) -> Deadline:
        return cls(time.monotonic() + budget_s, budget_s)

    def left(self) -> float:
        return self.at - time.monotonic()


class HelperError(RenderError):
    """The render helper failed (died, hung, or rendering raised): the machinery's fault, not the input's."""


class DeadlineError(CrystalVisionError):
    """The request's budget ran out while this row waited, parsed or rendered."""


class _Process(subprocess.Popen):
    def is_alive(self) -> bool:
        return self.poll() is None


class _Helper:
    """One helper interpreter and its pipe; ``pending`` while a job has not given its last answer."""

    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        fd = child.fileno()
        self.proc = _Process(
            [sys.executable, "-c", _BOOT, PACKAGE_ROOT, str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        child.close()
        self.pending = False
        self.stderr: deque[str] = deque(maxlen=5)
        self.drainer = threading.Thread(target=self._drain, name="render-helper-stderr", daemon=True)
        self.drainer.start()

    def _drain(self) -> None:
        """The helper's stderr, line by line into the log; the last lines are kept for the error message."""
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.stderr.append(line)
                log.info("render helper %d: %s", self.proc.pid, line)

    def send(self, job: tuple) -> None:
        self.pending = True
        self.conn.send(job)

    def answer(self, expected: str, timeout: float) -> Any:
        """The next answer of kind ``expected``; TimeoutError past ``timeout``, EOFError when the helper died."""
        if not self.conn.poll(max(0.0, timeout)):
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        kind, value = self.conn.recv()
        self.pending = kind not in ("images", "error", "failed")
        if kind == "error":
            raise value
        if kind == "failed":
            raise HelperError(f"the render helper failed while rendering ({value})")
        if kind != expected:
            raise HelperError(f"the render helper answered {kind!r}, expected {expected!r}")
        return value

    def why_dead(self) -> str:
        """How the helper ended, with the last line it wrote (an import error, a crash)."""
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.drainer.join(1.0)  # the last line it wrote
        return f"{how}: {self.stderr[-1]}" if self.stderr else how

    def close(self) -> None:
        """Stop the helper: at once (SIGKILL) while a job is pending, else asked, then killed after STOP_TIMEOUT_S."""
        if not self.pending:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


class _Pool:
    """At most ``RENDER_HELPERS`` helpers at work; idle ones are reused, a helper that hung or died is closed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.idle: list[_Helper] = []
        self.busy = 0

    @contextlib.contextmanager
    def helper(self, deadline: Deadline | None = None) -> Iterator[_Helper]:
        """A helper for one job; it goes back to the pool only when the job gave its last answer."""
        wait = min(QUEUE_TIMEOUT_S, deadline.left() if deadline else math.inf)
        with self.cond:
            if not self.cond.wait_for(lambda: self.busy < RENDER_HELPERS, timeout=max(0.0, wait)):
                if deadline and wait < QUEUE_TIMEOUT_S:
                    raise DeadlineError(_budget_spent(deadline, "waiting for a render helper"))
                raise HelperError(
                    f"all {RENDER_HELPERS} render helpers stayed busy for {QUEUE_TIMEOUT_S:.0f} s; retry later "
                    "or send fewer CIF rows at once"
                )
            self.busy += 1
            alive = [h for h in self.idle if h.proc.is_alive()]
            dead = [h for h in self.idle if h not in alive]
            helper = alive.pop() if alive else None
            self.idle = alive
        for old in dead:
            old.close()
        try:
            helper = helper or _Helper()
            yield helper
        finally:
            if helper is not None and (helper.pending or not helper.proc.is_alive()):
                helper.close()
                helper = None
            with self.cond:
                self.busy -= 1
                if helper is not None:
                    self.idle.append(helper)
                self.cond.notify()

    def shutdown(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
        for helper in idle:
            helper.close()


_pool = _Pool()


def _budget_spent(deadline: Deadline, doing: str) -> str:
    return (
        f"the request's {deadline.budget_s:.0f} s budget ran out while {doing}; send this row in a request with "
        "fewer CIF rows"
    )


def _answer(helper: _Helper, expected: str, limit_s: float, deadline: Deadline | None, doing: str) -> Any:
    """The helper's answer within ``limit_s`` and the request's deadline; past either, TimeoutError or
    DeadlineError (the helper, still pending, is then killed by the pool)."""
    left = deadline.left() if deadline else math.inf
    try:
        return helper.answer(expected, min(limit_s, left))
    except TimeoutError:
        if left < limit_s:
            raise DeadlineError(_budget_spent(deadline, doing)) from None  # type: ignore[arg-type]
        raise


def _failed(helper: _Helper, exc: BaseException) -> HelperError:
    if isinstance(exc, TimeoutError):
        why = f"rendering took more than {RENDER_TIMEOUT_S:.0f} s; it was stopped"
    else:
        why = helper.why_dead()
    return HelperError(f"the render helper process failed ({why}); the next request starts a new one")


def render_views(
    structure: Any, render_config: dict, views: int, view_key: str, deadline: Deadline | None = None
) -> np.ndarray:
    """Render a parsed structure in a helper process; a dead or hung helper fails this call and is replaced."""
    with _pool.helper(deadline) as helper:
        try:
            helper.send(("structure", structure, render_config, views, view_key))
            return _answer(helper, "images", RENDER_TIMEOUT_S, deadline, "rendering it")
        except (EOFError, OSError, TimeoutError) as exc:
            raise _failed(helper, exc) from exc


def render_cif(
    text: str,
    name: str,
    max_atoms: int,
    render_config: dict,
    views: int,
    view_key: str,
    deadline: Deadline | None = None,
) -> tuple:
    """Parse CIF text (at most ``max_atoms`` atoms) and render its views in a helper: (structure, images).

    Parsing runs in the helper too, so a CIF that pymatgen reads or expands for minutes costs ``PARSE_TIMEOUT_S`` (or
    what is left of the request's budget) at most.
    """
    with _pool.helper(deadline) as helper:
        try:
            helper.send(("cif", text, name, max_atoms, render_config, views, view_key))
            try:
                structure = _answer(helper, "parsed", PARSE_TIMEOUT_S, deadline, "parsing it")
            except TimeoutError as exc:
                raise StructureError(
                    f"{name}: parsing the CIF took more than {PARSE_TIMEOUT_S:.0f} s; pass the structure in P1 "
                    "(every atom listed, one symmetry operation) or a smaller cell"
                ) from exc
            return structure, _answer(helper, "images", RENDER_TIMEOUT_S, deadline, "rendering it")
        except (EOFError, OSError, TimeoutError) as exc:
            raise _failed(helper, exc) from exc


@atexit.register
def shutdown() -> None:
    """Stop the idle helper processes (also at interpreter exit)."""
    _pool.shutdown()
