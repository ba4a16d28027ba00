"""The package's sub-packages stand in layers: each imports only the layers below it, never one beside or above,
and only through the other room's door (its ``__init__.py`` and ``__all__``); importing a room is light.

The layers come from the package's one map, ``crystalvision.core.layers``.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import crystalvision
from crystalvision.core.layers import LAYERS, ROOMS, RULE

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "platform" / "crystalvision"
HEAVY = ("torch", "vtkmodules", "vtk", "pyvista", "ray", "mlflow")  # what importing a room must not load


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every crystalvision import in ``path`` (lazily inside functions too); names is empty for
    ``import crystalvision.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "crystalvision"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "crystalvision"
        ):
            found.append((node.module, [a.name for a in node.names]))
    return found


def _imported(path: Path) -> set[str]:
    """The crystalvision modules and names that ``path`` imports, dotted."""
    return {f"{module}.{name}" for module, names in _imports(path) for name in names or [""]}


def test_every_sub_package_has_a_layer() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS), "give a new sub-package its layer and sign in crystalvision/core/layers.py"
    # beside the entrance only predict.py: crystalvision.predict(...), also the old module name of the served model
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "predict.py"], "modules live in the rooms"


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.glob("*/**/*.py")):
        own = path.relative_to(PACKAGE).parts[0]
        for name in sorted(_imported(path)):
            other = name.split(".")[1]
            if other not in LAYERS:  # the package's entrance sits on top of every room
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name.rstrip('.')} from the package's entrance")
            elif other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name} ({own} is layer {LAYERS[own]})")
    assert not wrong, "\n".join(wrong)


def test_imports_across_rooms_go_through_the_doors() -> None:
    """``from crystalvision.data import ObjectStore`` (a name data's __all__ lists), never
    ``from crystalvision.data.storage import ...`` or ``import crystalvision.data.storage`` from another room."""
    doors = {room: set(importlib.import_module(f"crystalvision.{room}").__all__) for room in LAYERS}
    wrong = []
    for path in sorted(PACKAGE.glob("*/**/*.py")):
        where, own = path.relative_to(PACKAGE).as_posix(), path.relative_to(PACKAGE).parts[0]
        for module, names in _imports(path):
            parts = module.split(".")
            if len(parts) < 2 or parts[1] == own or parts[1] not in LAYERS:
                continue
            room = parts[1]
            if len(parts) > 2 or not names:
                wrong.append(f"{where} imports {module}: import from its door, from crystalvision.{room} import ...")
            elif missing := [n for n in names if n not in doors[room]]:
                wrong.append(f"{where} imports {missing} from crystalvision.{room}, whose door does not list them: "
                             f"add them to __all__ in crystalvision/{room}/__init__.py")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_every_door_lists_names_that_resolve_and_modules_as_modules() -> None:
    """Each room's __all__ resolves; a name that is also a module of the room is that module (the import system
    would put the module there anyway)."""
    for room in LAYERS:
        door = importlib.import_module(f"crystalvision.{room}")
        modules = {p.stem for p in (PACKAGE / room).glob("*.py")}
        assert door.__all__ and set(door.__all__) <= set(dir(door)), room
        for name in door.__all__:
            value = getattr(door, name)
            if name in modules:
                assert value is importlib.import_module(f"crystalvision.{room}.{name}"), f"{room}.{name}"


def test_importing_the_package_and_every_room_loads_neither_torch_nor_vtk() -> None:
    rooms = ", ".join(f"crystalvision.{room}" for room in LAYERS)
    code = (
        f"import sys, json, crystalvision, {rooms}; [dir(m) for m in ({rooms})]; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert "crystalvision.core" in json.loads(done.stdout) and not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_no_import_of_another_rooms_private_names() -> None:
    """No module imports a ``_private`` name from another room, nor do the benchmarks and jobs from the package or
    the tests' support code."""
    wrong = []
    files = [*PACKAGE.glob("*/**/*.py"), *(ROOT / "bench").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
    for path in sorted(files):
        where = path.relative_to(ROOT).as_posix()
        own = path.relative_to(PACKAGE).parts[0] if path.is_relative_to(PACKAGE) else None
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            parts = node.module.split(".")
            other = parts[1] if parts[0] == "crystalvision" and len(parts) > 1 else parts[0]
            if parts[0] in ("crystalvision", "tests") and other != own:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                wrong += [f"{where} imports {node.module}.{name}" for name in private]
    assert not wrong, "\n".join(wrong)


def test_the_package_docstring_shows_the_map_bottom_up() -> None:
    """``help(crystalvision)`` lists every room with its layer and sign, bottom-up, and the rule."""
    doc = crystalvision.__doc__
    lines = [next(line for line in doc.splitlines() if line.split()[:2] == [str(r.layer), r.name]) for r in ROOMS]
    assert [doc.index(line) for line in lines] == sorted(doc.index(line) for line in lines)
    for room, line in zip(ROOMS, lines, strict=True):
        assert line.split() == [str(room.layer), room.name, *room.sign.split()]
    assert [r.layer for r in ROOMS] == sorted(r.layer for r in ROOMS) and RULE in doc


def test_tests_mirror_the_rooms() -> None:
    """A room's own tests live in ``tests/<room>/`` (``pytest tests/render`` after editing the render room), what
    spans stages in ``tests/system/``; ``tests/run_files.py`` finds them all."""
    tests = ROOT / "tests"
    sys.path.insert(0, str(tests))
    try:
        from run_files import test_files
    finally:
        sys.path.remove(str(tests))
    files = test_files()
    folders = {p.parent.name for p in files}
    assert {p.parent.parent for p in files} == {tests}, "test files sit one folder below tests/"
    assert folders <= set(LAYERS) | {"system"}, f"test folders that are not rooms: {folders - set(LAYERS)}"
    assert all((tests / f / "__init__.py").exists() for f in folders)
    assert len(files) == len(list(tests.rglob("test_*.py"))) >= 50
