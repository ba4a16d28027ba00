"""The code that decides a render's pixels, as one digest: part of the render config hash.

Renders are reused by config hash from a persistent store, so the hash must change whenever the pixels would: an edit
of the lighting, colours, radii, scene or view rotations, a new colour table or another VTK. The digest covers each
pixel module's syntax tree without docstrings (so comments, formatting and docstrings keep it), the colour table the
palette reads from pymatgen, and the installed VTK version.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from importlib import metadata, resources
from pathlib import Path

RENDER_DIR = Path(__file__).parent
PIXEL_MODULES = ("backend.py", "palette.py", "radii.py", "rotations.py", "scene.py", "shading.py")
COLOUR_TABLE = ("pymatgen.vis", "ElementColorSchemes.yaml")  # read by palette.vesta_colours


def code_tree(source: str) -> str:
    """The syntax tree of ``source`` without docstrings or positions: what the code does, not how it is written."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        documented = isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        if documented and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def pixel_code_digest(render_dir: Path = RENDER_DIR) -> str:
    """sha256 over the pixel modules' code, the colour table and the VTK version (64 hex digits)."""
    digest = hashlib.sha256()
    for name in PIXEL_MODULES:
        digest.update(name.encode() + b"\0" + code_tree((render_dir / name).read_text()).encode() + b"\0")
    package, filename = COLOUR_TABLE
    digest.update(resources.files(package).joinpath(filename).read_bytes())
    digest.update(f"vtk {_version('vtk')}".encode())
    return digest.hexdigest()
