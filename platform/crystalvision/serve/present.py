"""Predictions for people and machines: a compact table with warnings and errors below it, or full JSON.

The table shows per input the band gap, e_above_hull, the joint crystal system and space group with their
probabilities, and the three most probable space groups; no probability dictionaries. For a CIF, a line under the
table gives the structure's exact symmetry (spglib) beside the heads' answers and flags a head that disagrees: the
symmetry heads matter for images, not for structures. JSON keeps every column, with the JSON-encoded columns
(distributions, top-3, warnings) decoded into objects.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

NON_TERMINAL_WIDTH = 200
JSON_COLUMNS = ("spacegroup_top3", "crystal_system_proba", "spacegroup_proba", "warnings")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return None if _missing(value) else value


def prediction_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per row, with the JSON-encoded columns decoded (for ``--output json``)."""
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: _decoded(v) if k in JSON_COLUMNS else (None if _missing(v) else v) for k, v in row.items()})
    return records


def _with_p(label: Any, p: Any) -> str:
    return "" if _missing(label) else f"{label} ({float(p):.2f})"


def _top3(value: Any) -> str:
    top = _decoded(value) or []
    return ", ".join(f"{sg} {p:.2f}" for sg, p in top)


def prediction_table(frame: pd.DataFrame) -> Table:
    """The rich table of predictions; rows with an error show 'error' and leave the values empty."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header, justify in (
        ("input", "left"),
        ("band gap eV", "right"),
        ("E_hull eV/atom", "right"),
        ("crystal system (p)", "left"),
        ("space group (p)", "left"),
        ("top-3 space groups", "left"),
    ):
        table.add_column(header, justify=justify, overflow="fold", no_wrap=justify == "right")
    for i, row in enumerate(frame.to_dict(orient="records")):
        name = str(row.get("file") or row.get("name") or f"row {i}")
        if not _missing(row.get("error")):
            table.add_row(name, "", "", "error", "", "")
            continue
        table.add_row(
            name,
            f"{float(row['band_gap']):.2f}",
            f"{float(row['energy_above_hull']):.3f}",
            _with_p(row["crystal_system"], row["crystal_system_probability"]),
            _with_p(row["spacegroup"], row["spacegroup_probability"]),
            _top3(row["spacegroup_top3"]),
        )
    return table


def notes(frame: pd.DataFrame) -> list[str]:
    """The lines printed under the table: each row's error, then each warning."""
    lines = [f"error: {e}" for e in frame.get("error", []) if not _missing(e)]
    for value in frame.get("warnings", []):
        lines += [f"warning: {w}" for w in (_decoded(value) or [])]
    return lines


HEAD_ANSWERS = (  # head, label shown, the frame's answer column, its probability column (None: a value)
    ("band_gap", "band gap", "band_gap", None),
    ("energy_above_hull", "E_hull", "energy_above_hull", None),
    ("crystal_system", "crystal system", "crystal_system", "crystal_system_probability"),
    ("spacegroup", "space group", "spacegroup", "spacegroup_probability"),
)


def trust_lines(frame: pd.DataFrame) -> list[str]:
    """Each answer beside the model's measured accuracy / R² on unseen structures (the model card), or one line
    saying the model has none."""
    from crystalvision.track import trust_text, unmeasured_text

    generalisation = frame.attrs.get("generalisation") or {}
    if not generalisation.get("heads"):
        return [unmeasured_text(generalisation, "note: this model has ")]
    lines = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        if not _missing(row.get("error")):
            continue
        name = str(row.get("file") or row.get("name") or f"row {i}")
        for head, label, answer, proba in HEAD_ANSWERS:
            value = row.get(answer)
            if _missing(value):
                continue
            shown = f"{value} (p {float(row[proba]):.2f}; " if proba else f"{float(value):.3g} ("
            lines.append(f"{name}: {label} {shown}{trust_text(generalisation, head)})")
    return lines


def symmetry_lines(frame: pd.DataFrame) -> list[str]:
    """Per CIF row: its exact symmetry beside the heads' answers, each head marked as agreeing or disagreeing."""
    from crystalvision.serve.hierarchy import LABEL_SYMPREC

    lines = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        system, group = row.get("structure_crystal_system"), row.get("structure_spacegroup")
        if _missing(system) or not _missing(row.get("error")):
            continue
        name = str(row.get("file") or row.get("name") or f"row {i}")
        heads = []
        pairs = (("crystal system", system, "crystal_system"), ("space group", group, "spacegroup"))
        for label, exact, answer in pairs:
            verdict = "agrees" if row.get(answer) == exact else "DISAGREES"
            heads.append(f"{label} head {row.get(answer)} {verdict}")
        lines.append(
            f"{name}: exact symmetry from the structure (spglib, symprec {LABEL_SYMPREC:g}): {system} {group}; "
            + ", ".join(heads)
        )
    return lines


def print_predictions(frame: pd.DataFrame, output: str = "table", console: Console | None = None) -> None:
    """Print ``frame`` (from :func:`crystalvision.serve.face.predict_files`) as a table or as JSON on stdout."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs, pipes: no folding at the 80-column default
            console.width = NON_TERMINAL_WIDTH
    if output == "json":
        records = prediction_records(frame)
        for record in records:
            record["model_generalisation"] = frame.attrs.get("generalisation") or None
        console.out(json.dumps(records, indent=2, default=str), highlight=False)
        return
    console.print(prediction_table(frame))
    for line in symmetry_lines(frame) + trust_lines(frame) + notes(frame):
        console.out(line, highlight=False)
