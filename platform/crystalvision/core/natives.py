"""Native-library order for processes that run torch: load torch first, keep VTK and OpenGL out.

One of four ``ray job submit`` runs of the quickstart once died right after the render stage with ``Intel oneMKL
FATAL ERROR: Cannot load .../torch/lib/libtorch_cpu.so``. torch's wheel links oneMKL statically; MKL ``dlopen``\\ s
its own library when it first dispatches, and that fails once other native libraries loaded before it have used
up what the loader reserves for them (static TLS: VTK's OpenGL stack, Mesa/LLVM, other OpenMP runtimes). Two rules
keep a torch process safe:

- VTK and OpenGL live only in render workers (Ray actors) and spawned helper processes: the driver probes the GL
  backend in a subprocess (``render.backend``), prediction renders CIFs in a helper (``renderproc``) and evaluation
  draws its radii figure in one (``render.figures.radii_comparison_apart``).
- Commands that load torch import it, and run one MKL call, before Ray, pyarrow, scikit-learn or anything else
  native is loaded (:func:`load_torch_first`, called by :func:`crystalvision.app.commands.run`).

``tests/serve/test_driver_imports.py`` checks both; ``bench/job_submissions.py`` measures N consecutive job submissions.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

# Commands of the command table whose process later loads torch (the render stage alone does not).
TORCH_COMMANDS = frozenset({"train", "pipeline", "evaluate", "tune", "register", "watch", "curve"})
GL_MODULES = ("vtkmodules", "vtk", "pyvista")


def load_torch_first() -> None:
    """Import torch and run one small matmul (MKL's first dispatch) before other native libraries load."""
    already = [m for m in ("ray", "pyarrow", "sklearn", *GL_MODULES) if m in sys.modules]
    if "torch" not in sys.modules and already:
        log.warning("torch is loaded after %s; load it first in processes that train", ", ".join(already))
    import torch

    torch.ones(8, 8) @ torch.ones(8, 8)
