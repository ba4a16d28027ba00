"""Fault injection for tests: an environment variable names where a process exits hard, once per run.

``CRYSTALVISION_TRAIN_FAULT=rank=1,epoch=2,step=1`` (train.py) and ``CRYSTALVISION_RENDER_FAULT=after=3``
(render/job.py) are parsed by :func:`parse_fault` into integers plus a marker file; the process that fires the
fault creates the marker first, so a restarted or re-launched run does not fire it again.
"""

from __future__ import annotations

from typing import Any

from crystalvision.settings import get_settings


def parse_fault(value: str | None, name: str) -> dict[str, Any] | None:
    """``"rank=1,epoch=2,step=1"`` -> ``{"rank": 1, "epoch": 2, "step": 1, "marker": <file>}``; None when unset.
    Integer values become ints, others stay text (``crash=mp-1``).

    ``name`` (a run name or store prefix; ``/`` becomes ``_``) makes the marker, so the fault fires once per run.
    """
    if not value:
        return None
    fault: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in value.split(","))):
        key, _, val = item.partition("=")
        fault[key.strip()] = int(val) if val.strip().lstrip("-").isdigit() else val.strip()
    fault["marker"] = str(get_settings().paths.home / "faults" / f"{name.replace('/', '_')}.done")
    return fault
