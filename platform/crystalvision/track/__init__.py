"""MLflow tracking: experiments and runs, rank-0 logging from Ray Train workers, run descriptions, model cards."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "card": "generalisation_from_record trust_text unmeasured_text",
        "recipe": "label_sources",
        "tracking": (
            "CHALLENGER CHAMPION PARENT_TAG TRIAL_TAG child_run close_child_runs configure_mlflow start_parent_run"
        ),
        "worker_logging": "worker_logger",
    },
    modules="recipe rundocs tracking",
)
