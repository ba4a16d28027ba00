"""The package's sub-packages stand in layers: each imports only the layers below it, never one beside or above.

The layers come from the package's one map, ``crystalvision.core.layers``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import crystalvision
from crystalvision.core.layers import LAYERS, ROOMS, RULE

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "crystalvision"


def _imported(path: Path) -> set[str]:
    """The crystalvision modules and packages that ``path`` imports (lazily inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("crystalvision.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("crystalvision"):
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_every_sub_package_has_a_layer() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS), "give a new sub-package its layer and sign in crystalvision/core/layers.py"
    assert [p.name for p in PACKAGE.glob("*.py")] == ["__init__.py"], "modules live in the sub-packages"


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.glob("*/**/*.py")):
        own = path.relative_to(PACKAGE).parts[0]
        for name in sorted(_imported(path)):
            other = name.split(".")[1]
            if other in LAYERS and other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name} ({own} is layer {LAYERS[own]})")
    assert not wrong, "\n".join(wrong)


def test_the_package_docstring_shows_the_map_bottom_up() -> None:
    """``help(crystalvision)`` lists every room with its layer and sign, bottom-up, and the rule."""
    doc = crystalvision.__doc__
    lines = [next(line for line in doc.splitlines() if line.split()[:2] == [str(r.layer), r.name]) for r in ROOMS]
    assert [doc.index(line) for line in lines] == sorted(doc.index(line) for line in lines)
    for room, line in zip(ROOMS, lines, strict=True):
        assert line.split() == [str(room.layer), room.name, *room.sign.split()]
    assert [r.layer for r in ROOMS] == sorted(r.layer for r in ROOMS) and RULE in doc
