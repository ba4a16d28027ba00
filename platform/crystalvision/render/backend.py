"""Headless OpenGL backend selection for VTK.

VTK picks its render window class from ``VTK_DEFAULT_OPENGL_WINDOW``; without it VTK tries X11 first, and a
missing GL library crashes the process (SIGSEGV) instead of raising. So the backend is probed once per process
in a fresh subprocess (never forked: forking a process with a live GL context hangs), and the first one that
renders is exported before vtk is imported here. A clear :class:`RenderError` replaces the segfault.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from crystalvision.core import RenderError

log = logging.getLogger(__name__)

ENV_VAR = "VTK_DEFAULT_OPENGL_WINDOW"
CANDIDATES = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")
PROBE_TIMEOUT_S = 60.0
_PROBE = """
from vtkmodules.vtkCommonCore import vtkUnsignedCharArray
from vtkmodules.vtkRenderingCore import vtkRenderWindow, vtkRenderer
import vtkmodules.vtkRenderingOpenGL2
rw = vtkRenderWindow(); rw.SetOffScreenRendering(1); rw.SetSize(8, 8)
ren = vtkRenderer(); ren.SetBackground(1, 0, 0); rw.AddRenderer(ren); rw.Render()
px = vtkUnsignedCharArray(); rw.GetPixelData(0, 0, 0, 0, 0, px, 0)
assert px.GetValue(0) == 255 and px.GetValue(1) == 0, "background pixel is not red"
print("OK", rw.GetClassName())
rw.Finalize()
"""

_checked: str | None = None


class BackendError(RenderError):
    """The offscreen OpenGL backend is missing or failed: not the structure's fault (retried, never quarantined)."""


def _candidates() -> list[str]:
    preferred = os.environ.get(ENV_VAR)
    return [preferred, *[c for c in CANDIDATES if c != preferred]] if preferred else list(CANDIDATES)


def probe(window_class: str) -> tuple[bool, str]:
    """Render one tiny frame with ``window_class`` in a fresh interpreter; (ok, detail)."""
    env = {**os.environ, ENV_VAR: window_class, "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "1")}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {PROBE_TIMEOUT_S:.0f} s"
    out = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and out and out[-1].startswith(f"OK {window_class}"):
        return True, out[-1]
    why = "segmentation fault" if proc.returncode == -11 else f"exit {proc.returncode}"
    tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    return False, f"{why} {tail}".strip()


def ensure_backend() -> str:
    """Pick a working offscreen backend once per process, export it, and return its window class."""
    global _checked
    if _checked:
        return _checked
    tried = []
    for window_class in _candidates():
        ok, detail = probe(window_class)
        if ok:
            os.environ[ENV_VAR] = window_class
            os.environ.setdefault("LP_NUM_THREADS", "1")
            _checked = window_class
            log.debug("offscreen backend %s works (%s)", window_class, detail)
            return window_class
        tried.append(f"{window_class}: {detail}")
    raise BackendError(
        "no offscreen OpenGL backend works here (" + "; ".join(tried) + "): install EGL "
        "(apt-get install libegl1 libgl1-mesa-dri) or OSMesa (apt-get install libosmesa6), or set "
        f"{ENV_VAR} to a working window class"
    )


def assume_backend(window_class: str) -> None:
    """Trust a check made by another process on the same machine (a Ray actor beside its driver)."""
    global _checked
    os.environ[ENV_VAR] = window_class
    os.environ.setdefault("LP_NUM_THREADS", "1")
    _checked = window_class
