"""A logged run's model evaluated, gated against the champion and registered (challenger, champion)."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "registry": "register_and_promote",
        "runs": "evaluate_into_run evaluate_logged_run load_run_model",
    },
)
