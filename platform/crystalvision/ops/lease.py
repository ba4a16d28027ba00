"""A file lock with a lease that its holder renews at progress points; a lock whose holder is gone is taken over.

The lock file holds ``{host, pid, token, generation, started_at, expires_at, lease_s, lease_env, longest_gap_s}``.
There is no background heartbeat: the holder renews the lease when its work makes progress
(:func:`renewed_on_progress`: every stage, render batch, training and validation batch, evaluation step and registry
call that :mod:`crystalvision.core.progress` reports), so a holder whose work hangs stops renewing and its lease runs
out. A progress event announcing a wait of known bound (``wait_s``: Ray Train starting its workers, at most
``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``) renews for that wait plus the lease (:meth:`Lease.renew`). The holder
measures the longest gap between two of its progress points (``longest_gap_s`` in the lock file) and warns, naming
the variable, when it comes near the lease. Every change (take, renew, take over, release) happens under an
``flock`` on ``<lock>.guard`` and checks the holder's token first: a renewal never overwrites a lock that another
process has taken over meanwhile; it raises :class:`LeaseLostError`, and :func:`renewed_on_progress` then stops the
work.

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

from crystalvision.core import CrystalVisionError

log = logging.getLogger(__name__)
DEFAULT_LEASE_S = 300.0
WATCH_LEASE_ENV = "CRYSTALVISION_WATCH_LEASE_S"  # the watch's retrain lock
TRAIN_LEASE_ENV = "CRYSTALVISION_TRAIN_LEASE_S"  # the lock on a Ray Train run name (one writer of its checkpoints)
GAP_WARNING = 0.5  # warn when a gap between progress points exceeds this share of the lease
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


def lease_seconds(env: str = WATCH_LEASE_ENV) -> float:
    """The lease length from ``env`` (:data:`WATCH_LEASE_ENV` or :data:`TRAIN_LEASE_ENV`; default 300 s); it must
    exceed the longest gap between two progress points of the work (a render batch, a training or validation batch,
    an evaluation step, one MLflow upload)."""
    value = float(os.environ.get(env, DEFAULT_LEASE_S))
    if not 1.0 <= value <= 86_400:
        raise CrystalVisionError(f"{env}={value} is out of range; use 1 to 86400 seconds")
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
            gap = held.get("longest_gap_s")
            seen = f" (longest gap between its progress points so far: {gap:.0f} s)" if isinstance(gap, float) else ""
            raise LeaseExpiredError(
                f"{path.name} is held by {describe(held)}, whose lease expired at {_iso(expires)} without progress"
                f"{seen}: the holder is hung; kill it (the lock is then taken over) or raise "
                f"{held.get('lease_env') or WATCH_LEASE_ENV}"
            )
        return f"its lease expired at {_iso(expires)} (holder {held.get('host')}:{pid})"
    return None


class Lease:
    """A held lock: :meth:`renew` at progress points, :meth:`release` at the end (both compare-and-set)."""

    def __init__(self, path: Path, data: dict[str, Any], lease_s: float):
        self.path, self.data, self.lease_s = path, data, lease_s
        self._renewed = self._progress = time.monotonic()
        self._announced = False  # the previous progress point announced a wait (the gap after it is not counted)
        self.longest_gap_s = 0.0

    def _measure(self, horizon_s: float | None) -> None:
        """The gap since the previous progress point (not counted after an announced wait); warn when the longest
        one comes near the lease."""
        now = time.monotonic()
        gap, self._progress = now - self._progress, now
        covered, self._announced = self._announced, horizon_s is not None
        if covered or gap <= self.longest_gap_s:
            return
        self.longest_gap_s = gap
        if gap > GAP_WARNING * self.lease_s:
            log.warning(
                "%s: %.0f s passed between two progress points, %.0f%% of its %.0f s lease; raise %s if such gaps "
                "are honest work", self.path.name, gap, 100 * gap / self.lease_s, self.lease_s,
                self.data.get("lease_env", WATCH_LEASE_ENV),
            )  # fmt: skip

    def renew(self, force: bool = False, horizon_s: float | None = None) -> None:
        """Extend the lease to ``max(lease, horizon_s)`` from now, never shortening it (at most every tenth of the
        lease unless ``force`` or a horizon is given); :class:`LeaseLostError` when another process holds the lock
        now (nothing is written then). ``horizon_s`` covers a wait whose bound is known (Ray Train starting its
        workers)."""
        self._measure(horizon_s)
        if not force and horizon_s is None and time.monotonic() - self._renewed < self.lease_s / 10:
            return
        with _guard(self.path):
            held = _read(self.path)
            if (held or {}).get("token") != self.data["token"]:
                raise LeaseLostError(
                    f"lost the lock {self.path} (held since {self.data['started_at']}): it is now held by "
                    f"{describe(held) if held else 'nobody'}; this process's lease had expired without progress, "
                    "so the work stops here"
                )
            until = time.time() + max(self.lease_s, horizon_s or 0.0)
            self.data["expires_at"] = max(until, float(self.data.get("expires_at", 0.0)))  # never shortened
            self.data["longest_gap_s"] = round(self.longest_gap_s, 3)
            _write(self.path, self.data)
        self._renewed = time.monotonic()

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        with _guard(self.path):
            if (_read(self.path) or {}).get("token") == self.data["token"]:
                self.path.unlink(missing_ok=True)


def acquire(path: Path, lease_s: float | None = None, env: str = WATCH_LEASE_ENV) -> Lease | None:
    """Take the lock at ``path``: the :class:`Lease`, or None when a live holder has it. A stale lock (dead PID on
    this host, expired lease elsewhere) is taken over; a hung holder on this host raises :class:`LeaseExpiredError`.
    The lease lasts ``lease_s``, else what ``env`` says (:func:`lease_seconds`)."""
    lease_s = lease_s or lease_seconds(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "generation": 1,
            "started_at": _iso(now), "expires_at": now + lease_s, "lease_s": lease_s, "lease_env": env,
            "longest_gap_s": 0.0}  # fmt: skip
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
def lease_lock(path: Path, lease_s: float | None = None, env: str = WATCH_LEASE_ENV) -> Iterator[Lease | None]:
    """Yield the :class:`Lease` when this process now holds the lock at ``path`` (released at the end), None when a
    live holder has it. Renew it at progress points (:func:`renewed_on_progress`)."""
    lease = acquire(path, lease_s, env)
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
    """Renew ``lease`` at every progress event and heartbeat (:mod:`crystalvision.core.progress`) while the block runs,
    from whichever thread emits it. When the lease is lost, the block stops: in the main thread with
    :class:`LeaseLostError` raised where the work is (a signal interrupts it), else when the block ends."""
    from crystalvision.core import progress

    lost: list[LeaseLostError] = []
    in_main = threading.current_thread() is threading.main_thread()

    def on_event(event: progress.ProgressEvent) -> None:
        if lost:
            return
        wait = event.info.get("wait_s")  # a wait of known bound follows (Ray Train starting its workers)
        try:
            lease.renew(horizon_s=lease.lease_s + float(wait) if isinstance(wait, int | float) else None)
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
