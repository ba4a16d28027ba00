"""The study scripts under ``docs/study`` as modules, imported as ``python docs/study/<name>.py`` sees them.

Run as a script, a file's own folder is the first entry of ``sys.path``, so the scripts import each other by plain
name (``import space_table``). Tests put that folder on the path once and import them the same way.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"


def study_script(name: str) -> ModuleType:
    """``docs/study/<name>.py`` imported under its own name (one module per script, shared with its siblings)."""
    if str(STUDY) not in sys.path:
        sys.path.insert(0, str(STUDY))
    return importlib.import_module(name)
