"""MLflow runs and models that explain themselves: datasets, descriptions and tags a person reads in the UI.

A pipeline run logs its snapshot (and, for rendered data, the labels table) as MLflow datasets with digest and
source, gets a Markdown description (pipeline, split protocol, headline metrics against the baselines), and every
registered model and version gets a description and tags (training snapshot, label sources, split, promotion
metric). Metric names come from evaluate.py unchanged, so the UI's compare view lines up every pipeline's runs.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

NOTE_TAG = "mlflow.note.content"  # what the MLflow UI shows as a run's description
SNAPSHOT_COLUMNS = [
    "material_id",
    "formula",
    "nsites",
    "crystal_system",
    "spacegroup_symbol",
    "band_gap",
    "energy_above_hull",
]
LABEL_COLUMNS = [
    "material_id",
    "view",
    "image_key",
    "band_gap",
    "energy_above_hull",
    "crystal_system",
    "spacegroup_symbol",
]
HEADLINE = [
    ("band gap", "r2", "band_gap"),
    ("e above hull", "r2", "energy_above_hull"),
    ("crystal system", "acc", "crystal_system"),
    ("space group", "acc", "spacegroup"),
]


def snapshot_frame(records: list[Any]) -> pd.DataFrame:
    """One row per selected structure, the columns a person would check."""
    return pd.DataFrame([{c: getattr(r, c, None) for c in SNAPSHOT_COLUMNS} for r in records])


def log_datasets(
    snapshot: Any,
    selection: Any,
    labels: pd.DataFrame | None = None,
    labels_uri: str | None = None,
    labels_digest: str | None = None,
) -> None:
    """Log the snapshot (context ``snapshot``) and the rendered labels table (context ``training``) as inputs."""
    import mlflow

    manifest = snapshot.manifest
    snap_ds = mlflow.data.from_pandas(
        snapshot_frame(selection.records),
        source=str(snapshot.path),
        name=manifest.snapshot_id,
        digest=manifest.content_sha256[:32],
        targets="band_gap",
    )
    mlflow.log_input(snap_ds, context="snapshot", tags={"db_version": manifest.db_version})
    if labels is not None and labels_uri:
        cols = [c for c in LABEL_COLUMNS if c in labels.columns]
        labels_ds = mlflow.data.from_pandas(
            labels[cols], source=labels_uri, name=f"{manifest.snapshot_id}-renders", digest=labels_digest
        )
        mlflow.log_input(labels_ds, context="training")


def _per_structure(metrics: dict[str, float]) -> bool:
    return any(k.startswith("test_struct_") for k in metrics)


def headline_rows(metrics: dict[str, float]) -> list[str]:
    """Markdown table rows: head, metric, model, majority baseline, 1-NN baseline. The baselines score each test
    structure once, so the model's column is per structure too (its views averaged, ``test_struct_*``); only a run
    that scored no structure shows its per-image number, and :func:`headline_table`'s header then says so."""
    level = "test_struct" if _per_structure(metrics) else "test"
    rows = []
    for label, kind, target in HEADLINE:
        key = f"{level}_{kind}_{target}"
        if key not in metrics:
            continue
        cells = [metrics.get(k) for k in (key, f"baseline_dummy_{kind}_{target}", f"baseline_1nn_{kind}_{target}")]
        text = ["-" if v is None else f"{float(v):.3f}" for v in cells]
        rows.append(f"| {label} | {'R²' if kind == 'r2' else 'accuracy'} | {' | '.join(text)} |")
    return rows


def headline_table(metrics: dict[str, float]) -> list[str]:
    """The test split's headline rows under a header naming the level of each column (empty without rows)."""
    rows = headline_rows(metrics)
    if not rows:
        return []
    model = "model, per structure" if _per_structure(metrics) else "model, per image"
    header = f"| head | metric | {model} | majority, per structure | 1-NN, per structure |"
    return [header, "|---|---|---|---|---|", *rows]


def run_description(cfg: Any, snapshot: Any, split_info: dict[str, Any], metrics: dict[str, float]) -> str:
    """Markdown for the run page: what ran on what, and how good it is against the baselines."""
    manifest = snapshot.manifest
    lines = [
        f"**{cfg.name}**: EfficientNet-B0 with four heads ({cfg.train.backbone}, {cfg.render.image_size} px, "
        f"{cfg.train.epochs} epochs max, batch {cfg.train.batch_size}, lr {cfg.train.lr:g}).",
        "",
        f"Data: snapshot `{manifest.snapshot_id}` (db {manifest.db_version}, sha256 {manifest.content_sha256[:12]}), "
        f"split **{split_info.get('split_protocol', cfg.split.protocol)}** "
        f"(train/val/test structures {split_info.get('n_structures_train', '?')}/"
        f"{split_info.get('n_structures_val', '?')}/{split_info.get('n_structures_test', '?')}).",
    ]
    if cfg.split.protocol == "image":
        lines += [
            "",
            "Split by image, as the study: neighbouring views of one structure sit in train and test, "
            "so these numbers overstate generalisation to new structures.",
        ]
    if table := headline_table(metrics):
        lines += ["", *table]
    return "\n".join(lines)


def describe_run(run_id: str, text: str) -> None:
    """Set the run's description (the UI's Description box)."""
    import mlflow

    mlflow.MlflowClient().set_tag(run_id, NOTE_TAG, text)


def version_tags(cfg: Any, snapshot: Any, split_info: dict[str, Any]) -> dict[str, str]:
    """Tags on a model version: training snapshot, label sources, split, promotion metric."""
    manifest = snapshot.manifest
    tags = {
        "training_snapshot": manifest.snapshot_id,
        "training_snapshot_sha256": manifest.content_sha256,
        "db_version": manifest.db_version,
        "split_protocol": str(split_info.get("split_protocol", cfg.split.protocol)),
        "promote_metric": cfg.registry.promote_metric,
        "pipeline": cfg.name,
    }
    for target, source in manifest.label_source.items():
        tags[f"label_source.{target}"] = str(source)[:500]
    return tags


def describe_model(
    name: str,
    version: str,
    cfg: Any,
    snapshot: Any,
    split_info: dict[str, Any],
    metrics: dict[str, float],
    decision: dict[str, Any],
    generalisation: dict[str, Any] | None = None,
) -> None:
    """Descriptions on the registered model and on the version (with the card's measured generalisation, or a line
    saying it was never measured), plus the version's tags."""
    import mlflow

    from crystalvision.track.card import card_markdown

    client = mlflow.MlflowClient()
    client.update_registered_model(
        name,
        description=(
            "Predicts band gap (eV), energy above hull (eV/atom), crystal system and space group from rendered "
            "images of a crystal structure (crystalvision). Input: base64 PNG `image` or CIF text `cif`. "
            f"Aliases: `champion` serves, `challenger` is the newest; promotion by `{cfg.registry.promote_metric}`."
        ),
    )
    table = headline_table(metrics)
    text = [
        f"Trained by pipeline `{cfg.name}` on snapshot `{snapshot.manifest.snapshot_id}`, split "
        f"`{split_info.get('split_protocol', cfg.split.protocol)}`.",
        f"Promotion: {'champion' if decision.get('promoted') else 'challenger'}: {decision.get('reason', '')}",
    ]
    if table:
        text += ["", "This run's test split:", "", *table]
    text += card_markdown(generalisation)
    client.update_model_version(name, version, description="\n".join(text))
    for key, value in version_tags(cfg, snapshot, split_info).items():
        client.set_model_version_tag(name, version, key, value)
