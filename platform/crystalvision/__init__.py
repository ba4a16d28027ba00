"""crystalvision: learn material properties from rendered images of crystal structures.

From Python, a registered model's predictions (CIF or image paths, CIF text, pymatgen Structures, images), with the
columns, warnings and model card of the command line::

    import crystalvision

    model = crystalvision.load_model("lmno-efficientnet-b0-quickstart")  # a registered name (its champion) or URI
    frame = crystalvision.predict(["mp-25284.cif"], model)

The command line: ``crystalvision --help``. The package stands in rooms (sub-packages) in layers; the map below is
made from ``crystalvision.core.layers``.
"""

from typing import Any

from crystalvision.core import __version__
from crystalvision.core.layers import map_text

__doc__ = f"{__doc__}\n{map_text()}"
__all__ = ["__version__", "load_model", "predict"]


def __getattr__(name: str) -> Any:
    """The Python face, imported when first used (``import crystalvision`` loads neither torch nor VTK)."""
    if name == "load_model":
        from crystalvision.serve import face

        return face.load_model
    if name == "predict":
        import crystalvision.predict  # a callable module: the face's predict, and the old module name

        return crystalvision.predict
    raise AttributeError(f"module 'crystalvision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
