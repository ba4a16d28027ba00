"""Fault injection for tests: an environment variable names where a process exits hard, once per run.

``CRYSTALVISION_TRAIN_FAULT=rank=1,epoch=2,step=1`` (train.py) and ``CRYSTALVISION_RENDER_FAULT=after=3``
(render/job.py) are parsed by :func:`parse_fault` into integers plus a marker file; the process that fires the
fault creates the marker first, so a restarted or re-launched run does not fire it again.
``CRYSTALVISION_TRAIN_FAULT=slow_ms=800`` makes every training step of rank 0 (or ``rank=``) 0.8 s longer instead:
a long epoch of honest work, without a long sleep anywhere.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from crystalvision.core import get_settings

log = logging.getLogger(__name__)


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


def train_fault(value: str | None, name: str, storage: tuple[str, Any, str]) -> dict[str, Any] | None:
    """The training fault hook for Ray Train run ``name`` (``storage`` = ``train.ray_storage(name)``), with the local
    run folder whose checkpoint snapshot the worker watches before it exits (None for remote storage)."""
    fault = parse_fault(value, name)
    if fault is not None:
        _, fs, run_dir = storage
        fault["run_dir"], fault["run_fs"] = run_dir, fs  # fs: the pyarrow filesystem of s3:// storage, else None
    return fault


def maybe_exit_worker(fault: dict[str, Any] | None, rank: int, epoch: int, step: int) -> None:
    """Exit the worker process hard at the configured point (test hook; once, guarded by a marker file), or slow
    every step down by ``slow_ms``."""
    if fault and fault.get("slow_ms"):
        if rank == fault.get("rank", 0):
            time.sleep(int(fault["slow_ms"]) / 1000)
        return
    if not fault or Path(fault["marker"]).exists():
        return
    if rank == fault.get("rank", 0) and epoch == fault.get("epoch", 0) and step >= fault.get("step", 0):
        Path(fault["marker"]).parent.mkdir(parents=True, exist_ok=True)
        Path(fault["marker"]).touch()
        log.warning("fault injection: rank %d exits at epoch %d step %d", rank, epoch, step)
        _wait_for_registered_checkpoint(fault.get("run_dir"), epoch, fault.get("run_fs"))
        os._exit(1)


def _wait_for_registered_checkpoint(run_dir: str | None, epoch: int, fs: Any = None, timeout_s: float = 120.0) -> None:
    """Block until Ray Train's controller has recorded the checkpoint of the epoch before ``epoch`` in its snapshot
    file (an event, not a guess at how long a busy machine needs); bounded. ``fs``: the storage's pyarrow
    filesystem (s3://), else the local disk."""
    if not run_dir or epoch < 1:
        return
    snapshot, wanted = f"{run_dir}/checkpoint_manager_snapshot.json", f"epoch_{epoch:05d}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wanted in _read_text(snapshot, fs):
            return
        time.sleep(0.1)


def _read_text(path: str, fs: Any) -> str:
    try:
        if fs is None:
            return Path(path).read_text(errors="replace")
        with fs.open_input_stream(path) as fh:
            return fh.read().decode(errors="replace")
    except (OSError, FileNotFoundError):
        return ""
