"""The road: a pipeline config to the prepared inputs of every stage, and a logged run back to its model and inputs."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "road": "from_labels is_kfold model_card plan_folds prepare render_records select_records split_clusters",
        "runs": (
            "EVALUATED_PREFIX SELECTION_METRIC SELECTION_SPLIT evaluate_into_run evaluate_logged_run evaluated_metrics "
            "evaluated_value load_run_model log_evaluation selection_score"
        ),
    },
    modules="road runs",
)
