"""The learning stages' sections of a pipeline file: training (``train`` with its ``augment``), evaluation
(``evaluate``), the sweep (``tune``), registration (``registry``) and learning curves (``learning_curve``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from crystalvision.core.config_data import Section, StructureFilter
from crystalvision.core.targets import TARGETS


class AugmentConfig(Section):
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


class TrainConfig(Section):
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


class EvaluateConfig(Section):
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
    graph_lr: float | None = Field(
        default=None,
        gt=0,
        description="Learning rate of the graph baseline; null: CGCNN's default, chosen on validation "
        "(docs/study/records/select-cgcnn.json).",
    )
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


class TuneConfig(Section):
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


class RegistryConfig(Section):
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


class LearningCurveConfig(Section):
    """`crystalvision curve`: the k-fold pipeline at nested subsets of each fold's training + validation structures,
    every point at the full fold's optimiser steps (see app/learning_curve.py)."""

    sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="Training + validation structures per fold at each point (cut in the fold's train:val ratio; "
        "every structure of the fold is always the last point).",
    )
