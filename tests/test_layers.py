"""The package's sub-packages stand in layers: each imports only the layers below it, never one beside or above."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "crystalvision"
# a package may import the packages of a lower layer (and the top-level crystalvision for __version__)
LAYERS = {
    "core": 0,
    "ops": 1,
    "data": 1,
    "render": 2,
    "track": 2,
    "learn": 3,
    "evaluate": 4,
    "serve": 4,
    "promote": 5,
    "app": 6,
}


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
    assert packages == set(LAYERS), "give a new sub-package its layer in LAYERS"
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
