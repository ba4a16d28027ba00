"""Registry steps that stay right when several processes register at once (a retried job, a watch, a manual run).

- :func:`register_once`: one model version per run. Every process that finds no version of the run registers one,
  then re-reads the versions of that run: the lowest one is kept, the others are deleted by whoever created them.
  Versions are numbered in creation order, so every process sees the lowest one and adopts it.
- :func:`promotion_lock`: alias moves are serialised by a mutex in the tracking store itself: a registered model
  named ``<model>.promotion-lock`` (creating a registered model is atomic; the second creator gets
  ``RESOURCE_ALREADY_EXISTS``). It is held only for the few calls of an alias move and carries its holder and
  expiry; a lock left by a killed process expires after :data:`LOCK_LEASE_S` and is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from crystalvision.core.errors import CrystalVisionError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
LOCK_LEASE_S = 60.0  # the lock guards a few API calls; older than this, its holder is gone
LOCK_WAIT_S = 180.0


class RegistryBusyError(CrystalVisionError):
    """Another registration holds the promotion lock for too long."""


def versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    """The versions of ``name`` registered from ``run_id``, oldest first (empty when the model does not exist)."""
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:  # no such registered model yet
        return []
    return sorted(found, key=lambda v: int(v.version))


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


def _lock_expired(client: MlflowClient, lock: str) -> tuple[bool, str]:
    """Whether the lock model ``lock`` is past its expiry, and its holder (for messages)."""
    try:
        tags = client.get_registered_model(lock).tags or {}
    except MlflowException:  # released meanwhile
        return False, "nobody"
    try:
        expires = float(tags.get("expires_at", "0"))
    except ValueError:
        expires = 0.0
    return time.time() > expires, tags.get("holder", "unknown")


@contextlib.contextmanager
def promotion_lock(client: MlflowClient, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the promotion lock of registered model ``name`` for the block (waits for another holder)."""
    lock, me = f"{name}{LOCK_SUFFIX}", f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        tags = {"holder": me, "expires_at": f"{time.time() + LOCK_LEASE_S:.3f}"}
        try:
            client.create_registered_model(lock, tags=tags, description=f"crystalvision: promotion lock of {name}")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        expired, holder = _lock_expired(client, lock)
        if expired:
            log.warning("taking over the expired promotion lock %s of %s", lock, holder)
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise RegistryBusyError(
                f"the promotion lock {lock} is held by {holder} for more than {wait_s:.0f} s; run `crystalvision "
                f"register` again later (a lock older than {LOCK_LEASE_S:.0f} s is taken over)"
            )
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if (client.get_registered_model(lock).tags or {}).get("holder") == me:
                client.delete_registered_model(lock)


def newest_forward(client: MlflowClient, name: str, alias: str, version: str, current: str | None) -> None:
    """Point ``alias`` at ``version`` unless it already points at a newer version (``current``)."""
    if current is None or int(current) < int(version):
        client.set_registered_model_alias(name, alias, version)
