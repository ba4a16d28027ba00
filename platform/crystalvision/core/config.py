"""Pipeline configuration: YAML files in ``pipelines/`` validated by pydantic (unknown keys are errors)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crystalvision.core.settings import bundled_snapshots
from crystalvision.core.targets import TARGETS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION  # noqa: F401 (re-exported)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SnapshotConfig(_Strict):
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


class IngestConfig(_Strict):
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


class RenderConfig(_Strict):
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


class StructureFilter(_Strict):
    """Structures picked by what they are made of (``nelements: 4``: the quaternaries)."""

    nelements: int = Field(ge=1, description="Number of distinct elements in the formula.")


def _none_string(v: object) -> object:
    """MLflow logs None as "None": read it back as None (evaluate rebuilds splits from logged params)."""
    return None if isinstance(v, str) and v.strip().lower() in ("none", "null", "") else v


class SplitConfig(_Strict):
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

    @field_validator("folds", "test_only", "train_structures", mode="before")
    @classmethod
    def _none_string(cls, v: object) -> object:
        return _none_string(v)


class AugmentConfig(_Strict):
    """Geometric training augmentation that keeps colour (colour encodes the element); see augment.py."""

    enabled: bool = Field(default=False, description="Turn geometric augmentation on.")
    rotate: Literal["none", "right_angles", "any"] = Field(
        default="any", description="In-plane rotation: none, multiples of 90 degrees, or any angle."
    )
    flip: bool = Field(default=True, description="Random horizontal and vertical flips.")
    scale: tuple[float, float] = Field(default=(0.9, 1.1), description="Random zoom range (1 = unchanged).")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {v}")
        return v


class TrainConfig(_Strict):
    """Model and optimisation."""

    backbone: str = Field(default="efficientnet_b0", description="timm model name of the backbone.")
    pretrained_checkpoint: str | None = Field(default=None, description="Local backbone weights (no downloads).")
    epochs: int = Field(default=100, ge=1, description="Epoch cap.")
    batch_size: int = Field(
        default=16, ge=1, description="Images per step and worker (the global batch is num_workers x batch_size)."
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate (not scaled with the number of workers).")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay.")
    patience: int = Field(default=30, ge=1, description="Early stopping: epochs without a better train.select value.")
    select: Literal["val_loss", "val_score"] = Field(
        default="val_loss",
        description="What early stopping and the kept weights follow: val_loss (the weighted sum of the heads' "
        "validation losses) or val_score (the mean of the weighted heads' validation accuracy / R², the goal's "
        "measure; one spike in a regression head's loss cannot end a run whose accuracy still rises).",
    )
    select_window: int = Field(
        default=1, ge=1, description="Moving mean over this many epochs of train.select before comparing epochs."
    )
    schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Learning rate per epoch: constant, or cosine decay from lr to lr/100 over train.epochs (a fixed "
        "budget; pair it with a patience of at least train.epochs).",
    )
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(TARGETS, 1.0), description="Weight of each head's loss."
    )
    num_workers: int = Field(default=1, ge=1, description="Ray Train data-parallel workers.")
    cpus_per_worker: float = Field(
        default=1.0,
        gt=0,
        description="CPUs per Ray Train worker; a CPU worker runs int(cpus_per_worker) torch threads.",
    )
    use_gpu: bool = Field(default=False, description="One GPU per Ray Train worker (NCCL).")
    amp: bool = Field(default=True, description="Mixed precision when on GPU (ignored on CPU).")
    max_failures: int = Field(default=1, ge=0, description="Worker failures tolerated (resume from checkpoint).")
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="Cap steps (tiny test runs).")
    steps_per_epoch: int | None = Field(
        default=None,
        ge=1,
        description="Optimiser steps per epoch, cycling through the training images (reshuffled each pass): a "
        "budget that does not grow with the training set (learning curves). None: one pass per epoch.",
    )
    step_mode: Literal["auto", "eager", "graphs", "compile"] = Field(
        default="auto",
        description="Train step: one CUDA graph per step (GPU), torch.compile, or eager (auto: "
        "graphs on one GPU without GradScaler, else eager; eager on CPU, where compile is inductor's CPU backend).",
    )
    channels_last: bool = Field(default=True, description="Channels-last layout of model and batches (GPU and CPU).")
    cudnn_benchmark: bool = Field(
        default=False, description="Autotune cuDNN convolutions on GPU (costs ~40 s at the first step per shape)."
    )
    device_data: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Keep each worker's decoded uint8 images on the GPU after the first epoch "
        "(auto: on GPU when the split fits in 4 GiB per worker, in host memory on CPU up to host_data_max_mb; "
        "else streamed and decoded again every epoch).",
    )
    host_data_max_mb: float = Field(
        default=1024, ge=0, description="device_data=auto: a CPU worker's memory budget for its decoded images."
    )
    seed: int = Field(default=0, description="Seed of weights, shuffling and augmentation.")
    seeds: list[int] | None = Field(
        default=None, description="K-fold: train every fold once per seed (headline rows: 3 or more); None: seed."
    )
    pretrained: Literal["imagenet"] | None = Field(
        default=None, description="imagenet: timm's own pretrained weights (from its cache; see augment/model)."
    )
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig())
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="Label smoothing of the class heads.")

    @field_validator("loss_weights")
    @classmethod
    def _known_targets(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(TARGETS)
        if unknown:
            raise ValueError(f"unknown loss weight keys {sorted(unknown)}; allowed: {list(TARGETS)}")
        return {t: float(v.get(t, 1.0)) for t in TARGETS}


class EvaluateConfig(_Strict):
    """Evaluation and explainability."""

    stability_threshold: float = Field(default=0.025, description="e_hull (eV/atom) at or below which 'stable'.")
    saliency: bool = Field(default=True, description="SmoothGrad saliency maps in the report.")
    saliency_noise: float = Field(
        default=0.05, ge=0, description="SmoothGrad noise std in [0, 1] pixel units (the study's 0.05)."
    )
    saliency_samples: int = Field(default=16, ge=1, description="Noisy samples per SmoothGrad map.")
    baselines: bool = Field(
        default=True, description="Majority/mean, 1-NN, tabular tree ensemble and symmetry baselines on the same split."
    )
    symmetry_symprec: float = Field(
        default=0.1, gt=0, description="spglib tolerance (Å) of the symmetry baseline; the labels used 0.1."
    )
    batch_size: int = Field(default=64, ge=1, description="Images per inference batch.")
    tta: Literal["none", "dihedral"] = Field(
        default="none",
        description="Test-time augmentation: dihedral averages each image over its 8 exact "
        "in-plane views (rotations by 90 degrees and mirrors; 8x the inference work).",
    )
    include_val: bool = Field(default=True, description="Also report metrics on the validation split.")
    leakage: bool = Field(
        default=True, description="Report section: SSIM of each test image to its nearest training image (leakage.py)."
    )
    leakage_size: int = Field(default=32, ge=8, le=256, description="Pixels (grey, downsampled) of the leakage SSIM.")
    graph_baseline: bool = Field(
        default=False, description="Also train the CGCNN graph baseline (graphnet.py) on the same split and report it."
    )
    graph_epochs: int = Field(default=300, ge=1, description="Epoch cap of the graph baseline (early stopping).")
    graph_size: Literal["reference", "small"] = Field(
        default="reference",
        description="Graph baseline size: reference = published CGCNN (3 convolutions, 64 atom features, 128 "
        "hidden); small = 2 x 32 (tests and quick checks only, never a reported baseline).",
    )
    subsets: dict[str, StructureFilter] = Field(
        default_factory=dict,
        description="K-fold: pooled metrics also on these subsets, e.g. quaternary: {nelements: 4}.",
    )
    bootstrap_resamples: int = Field(
        default=2000, ge=10, description="K-fold: resamples of structures in the paired model-vs-baseline bootstrap."
    )
    bootstrap_seed: int = Field(default=0, description="Seed of the paired bootstrap.")


class TuneConfig(_Strict):
    """Hyper-parameter sweep."""

    num_samples: int = Field(default=8, ge=1, description="Trials in the sweep.")
    max_concurrent: int = Field(default=2, ge=1, description="Trials running at once.")
    lr_min: float = Field(default=1e-4, gt=0, description="Lower end of the learning-rate search range.")
    lr_max: float = Field(default=3e-3, gt=0, description="Upper end of the learning-rate search range.")
    loss_weight_range: tuple[float, float] = Field(
        default=(0.5, 2.0), description="Search range of each head's loss weight."
    )
    metric: str = Field(default="val_loss", description="Metric the sweep optimises.")
    mode: Literal["min", "max"] = Field(default="min", description="Minimise or maximise tune.metric.")
    search: Literal["random", "optuna"] = Field(default="optuna", description="Search algorithm.")
    grace_period: int = Field(default=1, ge=1, description="ASHA: epochs before a trial can be stopped.")


# Validation metric kinds where lower is better, or that are no score at all: refused as registry.promote_metric.
_LOWER_IS_BETTER = ("loss", "mse_", "mae_", "rmse_", "ce_")
_NOT_A_SCORE = ("n_", "stability_frac_stable")


class RegistryConfig(_Strict):
    """Model registry and promotion gate."""

    model_name: str = Field(default="lmno-efficientnet-b0", description="Registered model name in MLflow.")
    enabled: bool = Field(default=True, description="Register the trained model at all.")
    promote_metric: str = Field(
        default="val_score",
        description="Higher is better; a validation metric (val_*) of the evaluated model, never test, never a loss "
        "or error (val_loss, val_mse_*, val_mae_*, val_ce_*); registry.py.",
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="How much better than the champion a challenger must be to be promoted."
    )
    generalisation_record: str | None = Field(
        default=None,
        description="The --json record of a grouped k-fold run of the same recipe on the same snapshot (e.g. "
        "docs/study/records/space-grouped.json; relative: to the pipeline file's folder): its pooled out-of-fold "
        "metrics go into the model card (model.json, the MLflow description) and beside every prediction.",
    )

    @field_validator("promote_metric")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v.startswith(("test", "cgcnn_test", "baseline")):
            raise ValueError(
                f"registry.promote_metric '{v}' is scored on the test split that reports show; promotion must use "
                "validation data: use val_score or another val_* metric"
            )
        if not v.startswith("val_"):
            raise ValueError(
                f"registry.promote_metric '{v}' is not a validation metric of the evaluated model; use val_score or "
                "another val_* metric (val_r2_<target>, val_acc_<target>, val_struct_acc_<target>, ...)"
            )
        kind = v.removeprefix("val_").removeprefix("struct_")
        if kind.startswith(_LOWER_IS_BETTER) or kind.startswith(_NOT_A_SCORE) or kind in ("loss", "n"):
            raise ValueError(
                f"registry.promote_metric '{v}' is not higher-is-better (a loss, error or count), but promotion "
                "keeps the higher value; use val_score, or a val_r2_<target> / val_acc_<target> metric"
            )
        return v


class LearningCurveConfig(_Strict):
    """`crystalvision curve`: the k-fold pipeline at nested subsets of each fold's training + validation structures,
    every point at the full fold's optimiser steps (see app/learning_curve.py)."""

    sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="Training + validation structures per fold at each point (cut in the fold's train:val ratio; "
        "every structure of the fold is always the last point).",
    )


class PipelineConfig(_Strict):
    """A whole pipeline: snapshot -> render -> train -> evaluate -> register."""

    name: str = Field(description="Pipeline name: MLflow run names, registered model tags and the summary use it.")
    description: str = Field(default="", description="One line about the pipeline, shown on its MLflow run page.")
    stages: list[Literal["snapshot", "render", "train", "evaluate", "register"]] = Field(
        default_factory=lambda: ["snapshot", "render", "train", "evaluate", "register"],
        description="Stages `crystalvision pipeline run` runs, in order.",
    )
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    learning_curve: LearningCurveConfig = Field(default_factory=LearningCurveConfig)

    def config_hash(self) -> str:
        """Stable hash of the resolved config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
