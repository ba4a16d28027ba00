"""``crystalvision.predict(inputs, model=None, views=8)``: predict CIF or image paths, CIF text, pymatgen Structures
or images with a registered model, as ``crystalvision predict`` does (:func:`crystalvision.serve.face.predict`).

This module is that function (calling it calls the face), and it stands where the served model's module stood before
the package had rooms: a model registered then loads with ``from crystalvision.predict import CrystalVisionPyfunc``.
Those old names still resolve to their homes in :mod:`crystalvision.serve` (:mod:`~crystalvision.serve.predict`, the
served model; :mod:`~crystalvision.serve.mlflow_model`, its logging; :mod:`~crystalvision.serve.face`, the file side),
with a ``FutureWarning``; they are removed in 0.2.0 (CHANGELOG, Deprecated): register such a model again.
"""

import inspect as _inspect
import sys as _sys
import types as _types
import warnings as _warnings
from typing import Any as _Any

from crystalvision.serve import face as _face

__signature__ = _inspect.signature(_face.predict)  # what help() and inspect show for crystalvision.predict(...)


def __getattr__(name: str) -> _Any:
    """An old name of the served model's module (``CrystalVisionPyfunc``, ...), with a FutureWarning."""
    missing = AttributeError(f"module 'crystalvision.predict' has no attribute {name!r}")
    if name.startswith("__"):  # inspect and pydoc ask for dunders: no need to load the served model's module
        raise missing
    import importlib

    # the old module's names now live in the served model, its MLflow logging, and the file side of the face
    homes = (importlib.import_module(f"crystalvision.serve.{m}") for m in ("predict", "mlflow_model", "face"))
    moved = next((home for home in homes if hasattr(home, name)), None)
    if moved is None:
        raise missing
    _warnings.warn(
        f"crystalvision.predict.{name} is {moved.__name__}.{name}; the old name is removed in 0.2.0: "
        "register the model again with this version (it then imports the new name)",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(moved, name)


class _CallableModule(_types.ModuleType):
    """This module, callable: ``crystalvision.predict(...)`` is the Python face's predict."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> _Any:
        return _face.predict(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
