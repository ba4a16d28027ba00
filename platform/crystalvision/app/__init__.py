"""The front doors: the command line, the command table that Ray Jobs share, and the runs that span the stages
(pipeline, sweep, learning curve, scheduled retraining)."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "failure": "describe",
        "pipeline": "run_pipeline",
        "summary": "pipeline_summary registry_line",
    },
    modules="commands",
)
