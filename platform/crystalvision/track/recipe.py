"""What a model is made of besides its snapshot, so that a model card's record can be checked against the model.

A grouped k-fold record (``crystalvision pipeline run <k-fold config> --json``) keeps its snapshot sha, its render
config hash, its label sources and its :func:`recipe`. A model gets that record's numbers in its card only when all
four are the same for the model's own run (``card.generalisation_from_record``); the split may differ (the record is
k-fold, the model trains once), and so may the settings that decide only where and how fast training runs.
"""

from __future__ import annotations

import json
from typing import Any

from crystalvision.core import PipelineConfig, SnapshotConfig, TrainConfig

# Settings that change which structures a model learns from (the snapshot itself is its sha256).
SELECTION = ("include_flagged", "max_structures", "material_ids")
# Train settings that decide where and how fast training runs, or which seed, not what it learns (a card describes
# the recipe over seeds). Every other train setting is recipe: a new one counts until it is listed here.
NOT_RECIPE = frozenset(
    {"use_gpu", "amp", "cpus_per_worker", "max_failures", "step_mode", "channels_last", "cudnn_benchmark",
     "device_data", "host_data_max_mb", "seed", "seeds"}
)  # fmt: skip
SECTIONS = {"snapshot": SnapshotConfig, "train": TrainConfig}


def recipe(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The selection and training settings of ``cfg`` that change the model, as JSON values."""
    snapshot = cfg.snapshot.model_dump(mode="json", include=set(SELECTION))
    train = cfg.train.model_dump(mode="json", exclude=set(NOT_RECIPE))
    return json.loads(json.dumps({"snapshot": snapshot, "train": train}))


def label_sources(manifest: Any) -> str | None:
    """A snapshot's label sources as one line (``band_gap: ...; energy_above_hull: ...``), as records keep them."""
    return "; ".join(f"{t}: {v}" for t, v in manifest.label_source.items()) or None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def recipe_differences(recorded: dict[str, Any] | None, run: dict[str, Any]) -> list[str]:
    """``section.key: <record> in the record, <run> here`` for each recipe setting that differs. A setting the
    record does not name (it is newer than the record) is compared at its default."""
    if not recorded:
        return ["the record keeps no training recipe (rerun it with this version to record one)"]
    out = []
    for section, model in SECTIONS.items():
        defaults = json.loads(model().model_dump_json())
        theirs = defaults | (recorded.get(section) or {})
        for key, value in (run.get(section) or {}).items():
            if theirs.get(key) != value:
                out.append(f"{section}.{key}: {_shown(theirs.get(key))} in the record, {_shown(value)} here")
    return out


def differences(record: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """What makes a k-fold ``record`` describe another model than ``run`` (``render_config_hash``,
    ``label_source`` and ``recipe`` of the run); empty when it describes this one."""
    out = []
    theirs = (record.get("render") or {}).get("render_config_hash")
    if theirs != run["render_config_hash"]:
        shown = str(theirs)[:12] if theirs else "none"
        out.append(f"render config hash {shown} in the record, {run['render_config_hash'][:12]} here (other images)")
    if record.get("label_source") != run["label_source"]:
        out.append("other label sources" if record.get("label_source") else "the record names no label sources")
    return out + recipe_differences(record.get("recipe"), run["recipe"])
