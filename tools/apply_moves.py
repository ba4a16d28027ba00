"""Rewrite references to crystalvision's old flat modules into the sub-packages (docs/architecture.md).

    python tools/apply_moves.py FILE...           rewrite the files in place, print the ones changed
    python tools/apply_moves.py --check FILE...   print what would change; exit 1 if anything would
    python tools/apply_moves.py --table           print the table of moves

Import statements (``from crystalvision import config, plots`` is split by new parent, ``from crystalvision.config
import X``, ``import crystalvision.config as c``) and every other dotted name (``"crystalvision.storage"`` as a
logger name or a monkeypatch path, ``python -m crystalvision.cli``, ``:mod:`crystalvision.progress```) are rewritten.
Names stored outside the code (MLflow tags such as ``crystalvision.registry.decision``) are kept. Rewriting is
idempotent: a file already in the new layout is left as it is. Then ``ruff check --select I --fix`` sorts imports.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PACKAGES = {
    "core": "settings config targets errors logs natives progress",
    "ops": "raycluster lease faults",
    "data": "snapshot ingest mp structures storage shards dataset folds render.png",
    "track": "tracking worker_logging rundocs card",
    "learn": "model backbone augment loop accel train train_worker trainprogress selection prepare",
    "evaluate": "evaluate metrics plots report explain baselines leakage graphnet oof",
    "serve": "predict predict_input pyfunc_code present hierarchy renderproc",
    "promote": "runs registry registry_cas gate",
    "app": "cli commands pipeline console summary tune watch learning_curve",
}
# old dotted module name -> new one
MOVES = {
    f"crystalvision.{old}": f"crystalvision.{package}.{old.rsplit('.', 1)[-1]}"
    for package, olds in PACKAGES.items()
    for old in olds.split()
}
NEW = set(MOVES.values())
# never rewritten: names that live outside the code (MLflow tags), and the old name that old models import
KEEP = (
    "crystalvision.registry.decision",
    'MOVED = {"crystalvision.predict"',
    "``from crystalvision.predict import",
    "\\n\\nfrom crystalvision.predict import",  # tests/test_predict.py: an old model's loader, as text
)

_OLD = "|".join(re.escape(m) for m in sorted(MOVES, key=len, reverse=True))
_DOTTED = re.compile(rf"(?<![\w.])({_OLD})(?![\w])")
_FROM = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<pkg>crystalvision(?:\.\w+)*) import (?P<names>[^(\n#]+?)(?P<tail>[ \t]*#.*)?$"
)


def _is_new(text: str, start: int, old: str) -> bool:
    """``crystalvision.evaluate.evaluate`` (new) begins with an old name too: a name already moved is no match."""
    tail = re.match(r"\.(\w+)", text[start + len(old) :])
    if tail and f"{old}.{tail.group(1)}" in NEW:
        return True
    return any(i <= start < i + len(keep) for keep in KEEP if (i := text.find(keep, max(0, start - len(keep)))) >= 0)


def _rewrite_from(match: re.Match[str]) -> str:
    """``from crystalvision import a, b as c`` with modules among the names: one import per new parent."""
    indent, pkg, tail = match["indent"], match["pkg"], match["tail"] or ""
    names = [n.strip() for n in match["names"].split(",") if n.strip()]
    if pkg in MOVES and not all(f"{pkg}.{n.split()[0]}" in NEW for n in names):
        return f"{indent}from {MOVES[pkg]} import {', '.join(names)}{tail}"
    kept: list[str] = []
    by_parent: dict[str, list[str]] = {}
    for name in names:
        module = f"{pkg}.{name.split()[0]}"
        if module in MOVES:
            parent, leaf = MOVES[module].rsplit(".", 1)
            by_parent.setdefault(parent, []).append(name.replace(name.split()[0], leaf, 1))
        else:
            kept.append(name)
    if not by_parent:
        return match.group(0)
    lines = [f"{indent}from {pkg} import {', '.join(kept)}"] if kept else []
    lines += [f"{indent}from {parent} import {', '.join(ns)}" for parent, ns in by_parent.items()]
    lines[0] += tail
    return "\n".join(lines)


def _rewrite_line(line: str) -> str:
    match = _FROM.match(line)
    if match:
        return _rewrite_from(match)
    # `import crystalvision.x as y`, `from crystalvision.x import (`, and every other dotted use
    return _DOTTED.sub(lambda m: m.group(1) if _is_new(line, m.start(1), m.group(1)) else MOVES[m.group(1)], line)


def rewrite(text: str) -> str:
    """``text`` with every reference to an old module name rewritten to the new one."""
    return "".join(
        _rewrite_line(line[:-1]) + "\n" if line.endswith("\n") else _rewrite_line(line)
        for line in text.splitlines(keepends=True)
    )


def table() -> str:
    rows = [f"| `{old}` | `{new}` |" for old, new in MOVES.items()]
    return "\n".join(["| old module | new module |", "| --- | --- |", *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="print what would change, write nothing")
    parser.add_argument("--table", action="store_true", help="print the table of moves")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    changed = 0
    for path in args.files:
        old = path.read_text()
        new = rewrite(old)
        if new == old:
            continue
        changed += 1
        if args.check:
            for a, b in zip(old.splitlines(), new.splitlines(), strict=False):
                if a != b:
                    print(f"{path}: {a.strip()}  ->  {b.strip()}")
        else:
            path.write_text(new)
            print(path)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
