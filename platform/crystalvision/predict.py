"""``crystalvision.predict(inputs, model=None, views=8)``: predict CIF or image paths, CIF text, pymatgen Structures
or images with a registered model, as ``crystalvision predict`` does (:func:`crystalvision.serve.face.predict`).

This module is that function (calling it calls the face), and it stands where the served model's module stood before
the package had rooms: a model registered then loads with ``from crystalvision.predict import CrystalVisionPyfunc``.
Those old names still resolve to :mod:`crystalvision.serve.predict`, with a ``FutureWarning``; they are removed in
0.2.0 (CHANGELOG, Deprecated): register such a model again.
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
    from crystalvision.serve import predict as moved

    if not hasattr(moved, name):
        raise missing
    _warnings.warn(
        f"crystalvision.predict.{name} is crystalvision.serve.predict.{name}; the old name is removed in 0.2.0: "
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
