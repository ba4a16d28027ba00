"""Registry steps that stay right when several processes register at once (a retried job, a watch, a manual run).

- :func:`register_once`: one model version per run. Every process that finds no version of the run registers one,
  then re-reads the versions of that run: the lowest one is kept, the others are deleted by whoever created them.
  Versions are numbered in creation order, so every process sees the lowest one and adopts it.
- :func:`promotion_lock`: alias moves are serialised by a mutex in the tracking store itself: a registered model
  named ``<model>.promotion-lock`` (creating a registered model is atomic; the second creator gets
  ``RESOURCE_ALREADY_EXISTS``). It is held only for the few calls of an alias move and carries its holder and
  expiry. Release and takeover are compare-and-delete: the lock is *renamed* to a tombstone named after the holder
  it is expected to have (``<lock>.released-<holder>``). A rename is atomic in the tracking database, and a fresh
  lock that replaced the expected one meanwhile cannot take the same tombstone name (it exists), so nobody ever
  removes a lock taken after the one they looked at. Tombstones are swept after two leases. The lease
  (:func:`lock_lease_s`) outlasts two MLflow calls with all their client retries, and a holder starts no write with
  less than one call's budget left.
- :func:`set_tag_racing`: a tag write two processes may make at once (the same run or version registered by both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from crystalvision.core import CrystalVisionError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
LOCK_LEASE_S = 60.0  # the shortest lease (a local store): the lock guards a few API calls
LOCK_WAIT_S = 180.0  # how much longer than one lease a waiter waits before it gives up
TOMBSTONE_INFIX = ".released-"


class RegistryBusyError(CrystalVisionError):
    """Another registration holds the promotion lock for too long."""


def versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    """The versions of ``name`` registered from ``run_id``, oldest first (empty when the model does not exist)."""
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:  # no such registered model yet
        return []
    return sorted(found, key=lambda v: int(v.version))


TAG_TRIES = 3


def set_tag_racing(write: Callable[..., object], *args: object) -> None:
    """``write(*args)``: one tag write (an upsert such as ``client.set_tag``) that another process may make at the
    same moment.

    MLflow's SQL stores upsert a tag by looking it up, then inserting it: two writers that both find it absent both
    insert, and the second gets a unique-key error (``UNIQUE constraint failed: tags.key, tags.run_uuid``). The tag
    exists by then, so the write is tried again, and that try updates it: last writer wins, as for any upsert.
    """
    for attempt in range(1, TAG_TRIES + 1):
        try:
            write(*args)
            return
        except MlflowException as exc:
            if attempt == TAG_TRIES or not re.search(r"unique|duplicate|integrity", str(exc), re.I):
                raise
            log.debug("%s%s met a concurrent write (%s); writing it again", write.__name__, args[:-1], exc)
            time.sleep(random.uniform(0.05, 0.2))


def register_once(client: MlflowClient, name: str, run_id: str, source: str) -> ModelVersion:
    """Register ``source`` (the run's model) under ``name`` unless the run already has a version; concurrent callers
    all end up with the same (lowest) version, the extra ones are deleted."""
    import mlflow

    existing = versions_of_run(client, name, run_id)
    if existing:
        return existing[0]
    mine = mlflow.register_model(source, name)
    first = versions_of_run(client, name, run_id)[0]
    if str(first.version) != str(mine.version):
        log.info("run %s was registered concurrently as %s v%s; dropping the duplicate v%s", run_id, name,
                 first.version, mine.version)  # fmt: skip
        client.delete_model_version(name, mine.version)
    return first


def call_budget_s(tracking_uri: str) -> float:
    """The longest one MLflow client call can take against ``tracking_uri``: every attempt running into
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``, with urllib3's exponential backoff (``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``,
    capped at 120 s, plus jitter) between ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` retries; a few seconds for a local
    store (no HTTP, no retries)."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    if not str(tracking_uri).startswith(("http://", "https://")):
        return 5.0
    retries, factor = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    jitter, timeout = MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get(), MLFLOW_HTTP_REQUEST_TIMEOUT.get()
    backoff = sum(min(factor * 2**i, 120.0) + jitter for i in range(retries))
    return (retries + 1) * timeout + backoff


def lock_lease_s(tracking_uri: str) -> float:
    """The promotion lock's lease: two whole MLflow calls with all their retries (the last read and the alias write
    a holder starts while its lease runs) and a margin, at least :data:`LOCK_LEASE_S`. A holder never starts a
    write with less than one call's budget left (:meth:`HeldLock.before_write`), so its write lands inside it."""
    return max(LOCK_LEASE_S, 2 * call_budget_s(tracking_uri) + 30.0)


def tombstone(lock: str, holder: str) -> str:
    """The name a lock held by ``holder`` is renamed to when it is released or taken over."""
    return f"{lock}{TOMBSTONE_INFIX}{re.sub(r'[^A-Za-z0-9_-]', '-', holder)}"


@dataclasses.dataclass
class HeldLock:
    """The promotion lock this process holds: its name, holder id and expiry (epoch seconds)."""

    name: str
    holder: str
    expires_at: float
    call_budget_s: float

    def before_write(self) -> None:
        """Refuse to start a registry write that could land after the lease ends (another process may then hold
        the lock): one whole MLflow call, retries included, must fit before the expiry."""
        left = self.expires_at - time.time()
        if left < self.call_budget_s:
            raise RegistryBusyError(
                f"the promotion lock {self.name} has {left:.0f} s of its lease left, less than one MLflow call may "
                f"take with its retries ({self.call_budget_s:.0f} s): nothing was written; run `crystalvision "
                "register` again (the tracking server answers slowly)"
            )


@dataclasses.dataclass
class _Seen:
    """What a waiter can see of a lock: whether it exists, its holder and expiry, and whether it may read it."""

    exists: bool
    holder: str = ""
    expires_at: float = 0.0
    readable: bool = True


def _look(client: MlflowClient, lock: str) -> _Seen:
    try:
        tags = client.get_registered_model(lock).tags or {}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # released meanwhile
            return _Seen(False)
        if exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            return _Seen(True, readable=False)
        raise
    try:
        expires = float(tags.get("expires_at", "0"))
    except ValueError:
        expires = 0.0
    return _Seen(True, tags.get("holder", "unknown"), expires)


def _describe(lock: str, seen: _Seen) -> str:
    if not seen.readable:
        return (
            f"another MLflow user (this user may not read the registered model {lock}: the server's "
            "default_permission is NO_PERMISSIONS); its holder or an admin can delete that model once no "
            "registration runs, or an admin grants this user MANAGE on it"
        )
    return f"{seen.holder} (lease until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seen.expires_at))})"


def _rename_away(client: MlflowClient, lock: str, holder: str) -> bool:
    """Compare-and-delete: rename the lock held by ``holder`` to its tombstone. Renaming is atomic in the tracking
    database and the tombstone's name is unique to ``holder``: when the lock was replaced meanwhile by a fresh one,
    that one cannot be renamed to the same tombstone (it exists), so it stays. True when this call renamed it."""
    try:
        client.rename_registered_model(lock, tombstone(lock, holder))
        return True
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"):
            return False
        raise


def _sweep_tombstones(client: MlflowClient, lock: str, lease_s: float) -> None:
    """Delete tombstones older than two leases (best effort): no waiter can still act on the lock they held."""
    try:
        found = client.search_registered_models(f"name LIKE '{lock}{TOMBSTONE_INFIX}%'")
    except MlflowException:
        return
    for model in found:  # renaming sets last_updated_timestamp: when the lock was released or taken over
        renamed_s = (model.last_updated_timestamp or 0) / 1000
        if model.name.startswith(lock + TOMBSTONE_INFIX) and time.time() > renamed_s + 2 * lease_s:
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(model.name)


@contextlib.contextmanager
def promotion_lock(client: MlflowClient, name: str, wait_s: float | None = None) -> Iterator[HeldLock]:
    """Hold the promotion lock of registered model ``name`` for the block (waits for another holder; by default
    up to one lease, so a dead holder's lock is taken over rather than reported)."""
    lock, me = f"{name}{LOCK_SUFFIX}", f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    budget = call_budget_s(client.tracking_uri)
    lease_s = lock_lease_s(client.tracking_uri)
    wait_s = lease_s + LOCK_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        expires = time.time() + lease_s
        tags = {"holder": me, "expires_at": f"{expires:.3f}"}
        try:
            client.create_registered_model(lock, tags=tags, description=f"crystalvision: promotion lock of {name}")
            break
        except MlflowException as exc:
            # DOES_NOT_EXIST: the server found the name taken, then could not read it back: another process renamed
            # the lock away in between (a takeover or a release). Contention either way: look again.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        seen = _look(client, lock)
        if seen.exists and seen.holder == me:  # our create went through; its answer was lost and retried
            break
        if seen.exists and seen.readable and time.time() > seen.expires_at:
            log.warning("taking over the expired promotion lock %s of %s", lock, seen.holder)
            _rename_away(client, lock, seen.holder)  # compare-and-delete: a fresh lock of another stays
            continue
        if time.monotonic() > deadline:
            raise RegistryBusyError(
                f"the promotion lock {lock} is held by {_describe(lock, seen)}; waited {wait_s:.0f} s for it: run "
                "`crystalvision register` again later"
            )
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield HeldLock(lock, me, expires, budget)
    finally:
        released = _rename_away(client, lock, me)  # compare-and-delete: never another holder's lock
        if released and time.time() < expires - lease_s / 2:  # nobody saw it expired (clock skew allowed for)
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(tombstone(lock, me))
        _sweep_tombstones(client, lock, lease_s)


def newest_forward(client: MlflowClient, name: str, alias: str, version: str, current: str | None) -> None:
    """Point ``alias`` at ``version`` unless it already points at a newer version (``current``)."""
    if current is None or int(current) < int(version):
        client.set_registered_model_alias(name, alias, version)
