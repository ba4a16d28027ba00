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

from crystalvision.core import BY_NAME, TARGETS, ConfigError
from crystalvision.track.recipe import differences

log = logging.getLogger(__name__)

BASELINES = {"dummy": "majority", "1nn": "1-NN", "tabular": "trees", "cgcnn": "CGCNN"}  # record predictor -> name
# class heads: besides accuracy, the metrics that survive imbalance (record key part -> name shown)
IMBALANCE = {"balanced_acc": "balanced accuracy", "macro_f1": "macro-F1"}
UNMEASURED = "no measured out-of-fold metrics on unseen structures (registry.generalisation_record was not set)"
LABEL_NOTE = (
    "The band-gap and energy-above-hull labels of the bundled snapshots are surrogates (a pretrained CGCNN and "
    "CHGNet); CGCNN compared on band gap re-learns its own family's predictions."
)


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


def _entry(pooled: dict[str, Any], key: str, head: str, shown: str) -> dict[str, Any] | None:
    """One metric of one head: the model's value, its interval and every baseline's value (None when absent)."""
    value = pooled.get(f"pooled_model_{key}_{head}")
    if value is None or not math.isfinite(value):
        return None
    entry: dict[str, Any] = {"metric": shown, "value": float(value)}
    for bound in ("lo", "hi"):
        if f"pooled_model_{key}_{head}_{bound}" in pooled:
            entry[bound] = float(pooled[f"pooled_model_{key}_{head}_{bound}"])
    for name, label in BASELINES.items():
        if f"pooled_{name}_{key}_{head}" in pooled:
            entry[label] = float(pooled[f"pooled_{name}_{key}_{head}"])
    return entry


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
        key, shown = _metric(head)
        entry = _entry(pooled, key, head, shown)
        if entry is None:
            continue
        if not BY_NAME[head].is_regression:
            extra = {shown: _entry(pooled, key, head, shown) for key, shown in IMBALANCE.items()}
            if imbalance := {k: v for k, v in extra.items() if v is not None}:
                entry["imbalance"] = imbalance  # records made before these metrics have none
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


def strongest_baseline(entry: dict[str, Any]) -> tuple[str, float] | None:
    """The baseline with the highest value of an entry (accuracy and R²: higher is better)."""
    got = [(name, entry[name]) for name in BASELINES.values() if name in entry and name != "majority"]
    return max(got, key=lambda x: x[1]) if got else None


def unmeasured_text(generalisation: dict[str, Any] | None, prefix: str = "") -> str:
    """Why a card holds no numbers: no record was set, or its record measured another recipe."""
    withheld = (generalisation or {}).get("withheld")
    return prefix + (f"no measured out-of-fold metrics on unseen structures ({withheld})" if withheld else UNMEASURED)


def trust_text(generalisation: dict[str, Any] | None, head: str) -> str:
    """'this model: 0.47 [0.44, 0.50] accuracy on unseen structures (balanced accuracy 0.30); majority 0.35;
    strongest baseline trees 0.60', or why there is none."""
    entry = (generalisation or {}).get("heads", {}).get(head)
    if not entry:
        return (
            f"this model: {head} was not measured"
            if (generalisation or {}).get("heads")
            else unmeasured_text(generalisation, "this model: ")
        )
    interval = f" [{entry['lo']:.2f}, {entry['hi']:.2f}]" if "lo" in entry and "hi" in entry else ""
    text = f"this model: {entry['value']:.2f}{interval} {entry['metric']} on unseen structures"
    balanced = (entry.get("imbalance") or {}).get(IMBALANCE["balanced_acc"])
    if balanced:
        text += f" (balanced accuracy {balanced['value']:.2f})"
    if "majority" in entry:
        text += f"; majority {entry['majority']:.2f}"
    best = strongest_baseline(entry)
    if best:
        text += f"; strongest baseline {best[0]} {best[1]:.2f}"
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
        "| head | metric | model [95 %] | " + " | ".join(BASELINES.values()) + " |",
        "|---|---|---|" + "---|" * len(BASELINES),
    ]
    for head, first in g["heads"].items():
        for e in (first, *(first.get("imbalance") or {}).values()):
            interval = f" [{e['lo']:.2f}, {e['hi']:.2f}]" if "lo" in e else ""
            others = " | ".join(f"{e[n]:.2f}" if n in e else "" for n in BASELINES.values())
            lines.append(f"| {head} | {e['metric']} | {e['value']:.2f}{interval} | {others} |")
    lines += ["", "Per structure (each structure's views averaged). " + LABEL_NOTE]
    return lines
