"""A probe for what a fresh interpreter imports and maps: at exit it writes, to ``$PROBE_OUT``, the top-level modules
in the order they were first imported, the shared libraries mapped into it (``/proc/self/maps``) and any VTK or
pyvista module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GL_LIBS = ("libvtk", "libEGL", "libGL.", "libGLX", "libOSMesa", "libLLVM")

# At exit, writes the top-level modules in the order they were first imported (sys.modules keeps insertion order; a
# finder would also see mere look-ups such as jobs/__init__.py's find_spec("ray")) and what the process loaded.
PROBE = """
import atexit, json, os, sys
def report():
    order = list(dict.fromkeys(m.split(".")[0] for m in list(sys.modules)))
    libs = sorted({os.path.basename(line.split()[-1]) for line in open("/proc/self/maps") if ".so" in line})
    gl = sorted(m for m in sys.modules if m.split(".")[0] in ("vtkmodules", "vtk", "pyvista"))
    json.dump({"order": order, "libs": libs, "gl_modules": gl}, open(os.environ["PROBE_OUT"], "w"))
atexit.register(report)
"""


def run_probe(script: str, args: list[str], tmp_path: Path, timeout: float = 300) -> tuple[dict, str]:
    """``script`` (which starts with :data:`PROBE`) in a fresh interpreter from the repository root, with its own
    ``CRYSTALVISION_HOME`` under ``tmp_path``: the probe's report and the script's stdout."""
    out = tmp_path / "probe.json"
    env = {**os.environ, "PROBE_OUT": str(out), "CRYSTALVISION_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def gl_libs(libs: list[str]) -> list[str]:
    """The VTK, EGL, GL, OSMesa and LLVM libraries among mapped ``libs``."""
    return [lib for lib in libs if lib.startswith(GL_LIBS)]
