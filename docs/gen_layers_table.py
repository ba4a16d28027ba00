"""Write the table of rooms in docs/architecture.md from the code: ``crystalvision.core.layers.ROOMS`` (layer, room,
sign) and each room's modules as they stand in ``platform/crystalvision/<room>/``.

The table sits between two marker comments of the page; the rest of the page is left as it is. The generator reads
``core/layers.py`` by its path (it imports nothing), so any Python 3.11+ runs it.

    python docs/gen_layers_table.py            # rewrite the table in docs/architecture.md
    python docs/gen_layers_table.py --check    # exit 1 if the table is stale
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "platform" / "crystalvision"
PAGE = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- the table of rooms: python docs/gen_layers_table.py writes it from crystalvision/core/layers.py -->"
END = "<!-- end of the table of rooms -->"


def _layers():
    spec = importlib.util.spec_from_file_location("_crystalvision_layers", PACKAGE / "core" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table() -> str:
    """The markdown table, top layer first: layer, room, sign, modules."""
    rows = ["| layer | package | what | modules |", "| --- | --- | --- | --- |"]
    for room in reversed(_layers().ROOMS):
        modules = sorted(p.stem for p in (PACKAGE / room.name).glob("*.py") if p.name != "__init__.py")
        rows.append(f"| {room.layer} | `{room.name}/` | {room.sign} | {', '.join(modules)} |")
    return "\n".join(rows)


def page(text: str) -> str:
    """``text`` (the page) with the table between the markers replaced by the current one."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{PAGE} needs the two marker lines, once each:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the table in docs/architecture.md is stale")
    args = ap.parse_args(argv)
    current = PAGE.read_text()
    text = page(current)
    if args.check:
        if current != text:
            print(f"the table of rooms in {PAGE} is stale: run python docs/gen_layers_table.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
