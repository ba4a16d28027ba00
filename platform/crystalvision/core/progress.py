"""Progress events from the stages to whoever shows them (the CLI's console), with no dependency on a UI.

Stage modules call :func:`emit` (``render`` n/N images, ``train`` epoch k/N with loss and accuracy, ...); a front
door subscribes with :func:`listening`. With nobody listening an event costs one list check. Listeners run in the
emitting thread and must not raise: an exception in a listener is logged and dropped, never breaks a stage.
:func:`beat` is a heartbeat: finer progress (a batch, an evaluation step, a registry call) that renews leases
(:mod:`crystalvision.ops.lease`) and that displays ignore.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage`` (total None: unknown); ``info`` holds e.g. loss, val accuracy."""

    stage: str
    done: float
    total: float | None = None
    unit: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    heartbeat: bool = False  # finer progress inside a stage: renews leases, displays ignore it


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def emit(stage: str, done: float, total: float | None = None, unit: str = "", **info: Any) -> None:
    """Tell every listener how far ``stage`` has come."""
    _publish(ProgressEvent(stage, done, total, unit, dict(info)))


def finish(stage: str, **info: Any) -> None:
    """Tell every listener that ``stage`` is over (its bar completes, its summary line prints)."""
    _publish(ProgressEvent(stage, 0, None, "", dict(info), finished=True))


def beat(stage: str, **info: Any) -> None:
    """Tell listeners that ``stage`` is still making progress (a batch, an evaluation step, a registry call)."""
    if _listeners:
        _publish(ProgressEvent(stage, 0, None, "", dict(info), heartbeat=True))


def active() -> bool:
    """Whether anyone listens (lets a stage skip building expensive progress info)."""
    return bool(_listeners)


def _publish(event: ProgressEvent) -> None:
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        try:
            fn(event)
        except Exception:  # a display problem must never fail a stage
            log.debug("progress listener failed", exc_info=True)


@contextmanager
def listening(fn: Listener) -> Iterator[None]:
    """Subscribe ``fn`` to progress events for the duration of the block."""
    with _lock:
        _listeners.append(fn)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(fn)
