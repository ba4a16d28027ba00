"""Serving: the served pyfunc model and its logging into MLflow, bounded prediction input, rendering for prediction,
predictions for people (the command line and the Python face: `crystalvision.load_model`, `crystalvision.predict`)."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "face": "default_model_uri predict_files",
        "mlflow_model": "MODEL_ARTIFACT log_model",
        "predict": "MODEL_DIR_ARTIFACT",
        "present": "print_predictions",
        "server": "serve",
    },
    modules="face",
)
