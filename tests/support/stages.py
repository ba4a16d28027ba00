"""Whether the pipeline stages written in parallel (render, train, evaluate, registry) are present yet."""

from __future__ import annotations

import importlib.util

STAGE_MODULES = ("crystalvision.render.job", "crystalvision.train", "crystalvision.evaluate", "crystalvision.registry")


def stages_available() -> bool:
    """True when every module the real retrain/pipeline needs is importable."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in STAGE_MODULES)
    except ModuleNotFoundError:
        return False
