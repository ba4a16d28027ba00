"""Rendering for processes that run torch (prediction: the CLI, the pyfunc, the REST server).

VTK and its OpenGL stack never load beside torch (:mod:`crystalvision.core.natives`): CIFs are parsed and their views
rendered in spawned helper processes (never forked: a forked GL context hangs), kept for the next request and
replaced when they die. A bounded pool of ``RENDER_HELPERS`` helpers serves concurrent requests; a request waits at
most ``QUEUE_TIMEOUT_S`` for a free one. Each helper keeps its :class:`~crystalvision.render.scene.Renderer` while
the render config stays the same. Parsing a CIF may take ``PARSE_TIMEOUT_S`` and rendering ``RENDER_TIMEOUT_S``:
past either, the helper is killed and that row alone fails.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from crystalvision.core.errors import CrystalVisionError, RenderError, StructureError

log = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 30.0
RENDER_TIMEOUT_S = 120.0
RENDER_HELPERS = max(2, min(4, (os.cpu_count() or 1) // 2))
QUEUE_TIMEOUT_S = 60.0


def render_here(
    structure: Any, render_config: dict, views: int, view_key: str, cache: dict | None = None
) -> np.ndarray:
    """``views`` seeded views (material key ``view_key``) of a structure, rendered in this process."""
    from crystalvision.core.config import RenderConfig
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


def _run_job(conn: Connection, job: tuple, cache: dict) -> None:
    """One job: ("cif", text, name, max_atoms, config, views, key) answers ("parsed", structure) then
    ("images", array); ("structure", structure, config, views, key) answers ("images", array)."""
    kind, *args = job
    if kind == "cif":
        from crystalvision.serve.predict_input import read_cif

        text, name, max_atoms, *render_args = args
        structure = read_cif(text, name, max_atoms)
        conn.send(("parsed", structure))
        args = [structure, *render_args]
    conn.send(("images", render_here(*args, cache=cache)))


def _serve(conn: Connection) -> None:
    """The helper's loop: jobs in, answers out (an exception goes back as ("error", exc)); None stops it."""
    cache: dict = {}
    with contextlib.suppress(EOFError, OSError):  # the caller exited: stop quietly
        while (job := conn.recv()) is not None:
            try:
                _run_job(conn, job, cache)
            except Exception as exc:  # sent back as that row's error
                err = exc if isinstance(exc, CrystalVisionError) else RenderError(f"{type(exc).__name__}: {exc}")
                conn.send(("error", err))
    for renderer in cache.values():
        renderer.close()


class _Helper:
    """One spawned helper process and its pipe; ``pending`` while a job has not given its last answer."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="crystalvision-render", daemon=True)
        self.proc.start()
        child.close()
        self.pending = False

    def send(self, job: tuple) -> None:
        self.pending = True
        self.conn.send(job)

    def answer(self, expected: str, timeout: float) -> Any:
        """The next answer of kind ``expected``; TimeoutError past ``timeout``, EOFError when the helper died."""
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        kind, value = self.conn.recv()
        self.pending = kind not in ("images", "error")
        if kind == "error":
            raise value
        if kind != expected:
            raise RenderError(f"the render helper answered {kind!r}, expected {expected!r}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class _Pool:
    """At most ``RENDER_HELPERS`` helpers at work; idle ones are reused, a helper that hung or died is closed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.idle: list[_Helper] = []
        self.busy = 0

    @contextlib.contextmanager
    def helper(self) -> Iterator[_Helper]:
        """A helper for one job; it goes back to the pool only when the job gave its last answer."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.busy < RENDER_HELPERS, timeout=QUEUE_TIMEOUT_S):
                raise RenderError(
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


def _failed(exc: BaseException) -> RenderError:
    return RenderError(
        f"the render helper process failed ({type(exc).__name__}: {exc or 'it exited'}); the next request "
        "starts a new one"
    )


def render_views(structure: Any, render_config: dict, views: int, view_key: str) -> np.ndarray:
    """Render a parsed structure in a helper process; a dead or hung helper fails this call and is replaced."""
    try:
        with _pool.helper() as helper:
            helper.send(("structure", structure, render_config, views, view_key))
            return helper.answer("images", RENDER_TIMEOUT_S)
    except (EOFError, OSError, TimeoutError) as exc:
        raise _failed(exc) from exc


def render_cif(text: str, name: str, max_atoms: int, render_config: dict, views: int, view_key: str) -> tuple:
    """Parse CIF text (at most ``max_atoms`` atoms) and render its views in a helper: (structure, images).

    Parsing runs in the helper too, so a CIF that pymatgen expands for minutes costs ``PARSE_TIMEOUT_S`` at most.
    """
    try:
        with _pool.helper() as helper:
            helper.send(("cif", text, name, max_atoms, render_config, views, view_key))
            try:
                structure = helper.answer("parsed", PARSE_TIMEOUT_S)
            except TimeoutError as exc:
                raise StructureError(
                    f"{name}: parsing the CIF took more than {PARSE_TIMEOUT_S:.0f} s; pass the structure in P1 "
                    "(every atom listed, one symmetry operation) or a smaller cell"
                ) from exc
            return structure, helper.answer("images", RENDER_TIMEOUT_S)
    except (EOFError, OSError, TimeoutError) as exc:
        raise _failed(exc) from exc


@atexit.register
def shutdown() -> None:
    """Stop the idle helper processes (also at interpreter exit)."""
    _pool.shutdown()
