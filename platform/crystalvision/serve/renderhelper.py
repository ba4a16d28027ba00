"""The render helper: an interpreter of its own that parses CIFs and renders views for a process that runs torch.

:mod:`crystalvision.serve.renderproc` starts it as ``python -c <boot> PACKAGE_ROOT FD``: it imports this package and
nothing of the caller's (unlike multiprocessing's spawn, which re-imports the caller's main module, so a script
without a ``__main__`` guard ran twice). Jobs arrive on the pipe whose file descriptor is ``FD`` and answers go back
on it; ``None`` or a closed pipe stops it. Answers: ("parsed", structure), ("images", uint8 array), ("error", a
crystalvision error: the input's fault), ("failed", "Type: message": anything else went wrong while rendering).
"""

from __future__ import annotations

import contextlib
import json
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from crystalvision.core import CrystalVisionError


def render_here(
    structure: Any, render_config: dict, views: int, view_key: str, cache: dict | None = None
) -> np.ndarray:
    """``views`` seeded views (material key ``view_key``) of a structure, rendered in this process."""
    from crystalvision.core import RenderConfig
    from crystalvision.render import Renderer, view_rotation

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


def run_job(conn: Connection, job: tuple, cache: dict) -> None:
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


def serve(conn: Connection) -> None:
    """The helper's loop: jobs in, answers out, until ``None`` or the caller closes the pipe."""
    cache: dict = {}
    with contextlib.suppress(EOFError, OSError):  # the caller exited: stop quietly
        while (job := conn.recv()) is not None:
            try:
                run_job(conn, job, cache)
            except CrystalVisionError as exc:  # the input's fault: that row's error
                conn.send(("error", exc))
            except Exception as exc:  # the rendering failed: the caller raises it
                conn.send(("failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
    for renderer in cache.values():
        renderer.close()


def main(argv: list[str]) -> None:
    """Serve the pipe whose file descriptor is ``argv[0]``."""
    serve(Connection(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
