"""crystalvision: learn material properties from rendered images of crystal structures.

The command line: ``crystalvision --help``. The package stands in rooms (sub-packages) in layers; the map below is
made from ``crystalvision.core.layers``.
"""

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

from crystalvision.core import __version__
from crystalvision.core.layers import map_text

__doc__ = f"{__doc__}\n{map_text()}"
__all__ = ["__version__"]

# Old module names that stored artifacts still import. A pyfunc model registered before the sub-packages runs
# ``from crystalvision.predict import CrystalVisionPyfunc`` when it loads; in a process that has already imported
# this package (``crystalvision predict``, the registry's gate) that name must still resolve.
MOVED = {"crystalvision.predict": "crystalvision.serve.predict"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name in ``MOVED`` as the module it moved to (the same module object, not a copy)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__])  # the import returns this


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
