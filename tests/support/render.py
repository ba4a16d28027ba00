"""Render-job helpers shared by the render, shard, poison, fault and bad-input tests.

* the ``ray_session`` fixture: the local Ray cluster the module's render jobs run on, with moto's test credentials
  in its workers' environment: ``from tests.support.render import ray_session  # noqa: F401``. These modules run in
  one pytest process (``tests/run_files.py``'s render files) and share one cluster: it is started once and stays up
  until the process exits.
* :func:`ray_for_module`: the same for other environment variables the workers need
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

from .s3 import CREDENTIALS

_started: tuple[str, dict[str, str]] | None = None  # (GCS address, environment) of the cluster this helper started


@contextmanager
def ray_for_module(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """A local Ray cluster for one module whose workers see ``env`` (workers take the driver's environment when the
    cluster starts, and ``env`` stays set in the driver while the module runs). The cluster this helper started
    for the same ``env`` is reused; any other session (started by an earlier module, or with another environment)
    is shut down first. The cluster stays up after the module, for the next module of this process that wants the
    same environment; Ray stops it at exit."""
    global _started
    import ray

    from crystalvision.ops import ensure_ray

    wanted = dict(env or {})
    if ray.is_initialized() and _started != (ray.get_runtime_context().gcs_address, wanted):
        ray.shutdown()
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in wanted.items():
            monkeypatch.setenv(name, value)
        if not ray.is_initialized():
            ensure_ray(data_bytes=0)  # the smallest object store, which each of these tests' render jobs asks for
            _started = (ray.get_runtime_context().gcs_address, wanted)
        yield


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """The render files' local Ray cluster (see :func:`ray_for_module`), with moto's test credentials in its
    workers' environment (stores are shipped to workers without credentials; the local stores ignore them)."""
    with ray_for_module(CREDENTIALS):
        yield


def good_records(snapshot: Any, n: int) -> list[Any]:
    """The first ``n`` records of ``snapshot`` that carry no flag (render cleanly)."""
    return [r for r in snapshot.records if not r.flags][:n]


def render(records: list[Any], snapshot: Any, cfg: RenderConfig, store: ObjectStore, **kwargs: Any) -> Any:
    """``render_dataset`` of ``records`` with ``snapshot``'s encoders and content hash."""
    from crystalvision.render.job import render_dataset

    return render_dataset(records, snapshot.encoders, snapshot.manifest.content_sha256, cfg, store, **kwargs)
