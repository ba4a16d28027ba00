"""The logged pyfunc model, as code (MLflow models-from-code): loading it runs this file, never unpickles an object.

``mlflow_model.log_model`` logs this file as ``python_model`` and the ``crystalvision`` package as ``code_paths``, so
the model needs only its pip requirements to load outside this checkout.
"""

import mlflow

from crystalvision.serve.predict import CrystalVisionPyfunc

mlflow.models.set_model(CrystalVisionPyfunc())
