"""Rendering for processes that run torch (prediction: the CLI, the pyfunc, the REST server).

VTK and its OpenGL stack never load beside torch (:mod:`crystalvision.natives`): the views of a CIF are rendered in
one spawned helper process (never forked: a forked GL context hangs), kept for the next request and restarted
when it dies. The helper keeps its :class:`~crystalvision.render.scene.Renderer` while the render config stays the
same. A render that takes longer than ``RENDER_TIMEOUT_S`` kills the helper and fails that row only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from crystalvision.errors import CrystalVisionError, RenderError

log = logging.getLogger(__name__)

RENDER_TIMEOUT_S = 120.0
_lock = threading.Lock()
_helper: _Helper | None = None


def render_here(
    structure: Any, render_config: dict, views: int, view_key: str, cache: dict | None = None
) -> np.ndarray:
    """``views`` seeded views (material key ``view_key``) of a structure, rendered in this process."""
    from crystalvision.config import RenderConfig
    from crystalvision.render.rotations import view_rotation
    from crystalvision.render.scene import Renderer

    cfg = RenderConfig.model_validate(render_config)
    key = json.dumps(render_config, sort_keys=True, default=str)
    cache = cache if cache is not None else {}
    if key not in cache:
        for old in cache.values():
            old.close()
        cache.clear()
        cache[key] = Renderer(cfg)
    renderer = cache[key]
    scene = renderer.scene(structure)
    return np.stack([renderer.render_scene(scene, view_rotation(cfg.seed, view_key, v)) for v in range(views)])


def _serve(conn: Connection) -> None:
    """The helper's loop: one (structure, config, views, key) in, (ok, images or exception) out; None stops it."""
    cache: dict = {}
    with contextlib.suppress(EOFError, OSError):  # the caller exited: stop quietly
        while (job := conn.recv()) is not None:
            try:
                conn.send((True, render_here(*job, cache=cache)))
            except Exception as exc:  # sent back as that row's error
                err = exc if isinstance(exc, CrystalVisionError) else RenderError(f"{type(exc).__name__}: {exc}")
                conn.send((False, err))
    for renderer in cache.values():
        renderer.close()


class _Helper:
    """One spawned render process and its pipe."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="crystalvision-render", daemon=True)
        self.proc.start()
        child.close()

    def call(self, job: tuple, timeout: float) -> np.ndarray:
        self.conn.send(job)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        ok, value = self.conn.recv()  # EOFError when the helper died
        if not ok:
            raise value
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def render_views(structure: Any, render_config: dict, views: int, view_key: str) -> np.ndarray:
    """Render in the helper process (started on first use); a dead or hung helper fails this call and is replaced."""
    global _helper
    with _lock:
        if _helper is None or not _helper.proc.is_alive():
            _helper = _Helper()
        try:
            return _helper.call((structure, render_config, views, view_key), RENDER_TIMEOUT_S)
        except (EOFError, OSError, TimeoutError) as exc:
            helper, _helper = _helper, None
            helper.close()
            raise RenderError(
                f"the render helper process failed ({type(exc).__name__}: {exc or 'it exited'}); the next request "
                "starts a new one"
            ) from exc


@atexit.register
def shutdown() -> None:
    """Stop the helper process (also at interpreter exit)."""
    global _helper
    with _lock:
        helper, _helper = _helper, None
    if helper is not None:
        helper.close()
