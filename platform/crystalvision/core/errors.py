"""Error types: each carries one clear message naming the item and the fix; the CLI prints it and exits 2."""

from __future__ import annotations


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
