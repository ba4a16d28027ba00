"""The render stage's labels table: one row per image with its key, orientation and every head's label (from the
targets table), and the table's store key (keyed by the selection as well as the render config)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pandas as pd

from crystalvision.core import TABLE, RenderConfig
from crystalvision.render.rotations import structure_quaternions


def selection_hash(records: list[Any]) -> str:
    """Hash of which structures a render covers (sorted material ids): the labels table is keyed by it, so two
    runs that select different structures from one snapshot never read each other's table."""
    ids = "\n".join(sorted(str(r.material_id) for r in records))
    return hashlib.sha256(ids.encode()).hexdigest()


def labels_key_for(prefix: str, records: list[Any]) -> str:
    """``<prefix>/labels-<selection hash[:12]>.parquet``: one labels table per (snapshot, render config,
    selection); the images under ``<prefix>/images`` are shared."""
    return f"{prefix}/labels-{selection_hash(records)[:12]}.parquet"


def image_key(prefix: str, material_id: str, view: int) -> str:
    """The store key of one rendered PNG (layout: files)."""
    return f"{prefix}/images/{material_id}/{view:04d}.png"


def labels_frame(records: list[Any], encoders: Any, cfg: RenderConfig, prefix: str, keys: Any = None) -> pd.DataFrame:
    """One row per image; ``keys(material_id, view)`` names each image (default: its PNG key)."""
    keys = keys or (lambda mid, view: image_key(prefix, mid, view))
    rows = []
    for rec in records:
        base = label_columns(rec, encoders)
        for view, quat in enumerate(structure_quaternions(cfg, rec.material_id).tolist()):
            key = keys(rec.material_id, view)
            rows.append({"material_id": rec.material_id, "view": view, "quaternion": quat, "image_key": key, **base})
    return pd.DataFrame(rows)


def label_columns(rec: Any, encoders: Any) -> dict[str, Any]:
    """One record's label columns, from the targets table: each head's value (regression) or class name and class
    id (classification; the record attribute is the label column's name), the formula and the label sources."""
    row: dict[str, Any] = {"formula": rec.formula}
    for t in TABLE:
        value = getattr(rec, t.label)
        row[t.label] = float(value) if t.is_regression else value
        if not t.is_regression:
            row[str(t.class_id)] = encoders.encode(t.name, value)
        else:
            row[f"label_source_{t.name}"] = rec.label_source.get(t.name, "")
    return row


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
