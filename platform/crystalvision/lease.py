"""A file lock with a lease: the holder renews it with a heartbeat; a lock whose holder is gone is taken over.

The lock file holds ``{host, pid, token, started_at, expires_at}``. Another process may take it over when

* its holder ran on this host and that PID is dead (a SIGKILLed or crashed watcher), or
* its lease expired (no heartbeat for ``lease_s``) and the holder is on another host (or unknown: a corrupt file).

A holder on this host that is alive but has not renewed its lease is hung: :class:`LeaseExpiredError` says so, so
that a scheduler alerts instead of waiting or running the job twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crystalvision.errors import CrystalVisionError

log = logging.getLogger(__name__)
DEFAULT_LEASE_S = 300.0


class LeaseExpiredError(CrystalVisionError):
    """A lock is held by a live process on this host that stopped renewing its lease (hung)."""


def lease_seconds() -> float:
    """The lease length: ``CRYSTALVISION_WATCH_LEASE_S`` (default 300 s); the heartbeat renews it every third."""
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
                f"{path.name} is held by pid {pid} on {held.get('host')} since {held.get('started_at')}, whose "
                f"lease expired at {_iso(expires)} without a heartbeat: the holder is hung; kill it (the lock is "
                "then taken over) or raise CRYSTALVISION_WATCH_LEASE_S"
            )
        return f"its lease expired at {_iso(expires)} (holder {held.get('host')}:{pid})"
    return None


def _take_over(path: Path, held: dict[str, Any]) -> bool:
    """Move a stale lock aside (atomic rename: one taker wins); False when someone else changed it first."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved and held and moved.get("token") != held.get("token"):  # a fresh holder slipped in: give it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, data: dict[str, Any], lease_s: float):
        super().__init__(daemon=True, name=f"lease-{path.name}")
        self.path, self.data, self.lease_s = path, data, lease_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            if (_read(self.path) or {}).get("token") != self.data["token"]:
                log.error("lost the lock %s to another process", self.path)
                return
            self.data["expires_at"] = time.time() + self.lease_s
            with contextlib.suppress(OSError):
                _write(self.path, self.data)


@contextlib.contextmanager
def lease_lock(path: Path, lease_s: float | None = None) -> Iterator[bool]:
    """Yield True when this process now holds the lock at ``path`` (renewed by a heartbeat until released),
    False when a live holder has it. A stale lock (dead PID on this host, expired lease) is taken over."""
    lease_s = lease_s or lease_seconds()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "started_at": _iso(time.time()), "expires_at": time.time() + lease_s}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            held = _read(path)
            if held is None:
                continue  # released meanwhile: try again
            reason = _stale_reason(path, held, lease_s)
            if reason is None:
                yield False
                return
            log.warning("taking over the stale lock %s: %s", path.name, reason)
            _take_over(path, held)
    else:
        yield False
        return
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    beat = _Heartbeat(path, data, lease_s)
    beat.start()
    try:
        yield True
    finally:
        beat.stopped.set()
        beat.join(timeout=5)
        if (_read(path) or {}).get("token") == data["token"]:
            path.unlink(missing_ok=True)
