"""A file lock with a lease that its holder renews at progress points; a lock whose holder is gone is taken over.

The lock file holds ``{host, pid, token, generation, started_at, expires_at}``. There is no background heartbeat:
the holder renews the lease when its work makes progress (:func:`renewed_on_progress`: every stage, render batch and
epoch that :mod:`crystalvision.core.progress` reports), so a holder whose work hangs stops renewing and its lease runs
out. Every change (take, renew, take over, release) happens under an ``flock`` on ``<lock>.guard`` and checks the
holder's token first: a renewal never overwrites a lock that another process has taken over meanwhile; it raises
:class:`LeaseLostError`, and :func:`renewed_on_progress` then stops the work.

Another process may take a lock over when

* its holder ran on this host and that PID is dead (a SIGKILLed or crashed process), or
* its lease expired and the holder is on another host (or unknown: a corrupt file).

A holder on this host that is alive but let its lease expire is hung: :class:`LeaseExpiredError` says so, so that a
scheduler alerts instead of waiting or running the job twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crystalvision.core.errors import CrystalVisionError

log = logging.getLogger(__name__)
DEFAULT_LEASE_S = 300.0
STOP_SIGNAL = signal.SIGUSR1  # how a lost lease interrupts the main thread


class LeaseExpiredError(CrystalVisionError):
    """A lock is held by a live process on this host that stopped renewing its lease (hung)."""


class LeaseLostError(CrystalVisionError):
    """This process's lock was taken over by another process (its lease had expired): its work must stop."""


class LockedError(CrystalVisionError):
    """A live holder owns the lock."""


class _Stop(BaseException):
    """Raised in the main thread by :data:`STOP_SIGNAL` (a BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, error: LeaseLostError):
        super().__init__(str(error))
        self.error = error


_pending: list[LeaseLostError] = []


def lease_seconds() -> float:
    """The lease length: ``CRYSTALVISION_WATCH_LEASE_S`` (default 300 s); it must exceed the longest gap between two
    progress points of the work (one render batch, one epoch, one evaluation)."""
    value = float(os.environ.get("CRYSTALVISION_WATCH_LEASE_S", DEFAULT_LEASE_S))
    if not 1.0 <= value <= 86_400:
        raise CrystalVisionError(f"CRYSTALVISION_WATCH_LEASE_S={value} is out of range; use 1 to 86400 seconds")
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's content; ``{}`` when unreadable (torn or corrupt); None when there is no lock."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``<lock>.guard``: every read-check-write of the lock happens under it."""
    fd = os.open(path.with_name(f"{path.name}.guard"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def describe(held: dict[str, Any] | None) -> str:
    """The holder of a lock, for messages: ``pid P on HOST since T``."""
    held = held or {}
    return f"pid {held.get('pid')} on {held.get('host')} since {held.get('started_at')}"


def _stale_reason(path: Path, held: dict[str, Any], lease_s: float) -> str | None:
    """Why the lock at ``path`` may be taken over, or None while its holder owns it; raises when hung."""
    now = time.time()
    expires = held.get("expires_at")
    if not isinstance(expires, int | float):  # corrupt: judge by the file's age
        with contextlib.suppress(FileNotFoundError):
            expires = path.stat().st_mtime + lease_s
    same_host = held.get("host") == socket.gethostname()
    pid = held.get("pid")
    if same_host and isinstance(pid, int) and not _pid_alive(pid):
        return f"its holder (pid {pid} on this host) is dead"
    if isinstance(expires, int | float) and now > expires:
        if same_host and isinstance(pid, int):
            raise LeaseExpiredError(
                f"{path.name} is held by {describe(held)}, whose lease expired at {_iso(expires)} without progress: "
                "the holder is hung; kill it (the lock is then taken over) or raise CRYSTALVISION_WATCH_LEASE_S"
            )
        return f"its lease expired at {_iso(expires)} (holder {held.get('host')}:{pid})"
    return None


class Lease:
    """A held lock: :meth:`renew` at progress points, :meth:`release` at the end (both compare-and-set)."""

    def __init__(self, path: Path, data: dict[str, Any], lease_s: float):
        self.path, self.data, self.lease_s = path, data, lease_s
        self._renewed = time.monotonic()

    def renew(self, force: bool = False) -> None:
        """Extend the lease (at most every tenth of it unless ``force``); :class:`LeaseLostError` when another
        process holds the lock now (nothing is written then)."""
        if not force and time.monotonic() - self._renewed < self.lease_s / 10:
            return
        with _guard(self.path):
            held = _read(self.path)
            if (held or {}).get("token") != self.data["token"]:
                raise LeaseLostError(
                    f"lost the lock {self.path} (held since {self.data['started_at']}): it is now held by "
                    f"{describe(held) if held else 'nobody'}; this process's lease had expired without progress, "
                    "so the work stops here"
                )
            self.data["expires_at"] = time.time() + self.lease_s
            _write(self.path, self.data)
        self._renewed = time.monotonic()

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        with _guard(self.path):
            if (_read(self.path) or {}).get("token") == self.data["token"]:
                self.path.unlink(missing_ok=True)


def acquire(path: Path, lease_s: float | None = None) -> Lease | None:
    """Take the lock at ``path``: the :class:`Lease`, or None when a live holder has it. A stale lock (dead PID on
    this host, expired lease elsewhere) is taken over; a hung holder on this host raises :class:`LeaseExpiredError`."""
    lease_s = lease_s or lease_seconds()
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "generation": 1,
            "started_at": _iso(now), "expires_at": now + lease_s}  # fmt: skip
    with _guard(path):
        held = _read(path)
        if held is not None:
            reason = _stale_reason(path, held, lease_s)
            if reason is None:
                return None
            log.warning("taking over the stale lock %s: %s", path.name, reason)
            generation = held.get("generation")
            data["generation"] = generation + 1 if isinstance(generation, int) else 1
        _write(path, data)
    return Lease(path, data, lease_s)


def holder(path: Path) -> str:
    """Who holds the lock at ``path`` (for messages)."""
    return describe(_read(path))


@contextlib.contextmanager
def lease_lock(path: Path, lease_s: float | None = None) -> Iterator[Lease | None]:
    """Yield the :class:`Lease` when this process now holds the lock at ``path`` (released at the end), None when a
    live holder has it. Renew it at progress points (:func:`renewed_on_progress`)."""
    lease = acquire(path, lease_s)
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()


def _raise_stop(_signum: int, _frame: object) -> None:
    if _pending:
        raise _Stop(_pending.pop(0))


@contextlib.contextmanager
def renewed_on_progress(lease: Lease) -> Iterator[None]:
    """Renew ``lease`` at every progress event (:mod:`crystalvision.core.progress`) while the block runs. When the lease
    is lost, the block stops: in the main thread with :class:`LeaseLostError` raised where the work is (a signal
    interrupts it), else when the block ends."""
    from crystalvision.core import progress

    lost: list[LeaseLostError] = []
    in_main = threading.current_thread() is threading.main_thread()

    def on_event(_event: progress.ProgressEvent) -> None:
        if lost:
            return
        try:
            lease.renew()
        except LeaseLostError as exc:
            log.error("%s", exc)
            lost.append(exc)
            if in_main:
                _pending.append(exc)
                signal.pthread_kill(threading.main_thread().ident or 0, STOP_SIGNAL)

    previous = signal.signal(STOP_SIGNAL, _raise_stop) if in_main else None
    try:
        with progress.listening(on_event):
            yield
    except _Stop as stop:
        raise stop.error from None
    finally:
        if in_main:
            signal.signal(STOP_SIGNAL, previous)
            _pending.clear()
    if lost:
        raise lost[0]
