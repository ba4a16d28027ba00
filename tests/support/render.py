"""Render-job helpers shared by the render, shard, poison, fault and bad-input tests.

* the ``ray_session`` fixture (one local Ray cluster per test module, started by the first render job, shut down
  after the module): ``from tests.support.render import ray_session  # noqa: F401``
* :func:`ray_for_module`: the same with environment variables the cluster's workers need
* :func:`good_records` (the bundled snapshot's unflagged records) and :func:`render` (``render_dataset`` with the
  snapshot's encoders and content hash)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from crystalvision.core.config import RenderConfig
from crystalvision.data.storage import ObjectStore


@contextmanager
def ray_for_module(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """The life of one module's local Ray cluster: a session left by an earlier module is shut down first (its
    workers hold that module's environment), ``env`` is set while the module runs (workers take the driver's
    environment when the cluster starts), and the cluster is shut down at the end. Render jobs start the cluster
    (``ensure_ray``) on first use."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        try:
            yield
        finally:
            if ray.is_initialized():
                ray.shutdown()


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray cluster for the module's render jobs (see :func:`ray_for_module`)."""
    with ray_for_module():
        yield


def good_records(snapshot: Any, n: int) -> list[Any]:
    """The first ``n`` records of ``snapshot`` that carry no flag (render cleanly)."""
    return [r for r in snapshot.records if not r.flags][:n]


def render(records: list[Any], snapshot: Any, cfg: RenderConfig, store: ObjectStore, **kwargs: Any) -> Any:
    """``render_dataset`` of ``records`` with ``snapshot``'s encoders and content hash."""
    from crystalvision.render.job import render_dataset

    return render_dataset(records, snapshot.encoders, snapshot.manifest.content_sha256, cfg, store, **kwargs)
