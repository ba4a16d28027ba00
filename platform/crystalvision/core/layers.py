"""The map of the package: its rooms (sub-packages) bottom-up, each with its one-line sign, and the rule between them.

This table is the one source of the layer order: the package's docstring (``help(crystalvision)``), the layer test
(``tests/core/test_layers.py``) and the table in ``docs/architecture.md`` (``python docs/gen_layers_table.py``) are made
from it; :func:`door` makes each room's lazy door. It imports nothing of the project or beyond the standard library, so
the generator reads it by its path, with any Python.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, NamedTuple


class Room(NamedTuple):
    """One sub-package: its name, its layer (0 at the bottom) and its sign."""

    name: str
    layer: int
    sign: str


ROOMS = (
    Room("core", 0, "shared leaves: settings, pipeline configuration, targets, errors, logging, progress events"),
    Room("ops", 1, "running on a cluster: the Ray connection, leases for one-at-a-time work, fault injection"),
    Room("data", 1, "Materials Project access, snapshots (and the bundled ones), storage, shards, splits, folds"),
    Room("render", 2, "structures to images: VTK offscreen scenes, Ray Data render jobs, image shards"),
    Room("track", 2, "MLflow tracking, rank-0 logging from workers, run descriptions, model cards"),
    Room("learn", 3, "the model, its prepared inputs, the epoch loop, training on Ray Train"),
    Room("evaluate", 4, "metrics, baselines, out-of-fold scoring, leakage, saliency, plots, the HTML report"),
    Room("serve", 4, "the logged pyfunc model, predictions from the command line and Python, the REST server"),
    Room("stages", 5, "the road: a config to every stage's prepared inputs, a logged run back to its model and inputs"),
    Room("promote", 6, "a run's evaluated model gated against the champion and registered"),
    Room("app", 7, "the front doors (command line, the command table Ray Jobs share) and runs that span stages"),
)
LAYERS = {room.name: room.layer for room in ROOMS}
RULE = (
    "A room imports only rooms on a lower layer, never one beside it or above it, and from another room only the "
    "names its door lists (the room's __init__.py, __all__): from crystalvision.data import ObjectStore."
)


def map_text() -> str:
    """The rooms bottom-up with their signs, and the rule: the map at the package's entrance."""
    width = max(len(room.name) for room in ROOMS)
    lines = [f"  {room.layer}  {room.name:<{width}}  {room.sign}" for room in ROOMS]
    head = "The rooms (crystalvision.<room>), bottom-up: layer, room, sign."
    return f"{head}\n\n" + "\n".join(lines) + f"\n\n{RULE}\n"


def door(
    package: str, names: dict[str, str], modules: str = ""
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """A room's door (PEP 562): its ``__all__`` and a lazy ``__getattr__`` and ``__dir__`` for its __init__.py.

    ``names`` maps a module of the room to the public names it defines (space-separated); ``modules`` lists the
    room's modules that are public as modules. A name's module is imported when the name is first used, so
    importing a room loads neither torch nor VTK.
    """
    home: dict[str, str] = {}
    for module, listed in names.items():
        for name in listed.split():
            if home.setdefault(name, module) != module:
                raise ValueError(f"{package}: {name} is listed under both {home[name]} and {module}")
    public = set(modules.split())
    exported = sorted({*home, *public})

    def __getattr__(name: str) -> Any:
        if name in home:
            return getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        if name in public:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*exported, *vars(sys.modules[package])})

    return exported, __getattr__, __dir__
