"""Shared leaves: settings, pipeline configuration, targets, errors, logging, progress events, native-library order,
and the map of the rooms (:mod:`crystalvision.core.layers`)."""

from crystalvision.core.layers import door

__version__ = "0.1.0"
__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "config": "PipelineConfig",
        "config_data": "HoldoutConfig IngestConfig RenderConfig SnapshotConfig SplitConfig StructureFilter",
        "config_learning": "AugmentConfig EvaluateConfig TrainConfig",
        "errors": (
            "ConfigError CrystalVisionError ImageError MPError ModelError RenderError SnapshotError StorageError "
            "StructureError raised_in_worker"
        ),
        "logs": "mask setup_logging",
        "natives": "TORCH_COMMANDS load_torch_first",
        "pipeline_file": "deep_merge load_pipeline parse_overrides",
        "progress": "ProgressEvent",
        "settings": (
            "BUNDLED_SNAPSHOT CHECKOUT MPSettings PACKAGE_DIR StorageSettings bundled_snapshots from_checkout "
            "get_settings"
        ),
        "targets": (
            "BY_NAME CLASS_ID CLASS_NAME SCORE_METRICS TABLE TARGETS TARGETS_CLASSIFICATION TARGETS_REGRESSION "
            "TARGET_COLUMNS TARGET_LABEL_COLUMNS UNITS target"
        ),
        "uris": "mask_uris without_userinfo",
    },
    modules="layers progress",
)
__all__ += ["__version__", "door"]
