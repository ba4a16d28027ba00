"""The data stages' sections of a pipeline file: which structures (``snapshot``, ``ingest``), how they become images
(``render``) and how the images are split (``split``). :class:`Section` is every section's base: unknown keys are
errors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crystalvision.core.settings import bundled_snapshots


class Section(BaseModel):
    """A section of a pipeline file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class SnapshotConfig(Section):
    """Which structures to use."""

    uri: str | None = Field(
        default=None,
        description="Snapshot folder (relative: to the pipeline file's folder); None = settings default (bundled).",
    )
    name: str | None = Field(
        default=None, description="A bundled snapshot by name (lmno, lmno-space); set this or uri, not both."
    )
    include_flagged: bool = Field(default=False, description="Keep structures with validation flags.")
    max_structures: int | None = Field(default=None, ge=1, description="Use only the first N (tiny runs).")
    material_ids: list[str] | None = Field(default=None, description="Use only these materials.")

    @field_validator("name")
    @classmethod
    def _bundled_name(cls, v: str | None) -> str | None:
        if v is not None and v not in bundled_snapshots():
            raise ValueError(f"no bundled snapshot '{v}'; the bundled snapshots are {sorted(bundled_snapshots())}")
        return v

    @model_validator(mode="after")
    def _name_or_uri(self) -> SnapshotConfig:
        if self.name and self.uri:
            raise ValueError("set snapshot.name (a bundled snapshot) or snapshot.uri (a folder), not both")
        return self


class IngestConfig(Section):
    """A live Materials Project query (used by `crystalvision ingest` and `watch`)."""

    chemsys: str | None = Field(default="Li-Mn-Ni-O", description="Chemical system, e.g. 'Li-Mn-Ni-O'.")
    elements: list[str] | None = Field(default=None, description="Alternative to chemsys: required elements.")
    nelements: int | None = Field(default=None, ge=1, description="Exact number of elements.")
    subsystems: bool = Field(
        default=False, description="Every sub-system of chemsys too (Li-O: Li, O and Li-O): the whole space."
    )
    max_records: int = Field(
        default=5000, ge=1, description="Refuse a query that matches more materials than this (memory bound)."
    )

    @model_validator(mode="after")
    def _one_query(self) -> IngestConfig:
        if not self.chemsys and not self.elements:
            raise ValueError("an ingest query needs `chemsys` or `elements`")
        if self.subsystems and not self.chemsys:
            raise ValueError("ingest.subsystems needs ingest.chemsys (the elements whose sub-systems to fetch)")
        return self


MAX_VIEWS_PER_STRUCTURE = 1024  # render rows are planned per view: a bound keeps the plan in memory


class RenderConfig(Section):
    """How structures become images."""

    image_size: int = Field(default=224, ge=16, le=2048, description="Image side in pixels.")
    views_per_structure: int = Field(
        default=56, ge=1, le=MAX_VIEWS_PER_STRUCTURE, description="Images rendered per structure."
    )
    views: Literal["uniform", "trajectory"] = Field(
        default="uniform",
        description="uniform: independent random orientations; trajectory: frames of one continuous random "
        "rotation per structure, trajectory_step_deg apart (the study's video frames).",
    )
    trajectory_step_deg: float = Field(default=6.0, description="Angle between consecutive trajectory frames.")
    seed: int = Field(default=0, description="Seed of the view orientations.")
    method: Literal["mesh", "impostor"] = Field(
        default="impostor",
        description="impostor: exact shaded spheres drawn per pixel (VTK's sphere mapper, 4-5x faster); "
        "mesh: tessellated spheres (the same colours, radii and lighting).",
    )
    sphere_resolution: int = Field(default=16, ge=4, le=64, description="Tessellation of mesh spheres.")
    radii: Literal["vesta", "shannon"] = Field(
        default="shannon",
        description="Sphere radii: vesta (VESTA's defaults, metallic/covalent: O 0.74, Mn 1.37 Å, as the KAIST study "
        "drew; the paper pipelines) or shannon (Shannon 1976: the crystal radius for O, 1.26 Å, ionic radii for the "
        "cations, Mn 0.645 Å; oxygen hides most cations). shannon is "
        "the default: on 3 grouped folds of the space it scored higher on validation (crystal system 0.439 ± 0.008 "
        "vs 0.403 ± 0.013; docs/study/records/radii-*.json).",
    )
    radius_scale: float = Field(default=1.0, gt=0, description="Multiplies every radius of the set.")
    projection: Literal["orthographic", "perspective"] = Field(default="orthographic", description="Camera projection.")
    background: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0), description="Background colour, RGB in [0, 1]."
    )
    show_cell: bool = Field(default=False, description="Draw the unit-cell box (as VESTA does).")
    num_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="Render actors in the Ray Data job; auto: one per CPU of the Ray cluster."
    )
    cpus_per_worker: float = Field(
        default=0.5, gt=0, description="CPUs reserved per actor (fractional leaves room for the read and writes)."
    )
    max_atoms: int = Field(default=2000, ge=1, description="Structures drawing more atoms are refused, not rendered.")
    structure_timeout_s: float = Field(
        default=300.0, gt=0, description="Time budget of one structure's views in a batch; exceeded twice: quarantined."
    )
    max_actor_restarts: int = Field(default=8, ge=0, description="Restarts of each render actor after a crash.")
    max_task_retries: int = Field(default=8, ge=0, description="Retries of a render batch whose actor died.")
    retry_quarantined: bool = Field(default=False, description="Try the quarantined structures again.")
    layout: Literal["files", "shards"] = Field(
        default="shards",
        description="shards: parquet shards of raw uint8 pixels (zstd) + labels, read directly by Ray Data for "
        "training (no PNG encoding on the render path); files: one PNG object per image.",
    )
    shard_mb: float = Field(default=128.0, gt=0, description="Target size of one image shard (layout: shards).")
    export_png: bool = Field(default=False, description="layout: shards also writes each image as a PNG to look at.")

    @field_validator("trajectory_step_deg")
    @classmethod
    def _step_in_range(cls, v: float) -> float:  # one message that names the key and the allowed range
        if not 0 < v < 180:
            raise ValueError(f"render.trajectory_step_deg must be in the open range (0, 180) degrees, got {v}")
        return v


class StructureFilter(Section):
    """Structures picked by what they are made of (``nelements: 4``: the quaternaries)."""

    nelements: int = Field(ge=1, description="Number of distinct elements in the formula.")


def _none_string(v: object) -> object:
    """MLflow logs None as "None": read it back as None (evaluate rebuilds splits from logged params)."""
    return None if isinstance(v, str) and v.strip().lower() in ("none", "null", "") else v


class HoldoutConfig(Section):
    """A fixed structure hold-out: a JSON file of material ids (``crystalvision holdout`` makes one)."""

    ids: str = Field(
        description="The hold-out file: JSON with the material ids, their reduced formulas, how they were made and "
        "their sha256 (read as JSON, never executed; the study's: docs/study/records/holdout.json). Relative: to the "
        "pipeline file's folder (in --set: to the working dir). A run's record and MLflow params name it (relative to "
        "the checkout when inside it, so a record carries no machine's path; read back from the checkout, whatever "
        "the working dir) and its sha256."
    )
    use: Literal["exclude", "test"] = Field(
        default="exclude",
        description="exclude: leave the hold-out out entirely (its ids, and any other structure of a hold-out "
        "formula, leave the selection before rendering: no fold, validation carve-out, baseline or selection sees "
        "them; ids the snapshot lacks are ignored, with one INFO line). test: the hold-out is the test set, exactly, "
        "and training + validation are carved from every other structure as a fold's are (grouped by "
        "split.group_by, stratified by crystal system); run as one fold of a k-fold evaluation (pooled metrics, "
        "paired bootstrap intervals, train.seeds), so split.folds and split.leave_one_out stay unset. An error when "
        "none of the ids is selected; a WARNING when some are not tested (not selected, or rejected by the "
        "renderer), and the record counts both (holdout.n_ids, holdout.n_tested).",
    )


class SplitConfig(Section):
    """How images are split into train / validation / test."""

    protocol: Literal["image", "grouped"] = Field(
        default="grouped", description="image: the study's random split by image; grouped: by material_id."
    )
    group_by: Literal["material", "formula", "structure_cluster"] = Field(
        default="material",
        description="Grouped: what never crosses a split: one structure (material), every structure of one reduced "
        "formula, or structures pymatgen's StructureMatcher matches (structure_cluster; see data/clusters.py).",
    )
    test_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of structures (grouped) or images (image split) held out for test."
    )
    val_fraction: float = Field(default=0.2, gt=0, lt=1, description="Fraction of the non-test part.")
    seed: int = Field(default=0, description="Seed of the split and of the fold assignment.")
    folds: int | None = Field(
        default=None, ge=2, description="K-fold: each structure (grouped) or image tested once; see folds.py."
    )
    leave_one_out: bool = Field(default=False, description="One fold per structure (grouped; small snapshots).")
    test_only: StructureFilter | None = Field(
        default=None,
        description="K-fold over these structures only (e.g. nelements: 4); every other structure is always in "
        "training (train + validation).",
    )
    train_structures: int | None = Field(
        default=None,
        ge=1,
        description="K-fold: cut each fold's training + validation structures to this many together, in the "
        "fold's own train:val ratio (nested, class-balanced subsets; test unchanged). One point of a learning curve.",
    )

    holdout: HoldoutConfig | None = Field(
        default=None,
        description="A fixed structure hold-out that no selection touches (use: exclude), or the one test set of the "
        "final run (use: test); None: no hold-out.",
    )

    @field_validator("folds", "test_only", "train_structures", "holdout", mode="before")
    @classmethod
    def _none_string(cls, v: object) -> object:
        return _none_string(v)

    @model_validator(mode="after")
    def _holdout_test_alone(self) -> SplitConfig:
        if self.holdout is None or self.holdout.use != "test":
            return self
        clash = [k for k in ("folds", "leave_one_out", "test_only") if getattr(self, k)]
        if clash or self.protocol != "grouped":
            unset = [f"split.{k} (--set split.{k}={'false' if k == 'leave_one_out' else 'null'})" for k in clash]
            why = f"unset {', '.join(unset)}" if clash else "use split.protocol: grouped"
            raise ValueError(f"split.holdout.use: test makes the hold-out the one test set: {why}")
        return self
