"""Serving: the logged pyfunc model, bounded prediction input, rendering for prediction, predictions for people (the
command line and the Python face, `crystalvision.load_model` and `crystalvision.predict`)."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "predict": "MODEL_ARTIFACT MODEL_DIR_ARTIFACT default_model_uri log_model predict_files",
        "present": "print_predictions",
        "server": "serve",
    },
    modules="face",
)
