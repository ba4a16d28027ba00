"""Run a pipeline config stage by stage: snapshot -> render -> train -> evaluate -> register.

This module and ``cli.py`` sit on top: they call into the stage modules, which never import upward.
One MLflow run covers one pipeline run; every stage logs into it. With ``split.folds`` (or
``split.leave_one_out``) that run is a parent: each fold (once per ``train.seeds`` seed) trains and evaluates in a
nested child run. The parent holds the pooled out-of-fold metrics and the paired bootstrap of the model against
each baseline (``oof.summarise`` over every fold's per-structure predictions, ``evaluation/oof_predictions.*``),
the folds' mean ± sample std (``folds.aggregate_folds``) and ``evaluation/folds_report.html``. A k-fold run is an
evaluation protocol: nothing is registered (train a plain split of the same config to register a model).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystalvision.core import PipelineConfig, progress
from crystalvision.data import ObjectStore
from crystalvision.stages import road
from crystalvision.track import label_sources, recipe, rundocs

if TYPE_CHECKING:
    from crystalvision.data import Selection, Snapshot
    from crystalvision.learn import Prepared
    from crystalvision.render import RenderResult

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """What a pipeline run produced."""

    name: str
    snapshot_id: str
    snapshot_sha256: str
    n_structures: int
    dropped_flagged: list[str]
    render: RenderResult | None = None
    run_id: str | None = None
    model_dir: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    report_path: str | None = None
    experiment_id: str | None = None
    label_source: str | None = None
    pooled: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # track.recipe: what a model card's record must share
    holdout: dict[str, Any] = field(default_factory=dict)  # split.holdout: file, sha256, use, n_ids, n_tested...
    oof_table: Any = None  # k-fold: the pooled per-structure prediction table (pandas), not in the summary

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the wall time of one stage (and tell progress listeners when it starts and is over)."""
        progress.beat(stage, step="start")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - start, 3)
            log.info("stage %s took %.1f s", stage, self.stage_seconds[stage])
        progress.finish(stage, seconds=self.stage_seconds[stage])

    def summary(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "snapshot_id": self.snapshot_id,
            "snapshot_sha256": self.snapshot_sha256,
            "n_structures": self.n_structures,
            "n_dropped_flagged": len(self.dropped_flagged),
            "render": self.render.summary() if self.render is not None else None,
            "run_id": self.run_id,
            "model_dir": self.model_dir,
            "metrics": self.metrics,
            "registry": self.registry,
            "stage_seconds": self.stage_seconds,
            "report_path": self.report_path,
            "experiment_id": self.experiment_id,
            "label_source": self.label_source,
            "pooled": self.pooled,
            "recipe": self.recipe,
            **({"holdout": self.holdout} if self.holdout else {}),
        }


def run_render_stage(cfg: PipelineConfig, store: ObjectStore | None = None) -> RenderResult:
    """Snapshot + render only; returns the render result."""
    return road.render_records(cfg, store)[2]


def run_pipeline(cfg: PipelineConfig, stages: list[str] | None = None) -> PipelineResult:
    """Run the configured stages and return what they produced: the road (:func:`crystalvision.stages.road.prepare`,
    or the part of it the stages ask for) once, then training, evaluation and registration on what it prepared."""
    stages = list(stages or cfg.stages)
    if "train" not in stages:
        if "render" in stages:
            return _made(cfg, *road.render_records(cfg))
        return _made(cfg, *road.select_records(cfg))
    from crystalvision.track import configure_mlflow

    configure_mlflow()  # the tracking server answers (or the one-line error) before anything is read or rendered
    prepared = road.prepare(cfg, card=True)  # a fold count or card record the selection cannot meet: refused first
    result = _made(cfg, prepared.snapshot, prepared.selection, prepared.render)
    if road.is_kfold(cfg.split):
        _run_folds(prepared, stages, result)
    else:
        _train_evaluate_register(prepared, stages, result)
    return result


def _made(
    cfg: PipelineConfig, snap: Snapshot, selection: Selection, rendered: RenderResult | None = None
) -> PipelineResult:
    """The result of the road: what the snapshot selected and, when rendered, the render and its seconds."""
    result = PipelineResult(
        name=cfg.name,
        snapshot_id=snap.manifest.snapshot_id,
        snapshot_sha256=snap.manifest.content_sha256,
        n_structures=len(selection.records),
        dropped_flagged=selection.dropped_flagged,
        render=rendered,
        label_source=label_sources(snap.manifest),
        recipe=recipe.recipe(cfg),
    )
    if cfg.split.holdout is not None:
        from crystalvision.data import describe_holdout

        left_out = len(getattr(selection, "held_out", []))
        result.holdout = describe_holdout(cfg.split) | {"n_left_out_of_selection": left_out}
    if rendered is not None:
        result.stage_seconds["render"] = round(rendered.timings["total_s"], 3)
    return result


def _train_evaluate_register(prepared: Prepared, stages: list[str], result: PipelineResult) -> None:
    """Train, evaluate, log and register one model; ``prepared.card`` (the measured generalisation, or {}) goes into
    its ``model.json`` and the registered version's description. Registration re-evaluates a champion of another
    split on ``prepared``: the data is not prepared again."""
    from crystalvision.learn import load_model, train_model
    from crystalvision.serve import log_model
    from crystalvision.track import tracking

    cfg, snap, card = prepared.cfg, prepared.snapshot, prepared.card
    with tracking.start_run(run_name=cfg.name, tags=tracking.pipeline_tags(cfg, snap)) as run:
        result.run_id, result.experiment_id = run.info.run_id, run.info.experiment_id
        tracking.log_pipeline_context(cfg, snap, prepared.selection, prepared.render, prepared.splits)
        _log_datasets(prepared)
        with result.timed("train"):
            trained = train_model(prepared, run_id=run.info.run_id)
        result.model_dir = str(trained.model_dir)
        result.metrics.update(trained.metrics)
        if card:
            _write_card(trained.model_dir, card)
        if "evaluate" in stages:
            from crystalvision.stages import runs

            progress.emit("evaluate", 0, None)
            with result.timed("evaluate"):
                evaluated = runs.evaluate_into_run(load_model(trained.model_dir), prepared)
            result.metrics.update(evaluated.metrics)
            result.report_path = str(evaluated.artifacts_dir / "report.html")
        with result.timed("log_model"):
            log_model(trained.model_dir, prepared.splits, prepared.store)
        rundocs.describe_run(
            result.run_id, rundocs.run_description(cfg, snap, prepared.splits.describe(), result.metrics)
        )
    if "register" in stages and cfg.registry.enabled:
        from crystalvision.promote import register_and_promote

        progress.emit("register", 0, None)
        with result.timed("register"):
            result.registry = register_and_promote(cfg, result.run_id, prepared=prepared)
            rundocs.describe_model(
                cfg.registry.model_name,
                str(result.registry["challenger_version"]),
                cfg,
                snap,
                prepared.splits.describe(),
                result.metrics,
                result.registry,
                card,
            )


def _write_card(model_dir: Any, card: dict[str, Any]) -> None:
    """Put the measured generalisation into the model card (``model.json``), atomically."""
    from crystalvision.data import write_durably

    path = Path(model_dir) / "model.json"  # model.SPEC_FILE (model.py imports torch)
    spec = json.loads(path.read_text())
    spec["generalisation"] = card
    write_durably(str(path), json.dumps(spec, indent=1).encode())


def _log_datasets(prepared: Prepared) -> None:
    """The snapshot and the rendered labels table as MLflow datasets of the active run (best effort)."""
    from crystalvision.data import load_labels

    try:
        labels = load_labels(prepared.store, prepared.labels_key)
        digest = (prepared.render.manifest.get("render_config_hash", "") if prepared.render else "")[:32] or None
        rundocs.log_datasets(
            prepared.snapshot, prepared.selection, labels, prepared.store.uri(prepared.labels_key), digest
        )
    except Exception:  # provenance for the UI must never fail a training run
        log.warning("could not log the datasets of this run", exc_info=True)


# ------------------------------------------------------------------------------------------------- k-fold

KFOLD_REGISTRY_NOTE = "k-fold runs are an evaluation protocol: no model registered (run the config without folds)"


def _seeded(fold: Prepared, seed: int) -> Prepared:
    """One fold's inputs trained with ``seed`` (its own copy of the model spec)."""
    cfg = fold.cfg
    if seed == cfg.train.seed:
        return fold.with_spec_copy()
    train = cfg.train.model_copy(update={"seed": seed})
    return fold.with_config(cfg.model_copy(update={"train": train})).with_spec_copy()


def _run_folds(prepared: Prepared, stages: list[str], result: PipelineResult) -> None:
    """Parent MLflow run; one child run per fold and seed (train + evaluate); pooled out-of-fold metrics, paired
    bootstrap comparisons and the folds' mean ± std logged on the parent."""
    import pandas as pd

    from crystalvision.data import aggregate_folds
    from crystalvision.evaluate import oof
    from crystalvision.track import tracking

    cfg, snap = prepared.cfg, prepared.snapshot
    folds = prepared.fold_inputs()  # made by the road from its one read of the labels table
    seeds = list(dict.fromkeys(cfg.train.seeds or [cfg.train.seed]))
    with tracking.start_run(run_name=cfg.name, tags=tracking.pipeline_tags(cfg, snap) | {"kfold": "parent"}) as run:
        result.run_id = run.info.run_id
        tracking.log_pipeline_context(cfg, snap, prepared.selection, prepared.render)
        per_fold, described, tables = [], [], []
        for seed in seeds:
            for fold in folds:
                metrics, info, table = _run_one_fold(_seeded(fold, seed), stages, result, run.info.run_id, len(seeds))
                per_fold.append(metrics)
                described.append(info)
                if table is not None:
                    tables.append(oof.tag(table, info["fold"], seed))
        aggregated = aggregate_folds(per_fold)  # over every fold and seed: `<metric>_n` counts child runs
        aggregated |= {"n_folds": float(len(folds)), "n_seeds": float(len(seeds))}
        result.metrics.update(aggregated)
        pooled = pd.concat(tables, ignore_index=True) if tables else None
        if pooled is not None:
            from crystalvision.evaluate import described as baselines_described

            ecfg = cfg.evaluate
            subsets = {name: f.nelements for name, f in ecfg.subsets.items()}
            summary = oof.summarise(pooled, subsets, n_resamples=ecfg.bootstrap_resamples, seed=ecfg.bootstrap_seed)
            result.metrics.update(summary)
            result.oof_table = pooled
            result.pooled = {"seeds": seeds, "bootstrap": "paired over structures; seed-averaged metric per resample",
                             "group_by": cfg.split.group_by, "baselines": baselines_described(ecfg),
                             "metrics": summary}  # fmt: skip
        if result.holdout.get("use") == "test" and described:  # the hold-out ids the renderer kept, tested
            result.holdout["n_tested"] = described[0]["n_structures_test"]
        _log_folds_summary(prepared, per_fold, aggregated, described, pooled, result.pooled, result.holdout)
    if "register" in stages and cfg.registry.enabled:
        log.info(KFOLD_REGISTRY_NOTE)
        result.registry = {"registered": False, "reason": KFOLD_REGISTRY_NOTE}


def _run_one_fold(
    prepared: Prepared, stages: list[str], result: PipelineResult, parent_id: str, n_seeds: int = 1
) -> tuple[dict[str, float], dict[str, Any], Any]:
    """Train (and evaluate) one fold in a nested child run; its metrics, a description of the fold and its
    per-structure out-of-fold prediction table (None without evaluation)."""
    import mlflow

    from crystalvision.data import ceiling_metrics
    from crystalvision.learn import load_model, train_model
    from crystalvision.serve import log_model
    from crystalvision.track import tracking

    cfg, splits = prepared.cfg, prepared.splits
    i, k = getattr(splits, "fold", 0), getattr(splits, "n_folds", 1)
    seed = cfg.train.seed
    unseen = {col: ", ".join(v) for col, v in getattr(splits, "unseen_classes", {}).items() if v}
    tags = tracking.pipeline_tags(cfg, prepared.snapshot)
    tags |= {"kfold": "child", "fold": str(i), "kfold_parent": parent_id, "train_seed": str(seed)}
    name = f"{cfg.name}-fold{i}" + (f"-seed{seed}" if n_seeds > 1 else "")
    table = None
    with tracking.start_run(run_name=name, tags=tags, nested=True) as run:
        tracking.log_pipeline_context(cfg, prepared.snapshot, prepared.selection, prepared.render, splits)
        mlflow.log_dict({"unseen_test_classes": getattr(splits, "unseen_classes", {})}, "folds/unseen_classes.json")
        ceiling = ceiling_metrics(splits.train, splits.test)
        mlflow.log_metrics(ceiling)
        with result.timed(f"train_fold{i}" + (f"_seed{seed}" if n_seeds > 1 else "")):
            trained = train_model(prepared, run_id=run.info.run_id)  # named by content + fold: resumable
        metrics = dict(trained.metrics) | ceiling
        if "evaluate" in stages:
            from crystalvision.stages import runs

            with result.timed(f"evaluate_fold{i}" + (f"_seed{seed}" if n_seeds > 1 else "")):
                evaluated = runs.evaluate_into_run(load_model(trained.model_dir), prepared)
            metrics |= evaluated.metrics
            table = evaluated.oof
        with result.timed(f"log_model_fold{i}" + (f"_seed{seed}" if n_seeds > 1 else "")):
            log_model(trained.model_dir, splits, prepared.store)
    log.info("fold %d (of 0-%d, seed %d): test_score %s", i, k - 1, seed, metrics.get("test_score"))
    info = {"fold": i, "seed": seed, "run_id": run.info.run_id, **splits.describe()}
    info |= {f"unseen_test_classes_{col}": v for col, v in unseen.items()}
    return metrics, info, table


def _log_folds_summary(
    prepared: Prepared,
    per_fold: list[dict[str, float]],
    aggregated: dict[str, float],
    folds: list[dict],
    table: Any = None,
    pooled: dict[str, Any] | None = None,
    holdout: dict[str, Any] | None = None,
) -> None:
    """Pooled and mean ± std metrics, per-fold table, the pooled prediction table (``oof_predictions.parquet`` /
    ``.csv``) and ``evaluation/folds_report.html`` (worded for the hold-out with ``holdout``'s ``use: test``) into
    the active (parent) run."""
    import tempfile
    from pathlib import Path

    import mlflow

    from crystalvision.evaluate import label_sources, oof, write_folds_report

    pooled = pooled or {}
    mlflow.log_metrics(aggregated | pooled.get("metrics", {}))
    with tempfile.TemporaryDirectory(prefix="crystalvision-folds-") as tmp:
        out = Path(tmp)
        summary = {"per_fold": per_fold, "aggregated": aggregated, "folds": folds, "pooled": pooled}
        (out / "folds.json").write_text(json.dumps(summary))
        if table is not None:
            oof.write(table, out)
        write_folds_report(
            out / "folds_report.html",
            per_fold=per_fold,
            aggregated=aggregated,
            folds=folds,
            label_source=label_sources(prepared.splits, prepared.spec),
            pooled=pooled.get("metrics", {}),
            holdout=holdout,
        )
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
