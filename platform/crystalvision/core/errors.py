"""Error types: each carries one clear message naming the item and the fix; the CLI prints it and exits 2."""

from __future__ import annotations

import re


class CrystalVisionError(Exception):
    """Base class for errors users can fix (bad input, missing data, missing credentials)."""


class ConfigError(CrystalVisionError):
    """A pipeline config or setting is invalid."""


class SnapshotError(CrystalVisionError):
    """A snapshot is missing, unreadable or inconsistent."""


class StructureError(CrystalVisionError):
    """A crystal structure cannot be parsed or fails validation."""


class MPError(CrystalVisionError):
    """The Materials Project query failed or returned nothing."""


class StorageError(CrystalVisionError):
    """Object storage is unreachable or an object is missing."""


class RenderError(CrystalVisionError):
    """A structure cannot be rendered (or the offscreen backend is unusable)."""


class ImageError(CrystalVisionError):
    """An input image is corrupt or of the wrong shape."""


class ModelError(CrystalVisionError):
    """A model folder or registered model is missing or inconsistent."""


# A crystalvision error raised in a Ray worker, as the text of the exception the driver gets shows it: the class's
# dotted path (``crystalvision.core.errors.StorageError``; ``crystalvision.errors.StorageError`` from a package of
# before the sub-packages), then its message.
_WORKER_LINE = re.compile(r"\s*crystalvision\.(?:\w+\.)*?errors\.(\w+): (.*)")


def raised_in_worker(exc: BaseException) -> CrystalVisionError | None:
    """The crystalvision error a Ray worker raised under ``exc``, re-created for the driver with its one-line
    message; None when it is not one of ours. Ray tasks keep the error object (``RayTaskError.cause``); Ray Data
    keeps only its text (a ``UserCodeException`` whose traceback ends with the error's class and message)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, CrystalVisionError) and type(err).__module__.startswith("crystalvision."):
            return err  # the error itself, not Ray's RayTaskError(StorageError), whose text is a traceback
        todo += [err.__cause__, err.__context__, getattr(err, "cause", None)]
    ours = {
        name: obj for name, obj in globals().items() if isinstance(obj, type) and issubclass(obj, CrystalVisionError)
    }
    for line in reversed(str(exc).splitlines()):
        match = _WORKER_LINE.match(line)
        if match and match.group(1) in ours:
            return ours[match.group(1)](match.group(2))
    return None
