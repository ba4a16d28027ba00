"""One table of commands: name -> function(cfg, **options) -> JSON-able result.

The two front doors are thin skins over it: ``cli.py`` (Typer: parse options, print the result as JSON) and
``jobs/*.py`` (Ray Jobs entrypoints: argparse, one JSON line on stdout). Stage modules are imported lazily so
``crystalvision --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crystalvision.core import TORCH_COMMANDS, PipelineConfig, load_torch_first

TRAIN_STAGES = ["snapshot", "render", "train"]


def ingest(cfg: PipelineConfig, out: str | Path | None = None) -> dict[str, str]:
    """Query the Materials Project (``cfg.ingest``) and write a snapshot; its folder."""
    from crystalvision.data import ingest_from_mp

    return {"snapshot": str(ingest_from_mp(cfg.ingest, out))}


def render(cfg: PipelineConfig) -> dict[str, Any]:
    """Snapshot + render; the render summary and where the images are (``render_uri``)."""
    from crystalvision.app.pipeline import run_render_stage
    from crystalvision.data import open_store

    store = open_store()
    result = run_render_stage(cfg, store)
    return result.summary() | {"render_uri": store.uri(result.prefix)}


def train(cfg: PipelineConfig) -> dict[str, Any]:
    """Render if needed, then train (no evaluation or registration); the pipeline summary."""
    from crystalvision.app.pipeline import run_pipeline

    return run_pipeline(cfg, stages=TRAIN_STAGES).summary()


def pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """The configured stages end to end; the pipeline summary."""
    from crystalvision.app.pipeline import run_pipeline

    return run_pipeline(cfg).summary()


def evaluate(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Evaluate a logged run on its own split and log the results into it."""
    from crystalvision.stages import evaluate_logged_run

    return evaluate_logged_run(cfg, run_id)


def tune(cfg: PipelineConfig) -> dict[str, Any]:
    """The sweep, then evaluate and register its best trial (as ``cfg.stages`` says)."""
    from crystalvision.app.tune import run_tune

    return run_tune(cfg)


def register(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Register a run's model as challenger; promote it only if better. The decision."""
    from crystalvision.promote import register_and_promote

    return register_and_promote(cfg, run_id)


def watch(cfg: PipelineConfig, force: bool = False) -> dict[str, Any]:
    """One watch cycle: retrain on a new Materials Project release."""
    from crystalvision.app.watch import watch_once

    return watch_once(cfg, force=force)


def curve(cfg: PipelineConfig, out: str | Path | None = None, sizes: list[str] | None = None) -> dict[str, Any]:
    """The learning curve (``cfg.learning_curve.sizes``): one k-fold pipeline per point without a record in ``out``
    (``sizes``: only these points); the merged record of every point there."""
    from crystalvision.app.learning_curve import run_learning_curve

    return run_learning_curve(cfg, out, sizes).summary()


COMMANDS: dict[str, Callable[..., Any]] = {
    "ingest": ingest,
    "render": render,
    "train": train,
    "pipeline": pipeline,
    "evaluate": evaluate,
    "tune": tune,
    "register": register,
    "watch": watch,
    "curve": curve,
}


def run(name: str, cfg: PipelineConfig, **options: Any) -> Any:
    """Run command ``name`` on ``cfg``; its JSON-able result. Commands that load torch load it first
    (:mod:`crystalvision.core.natives`: native libraries loaded before it once crashed MKL in the job driver)."""
    if name in TORCH_COMMANDS:
        load_torch_first()
    return COMMANDS[name](cfg, **options)
