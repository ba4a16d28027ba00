"""A model card's measured generalisation: the pooled out-of-fold metrics on unseen structures of a grouped k-fold
record (``crystalvision pipeline run <k-fold config> --json``), kept in ``model.json`` and shown beside predictions.

``registry.generalisation_record`` names the record. The record must measure the same snapshot the model trains on;
its numbers describe the recipe (render, model, training settings) of the k-fold run, trained on fewer structures.
A record of another recipe (``recipe.differences``: render config hash, label sources, selection and training
settings) gives no numbers: the card says why it was withheld.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from crystalvision.core.errors import ConfigError
from crystalvision.core.targets import BY_NAME, TARGETS
from crystalvision.track.recipe import differences

log = logging.getLogger(__name__)

BASELINES = {"dummy": "majority", "1nn": "1-NN", "cgcnn": "CGCNN"}  # record predictor -> name shown
UNMEASURED = "no measured out-of-fold metrics on unseen structures (registry.generalisation_record was not set)"


def _metric(head: str) -> tuple[str, str]:
    """(record metric prefix, name shown) of a head: accuracy for classes, R² for values."""
    return ("r2", "R²") if BY_NAME[head].is_regression else ("acc", "accuracy")


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"registry.generalisation_record: {path} does not exist; give the path of a k-fold run's record"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"registry.generalisation_record: {path} is not JSON ({exc})") from None
    pooled = (record.get("pooled") or {}).get("metrics") if isinstance(record, dict) else None
    if not pooled:
        raise ConfigError(
            f"registry.generalisation_record: {path} holds no pooled out-of-fold metrics; it must be the --json "
            "record of a grouped k-fold run (crystalvision pipeline run <config with split.folds> --json)"
        )
    return record


def _measured_on(path: Path) -> str:
    """The first line of the record's ``.cmd`` file (date, hardware), when there is one."""
    cmd = path.with_suffix(".cmd")
    if cmd.is_file():
        first = cmd.read_text().splitlines()[:1]
        return first[0].lstrip("# ").strip() if first else ""
    return ""


def generalisation_from_record(
    path: str | Path, snapshot_sha256: str | None, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The card block of a grouped k-fold record; ConfigError naming the record when it measured another snapshot.
    ``run`` (``render_config_hash``, ``label_source``, ``recipe`` of the model's run): a record of another recipe
    gives ``{"withheld": why}`` and a warning, never its numbers."""
    path = Path(path)
    record = _read(path)
    measured = record.get("snapshot_sha256")
    if snapshot_sha256 and measured and measured != snapshot_sha256:
        raise ConfigError(
            f"registry.generalisation_record: {path} measured snapshot {str(measured)[:12]}, but this model trains "
            f"on {snapshot_sha256[:12]}; rerun the k-fold pipeline on this snapshot and point at its record"
        )
    why = differences(record, run) if run is not None else []
    if why:
        reason = f"{path.name} measured another recipe: " + "; ".join(why)
        log.warning("registry.generalisation_record: %s. This model gets no measured numbers in its card; rerun "
                    "the k-fold pipeline with this recipe and point at its record", reason)  # fmt: skip
        return {"withheld": f"card withheld: {reason}"}
    pooled = record["pooled"]["metrics"]
    heads: dict[str, dict[str, Any]] = {}
    for head in TARGETS:
        prefix, shown = _metric(head)
        value = pooled.get(f"pooled_model_{prefix}_{head}")
        if value is None or not math.isfinite(value):
            continue
        entry: dict[str, Any] = {"metric": shown, "value": float(value)}
        for bound in ("lo", "hi"):
            if f"pooled_model_{prefix}_{head}_{bound}" in pooled:
                entry[bound] = float(pooled[f"pooled_model_{prefix}_{head}_{bound}"])
        for key, name in BASELINES.items():
            if f"pooled_{key}_{prefix}_{head}" in pooled:
                entry[name] = float(pooled[f"pooled_{key}_{prefix}_{head}"])
        heads[head] = entry
    return {
        "record": path.name,
        "pipeline": record.get("pipeline", ""),
        "run_id": record.get("run_id", ""),
        "measured_on": _measured_on(path),
        "n_structures": int(pooled.get("pooled_n_structures", 0)),
        "n_seeds": int(pooled.get("pooled_n_seeds", 1)),
        "protocol": "grouped k-fold: every structure predicted once by a model that never saw it",
        "heads": heads,
    }


def unmeasured_text(generalisation: dict[str, Any] | None, prefix: str = "") -> str:
    """Why a card holds no numbers: no record was set, or its record measured another recipe."""
    withheld = (generalisation or {}).get("withheld")
    return prefix + (f"no measured out-of-fold metrics on unseen structures ({withheld})" if withheld else UNMEASURED)


def trust_text(generalisation: dict[str, Any] | None, head: str) -> str:
    """'this model: 0.47 [0.44, 0.50] accuracy on unseen structures; majority 0.35', or why there is none."""
    entry = (generalisation or {}).get("heads", {}).get(head)
    if not entry:
        return (
            f"this model: {head} was not measured"
            if (generalisation or {}).get("heads")
            else unmeasured_text(generalisation, "this model: ")
        )
    interval = f" [{entry['lo']:.2f}, {entry['hi']:.2f}]" if "lo" in entry and "hi" in entry else ""
    text = f"this model: {entry['value']:.2f}{interval} {entry['metric']} on unseen structures"
    if "majority" in entry:
        text += f"; majority {entry['majority']:.2f}"
    return text


def card_markdown(generalisation: dict[str, Any] | None) -> list[str]:
    """Markdown lines for the MLflow model-version description."""
    if not generalisation or not generalisation.get("heads"):
        return ["", unmeasured_text(generalisation, "Generalisation: ") + "."]
    g = generalisation
    lines = [
        "",
        f"Measured on unseen structures ({g['protocol']}; {g['n_structures']} structures, {g['n_seeds']} seed(s); "
        f"record `{g['record']}`, pipeline `{g['pipeline']}`{', ' + g['measured_on'] if g['measured_on'] else ''}):",
        "",
        "| head | metric | model [95 %] | majority | 1-NN | CGCNN |",
        "|---|---|---|---|---|---|",
    ]
    for head, e in g["heads"].items():
        interval = f" [{e['lo']:.2f}, {e['hi']:.2f}]" if "lo" in e else ""
        others = " | ".join(f"{e[n]:.2f}" if n in e else "" for n in BASELINES.values())
        lines.append(f"| {head} | {e['metric']} | {e['value']:.2f}{interval} | {others} |")
    return lines
