"""Evaluation of a trained model: metrics, baselines, out-of-fold scoring, leakage, saliency, plots, HTML report."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "baselines": "described",
        "evaluate": "EvalResult evaluate_model label_sources",
        "report": "write_folds_report",
    },
    modules="oof plots",
)
