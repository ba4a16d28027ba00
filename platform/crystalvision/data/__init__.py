"""Data: materials from the Materials Project, versioned snapshots, object storage, image shards, splits and folds.

The snapshots shipped with the package live here too, in ``snapshots/`` (``settings.SNAPSHOTS_DIR``).
"""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "clusters": "structure_clusters",
        "dataset": "Splits decode_png image_png load_images load_labels split_frame to_ray_dataset",
        "folds": (
            "FoldSplits aggregate_folds ceiling_metrics fold_splits mean_std_text n_folds_for nelements plan_text "
            "split_plan subset_folds"
        ),
        "holdout": (
            "Holdout apply_holdout describe_holdout holdout_file_path holdout_file_text holdout_split load_holdout "
            "make_holdout tests_on_holdout without_holdout write_holdout"
        ),
        "ingest": "ingest_from_mp write_mp_snapshot",
        "mp": "MP_LABEL_SOURCE database_version fetch_records query_dict",
        "png": "encode_png",
        "snapshot": (
            "MaterialRecord Selection Snapshot configured_snapshot content_hash describe load_selection load_snapshot"
        ),
        "storage": "ObjectStore filesystem_for is_s3 open_store without_credentials write_durably",
        "structures": "MAX_CIF_BYTES SYMMETRY_LABEL_SOURCE parse_cif precheck_cif structure_from_dict",
    },
    modules="shards",
)
