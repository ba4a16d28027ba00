"""Model registry: one registered model per pipeline, aliases ``challenger`` (newest) and ``champion`` (best).

:func:`register_and_promote` registers ``runs:/<run_id>/model`` and always points ``challenger`` at the new
version. ``champion`` moves to it only when it beats the champion on ``cfg.registry.promote_metric`` (higher is
better; a validation metric, by default ``val_score``, never a test metric or a loss) by more than
``min_improvement`` on the same split, as the evaluation of each run's registered model logged it
(``model/<metric>``, :data:`crystalvision.stages.EVALUATED_PREFIX`; never the last training epoch's value of
the same name); a tie keeps the champion, the first version becomes champion. When both runs logged predictions per
structure, the per-target gate (:mod:`crystalvision.promote.gate`: paired bootstrap on the validation structures,
Holm-corrected over the heads) decides instead. Promotion never reads the test rows that reports show. When the two
runs were evaluated on different splits (different snapshot, render or split parameters), or the champion's run
has no evaluation of its model, the champion is re-evaluated on the challenger's split first (on the data the caller
prepared, else prepared again from ``cfg``); if that is impossible the logged metrics are compared and the reason is
recorded. Every decision is logged, tagged on the run and the model version, and written as
``registry/decision-v<version>.json`` into the challenger's run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from crystalvision.core import CrystalVisionError, ModelError, PipelineConfig, progress
from crystalvision.promote import gate
from crystalvision.promote.registry_cas import (
    newest_forward,
    promotion_lock,
    register_once,
    set_tag_racing,
    versions_of_run,
)
from crystalvision.stages import SELECTION_METRIC, evaluated_value, selection_score
from crystalvision.track import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from crystalvision.learn import Prepared

log = logging.getLogger(__name__)

DECISION_TAG = "crystalvision.registry.decision"
# Run params/tags that identify the held-out test set (as tracking.log_pipeline_context logs them): snapshot
# content, which structures were selected, how they were rendered and split.
_SPLIT_KEYS = ("snapshot_sha256", "render.render_prefix", "render.render_config_hash", "split.n_images_test")
_SPLIT_PREFIXES = ("cfg.snapshot.", "cfg.render.", "cfg.split.")
# Settings that change how fast or how robustly a render runs, never which images exist.
_SPLIT_IGNORED_SUFFIXES = (
    "num_workers",
    "cpus_per_worker",
    "structure_timeout_s",
    "max_actor_restarts",
    "max_task_retries",
    "retry_quarantined",
)

# (cfg, champion version, metric) -> champion's metric on the challenger's test split
ChampionEvaluator = Callable[[PipelineConfig, ModelVersion, str], float]


def held_out_fingerprint(run: Run) -> dict[str, str]:
    """The params/tags of a run that determine its test set (empty when none were logged)."""
    items = {**run.data.params, **run.data.tags}
    return {
        k: v
        for k, v in sorted(items.items())
        if (k in _SPLIT_KEYS or k.startswith(_SPLIT_PREFIXES)) and not k.endswith(_SPLIT_IGNORED_SUFFIXES)
    }


def decide(challenger: float | None, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """Promote only when the challenger beats the champion by more than ``min_improvement`` (higher is better)."""
    if challenger is None:
        return False, "the challenger has no value for the promotion metric; evaluate it first"
    if champion is None:
        return False, "the champion has no value for the promotion metric on this split; keeping it"
    if challenger > champion + min_improvement:
        return True, f"challenger {challenger:.6g} > champion {champion:.6g} + min_improvement {min_improvement:g}"
    return False, f"challenger {challenger:.6g} <= champion {champion:.6g} + min_improvement {min_improvement:g}"


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _metric(run: Run, metric: str) -> float | None:
    """``metric`` of the run's own model as its evaluation logged it (``model/<metric>``, never a training epoch's
    value of the same name); None when the run's model was never evaluated."""
    return evaluated_value(run.data.metrics, metric)


def align_class_ids(splits: Any, classes: dict[str, list[str]]) -> Any:
    """The splits with every class-id column re-derived from the class *name* through ``classes`` (the model's
    class lists), so a snapshot whose class list changed (a space group added, ids shifted) is scored against the
    model's own classes. A class the model does not know raises :class:`ModelError` naming it."""
    from crystalvision.core import CLASS_ID, CLASS_NAME

    frames = {}
    for part, df in splits.items():
        df = df.copy()
        for target, names in classes.items():
            index = {name: i for i, name in enumerate(names)}
            unknown = sorted(set(map(str, df[CLASS_NAME[target]])) - set(index))
            if unknown:
                raise ModelError(
                    f"the champion has no {target} class {unknown} that the {part} split contains; it cannot be "
                    "re-evaluated on this snapshot (its logged metrics are compared instead)"
                )
            df[CLASS_ID[target]] = df[CLASS_NAME[target]].astype(str).map(index).astype(int)
        frames[part] = df
    return dataclasses.replace(splits, **frames)


def evaluate_champion_on(
    cfg: PipelineConfig, champion: ModelVersion, metric: str, prepared: Prepared | None = None
) -> float:
    """Re-evaluate the champion's model on the test split ``cfg`` describes (the challenger's split: ``prepared``,
    the data the caller holds, else prepared from ``cfg`` here), with class ids aligned to the champion's class lists
    by name."""
    from crystalvision.evaluate import evaluate_model
    from crystalvision.stages import load_run_model, prepare

    progress.beat("register", step="re-evaluate champion: data")
    prepared = prepared or prepare(cfg)
    with tempfile.TemporaryDirectory(prefix="crystalvision-champion-") as tmp:
        progress.beat("register", step="re-evaluate champion: model")
        model = load_run_model(champion.run_id, Path(tmp) / "model")
        if model.spec.image_size != cfg.render.image_size:
            raise ModelError(
                f"champion v{champion.version} expects {model.spec.image_size} px images, the challenger's test "
                f"split has {cfg.render.image_size} px"
            )
        splits = align_class_ids(prepared.splits, model.spec.class_lists())
        out = Path(tmp) / "eval"
        metrics = evaluate_model(model, splits, prepared.store, cfg, out, records=prepared.records).metrics
    if metric == SELECTION_METRIC and metric not in metrics:
        value = selection_score(metrics)
        if value is None:
            raise ModelError(f"the champion's evaluation has no validation metrics for '{metric}' (no val split?)")
        return value
    if metric not in metrics:
        raise ModelError(f"evaluation produced no '{metric}'; set registry.promote_metric to one of {sorted(metrics)}")
    return float(metrics[metric])


def _champion_value(
    cfg: PipelineConfig, champion: ModelVersion, champion_run: Run, challenger_run: Run, evaluator: ChampionEvaluator
) -> tuple[float | None, dict[str, Any]]:
    """The champion's metric on the challenger's held-out split, and how it was obtained."""
    metric = cfg.registry.promote_metric
    mine, theirs = held_out_fingerprint(challenger_run), held_out_fingerprint(champion_run)
    logged = _metric(champion_run, metric)
    if mine and mine == theirs and logged is not None:
        return logged, {"same_split": True, "comparison": "logged metrics (same held-out split)"}
    why = "different held-out split" if mine and theirs else "held-out split not logged on both runs"
    if logged is None:
        why = f"champion run has no '{metric}'"
    try:
        value = evaluator(cfg, champion, metric)
    except (ImportError, CrystalVisionError, MlflowException, OSError) as exc:
        log.warning("cannot re-evaluate champion v%s (%s); comparing logged metrics", champion.version, exc)
        return logged, {
            "same_split": False if mine and theirs else None,
            "comparison": f"logged metrics ({why}; re-evaluation failed: {type(exc).__name__}: {exc})",
        }
    return value, {"same_split": False if mine and theirs else None, "comparison": f"champion re-evaluated ({why})"}


def _per_target_gate(client: MlflowClient, run_id: str, champion_run: Run, how: dict) -> dict[str, Any] | None:
    """The per-target bootstrap gate when both runs logged validation predictions per structure on the same split
    (else None: the ``promote_metric`` comparison decides); improvement, noise and adjusted p logged on the run."""
    if not how.get("same_split"):
        return None
    mine, theirs = gate.structure_table(run_id), gate.structure_table(champion_run.info.run_id)
    if mine is None or theirs is None:
        return None
    try:
        result = gate.per_target_gate(mine, theirs)
    except (ValueError, KeyError) as exc:
        log.warning("per-target gate impossible (%s); comparing the promotion metric", exc)
        return None
    now = int(time.time() * 1000)
    metrics = [Metric(f"gate_{k}_{t}", float(v[k]), now, 0) for t, v in result["targets"].items()
               for k in ("improvement", "noise", "p_better_adjusted") if v[k] == v[k]]  # fmt: skip
    client.log_batch(run_id, metrics=metrics)
    return result


def _record(client: MlflowClient, run_id: str, mv: ModelVersion, decision: dict[str, Any]) -> None:
    verdict = "promoted" if decision["promoted"] else "kept_champion"
    log.info("registry decision for %s v%s: %s (%s)", mv.name, mv.version, verdict, decision["reason"])
    # the same run (and so the same version) may be registered by two processes at once: both record a decision
    set_tag_racing(client.set_tag, run_id, DECISION_TAG, verdict)
    set_tag_racing(client.set_model_version_tag, mv.name, mv.version, "promotion_decision", verdict)
    set_tag_racing(client.set_model_version_tag, mv.name, mv.version, "promotion_reason", decision["reason"][:5000])
    client.log_dict(run_id, decision, f"registry/decision-v{mv.version}.json")


def _existing_version(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version already registered from ``run_id`` under ``name`` (registration is idempotent), or None."""
    found = versions_of_run(client, name, run_id)
    return found[0] if found else None


def _recorded_decision(client: MlflowClient, run_id: str, mv: ModelVersion) -> dict[str, Any] | None:
    """The decision already recorded for ``mv`` (a finished earlier registration of the same run), or None."""
    if "promotion_decision" not in (mv.tags or {}):
        return None
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/registry/decision-v{mv.version}.json")
    except (MlflowException, OSError) as exc:
        log.warning("v%s has a decision tag but no readable decision file (%s); deciding again", mv.version, exc)
        return None


def _version_of(mv: ModelVersion | None) -> str | None:
    return None if mv is None else str(mv.version)


def move_alias(client: MlflowClient, name: str, alias: str, expected: str | None, new: str) -> str | None:
    """Compare-and-set: point ``alias`` at ``new`` only if it still points at ``expected``, under the model's
    promotion lock (so no other registration moves it between the check and the write). Returns None on success,
    else the version that moved it meanwhile."""
    with promotion_lock(client, name) as held:
        current = _version_of(_alias_version(client, name, alias))
        if current != expected:
            return current
        held.before_write()
        client.set_registered_model_alias(name, alias, new)
    return None


def register_and_promote(
    cfg: PipelineConfig, run_id: str, evaluator: ChampionEvaluator | None = None, prepared: Prepared | None = None
) -> dict[str, Any]:
    """Register the run's model, make it the challenger, promote it to champion only if it is better.

    A champion evaluated on another split is re-evaluated by ``evaluator``, by default on ``prepared`` (the data the
    caller trained the run on: a pipeline passes what it holds), else on ``cfg``'s data prepared again.

    Idempotent per run: a run already registered under the model name keeps its version (and its recorded
    decision, when there is one). The champion alias moves compare-and-set: when another registration moved it
    while this one decided, nothing is overwritten and the refusal is recorded (``promoted: false``,
    ``conflict: true``)."""
    from crystalvision.serve import MODEL_ARTIFACT
    from crystalvision.track import configure_mlflow

    configure_mlflow()
    client = MlflowClient()
    name, metric = cfg.registry.model_name, cfg.registry.promote_metric
    try:
        challenger_run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelError(f"MLflow run {run_id} not found ({exc}); pass the run id of a training run") from exc
    mv = _existing_version(client, name, run_id)
    if mv is not None:
        done = _recorded_decision(client, run_id, mv)
        if done is not None:
            log.info("run %s is already registered as %s v%s; not registering again", run_id, name, mv.version)
            return done | {"already_registered": True}
    else:
        progress.beat("register", step="register a version")
        mv = register_once(client, name, run_id, f"runs:/{run_id}/{MODEL_ARTIFACT}")
    progress.beat("register", step="challenger alias")
    with promotion_lock(client, name) as held:  # the challenger is the newest version: it never moves back
        current = _version_of(_alias_version(client, name, CHALLENGER))
        held.before_write()
        newest_forward(client, name, CHALLENGER, str(mv.version), current)
    champion = _alias_version(client, name, CHAMPION)
    decision: dict[str, Any] = {
        "model_name": name,
        "challenger_version": str(mv.version),
        "challenger_run_id": run_id,
        "champion_version_before": _version_of(champion),
        "metric": metric,
        "min_improvement": cfg.registry.min_improvement,
        "challenger_value": _metric(challenger_run, metric),
        "champion_value": None,
    }
    if champion is None:
        promoted, reason = True, "no champion yet: the first registered version becomes champion"
    elif str(champion.version) == str(mv.version):
        promoted, reason = True, "this version is already the champion"
    else:
        progress.beat("register", step="champion value")
        champion_run = client.get_run(champion.run_id)
        evaluator = evaluator or functools.partial(evaluate_champion_on, prepared=prepared)
        value, how = _champion_value(cfg, champion, champion_run, challenger_run, evaluator)
        decision.update(how, champion_value=value)
        promoted, reason = decide(decision["challenger_value"], value, cfg.registry.min_improvement)
        decision["decided_by"] = "promote_metric"
        progress.beat("register", step="per-target gate")
        per_target = _per_target_gate(client, run_id, champion_run, how)
        if per_target is not None:  # the gate per target decides; the promote_metric comparison stays recorded
            verdict = {"would_promote": promoted, "reason": reason}  # not the decision: "promoted" is
            decision |= {"gate": per_target, "decided_by": "gate", "promote_metric_verdict": verdict}
            promoted, reason = per_target["promote"], gate.describe(per_target)
    final = _version_of(champion)
    progress.beat("register", step="decision")
    if promoted:
        moved = move_alias(client, name, CHAMPION, _version_of(champion), str(mv.version))
        if moved is None:
            final = str(mv.version)
        else:
            promoted, final = False, moved
            reason = (
                f"refused: {CHAMPION} moved from v{_version_of(champion)} to v{moved} while v{mv.version} was "
                f"being decided (another registration); run `crystalvision register` again to compare against v{moved}"
            )
            decision["conflict"] = True
            log.warning("%s %s", name, reason)
    decision.update(promoted=promoted, reason=reason, champion_version=final)
    _record(client, run_id, mv, decision)
    return decision
