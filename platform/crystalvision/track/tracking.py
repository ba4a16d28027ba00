"""MLflow tracking: experiment set-up, pipeline runs with full context, sweep parent/child runs.

Works with ``sqlite:///`` and ``http(s)://`` tracking URIs (``settings.tracking``). Ray workers log through
:mod:`crystalvision.track.worker_logging`. Secrets (``settings.secret_values()``) are masked in every param, tag and
artifact written here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from crystalvision.core import PACKAGE_DIR, TARGETS, TARGETS_CLASSIFICATION, PipelineConfig, __version__, get_settings
from crystalvision.data import SYMMETRY_LABEL_SOURCE, describe_holdout, holdout_file_text

log = logging.getLogger(__name__)

# Registered-model aliases: the newest registered version, and the one that serves.
CHALLENGER = "challenger"
CHAMPION = "champion"

MAX_PARAM_CHARS = 500  # MLflow accepts 6000; long lists (material ids) are truncated for readability.
CONFIG_ARTIFACT_DIR = "config"
CONFIG_ARTIFACT_NAME = "pipeline.yaml"


def configure_mlflow(tracking_uri: str | None = None, experiment_name: str | None = None) -> str:
    """Point MLflow at the configured tracking URI and experiment (created if missing); returns its id.

    New experiments get ``settings.tracking.mlflow_artifact_location`` as artifact root, except on an HTTP
    tracking server with a local artifact folder (the server then chooses, e.g. ``mlflow-artifacts:``).
    """
    import mlflow

    settings = get_settings().tracking
    uri = tracking_uri or settings.mlflow_tracking_uri
    name = experiment_name or settings.experiment_name
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        exp_id = client.create_experiment(
            name, artifact_location=_artifact_location(uri, settings.mlflow_artifact_location)
        )
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    log.info("MLflow tracking %s, experiment %s (%s)", _redact(uri), name, exp_id)
    return exp_id


def _artifact_location(tracking_uri: str, location: str | None) -> str | None:
    if not location:
        return None
    remote = "://" in location and not location.startswith("file://")
    if tracking_uri.startswith(("http://", "https://")) and not remote:
        return None
    if remote:
        return location
    Path(location).mkdir(parents=True, exist_ok=True)
    return Path(location).resolve().as_uri()


def system_metrics_available() -> bool:
    """MLflow system metrics need psutil (not a dependency here); True when it is importable."""
    return importlib.util.find_spec("psutil") is not None


@contextlib.contextmanager
def start_run(run_name: str, tags: Mapping[str, Any] | None = None, nested: bool = False) -> Iterator[Any]:
    """Start (or nest) an MLflow run with ``tags``; system metrics are on when psutil is installed."""
    import mlflow

    clean_tags = {k: _redact(str(v)) for k, v in (tags or {}).items()}
    with mlflow.start_run(
        run_name=run_name, tags=clean_tags, nested=nested, log_system_metrics=system_metrics_available() or None
    ) as run:
        yield run


# ---- a sweep: one parent run, one nested child run per trial (tune.py) ------------------------------------------

PARENT_TAG = "tune_parent_of"
SWEEP_TAG = "tune_sweep"
TRIAL_TAG = "tune_trial_id"


def find_parent_run(client: Any, experiment_id: str, sweep: str) -> str | None:
    """The parent run of ``sweep`` (a restored sweep reuses it), or None."""
    found = client.search_runs([experiment_id], f"tags.{PARENT_TAG} = '{sweep}'", max_results=1)
    return found[0].info.run_id if found else None


def start_parent_run(
    client: Any, experiment_id: str, sweep: str, tags: Mapping[str, Any] | None, log_context: Any = None
) -> str:
    """The sweep's parent run: reused (set RUNNING) when it exists, else started with ``tags`` and ``log_context()``."""
    parent_id = find_parent_run(client, experiment_id, sweep)
    if parent_id is not None:
        client.update_run(parent_id, status="RUNNING")
        return parent_id
    with start_run(run_name=sweep, tags=dict(tags or {}) | {PARENT_TAG: sweep}) as run:
        if log_context is not None:
            log_context()
    # the context ended the run as FINISHED; it runs until the sweep is summarised (a killed sweep stays RUNNING)
    client.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def child_run(client: Any, parent: Any, trial_id: str, params: Mapping[str, Any], inherited: Mapping) -> str:
    """A trial's nested run under ``parent`` (reused when a restored sweep re-runs the trial).

    ``inherited`` holds the parent's ``params`` and ``tags`` that the child repeats (the held-out fingerprint).
    """
    sweep, experiment_id = parent.data.tags[PARENT_TAG], parent.info.experiment_id
    found = client.search_runs(
        [experiment_id], f"tags.{SWEEP_TAG} = '{sweep}' and tags.{TRIAL_TAG} = '{trial_id}'", max_results=1
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = dict(inherited["tags"]) | {"mlflow.parentRunId": parent.info.run_id, SWEEP_TAG: sweep, TRIAL_TAG: trial_id}
    run = client.create_run(
        experiment_id, tags={k: _redact(str(v)) for k, v in tags.items()}, run_name=f"trial-{trial_id}"
    )
    log_params_safe(dict(inherited["params"]) | dict(params), run_id=run.info.run_id, tracking_uri=client.tracking_uri)
    return run.info.run_id


def close_child_runs(client: Any, experiment_id: str, sweep: str) -> dict[str, Any]:
    """Mark child runs of trials stopped by the scheduler (still RUNNING) as KILLED; trial id -> run."""
    out = {}
    for run in client.search_runs([experiment_id], f"tags.{SWEEP_TAG} = '{sweep}'", max_results=1000):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "tune_outcome", "stopped_early_by_scheduler")
            client.set_terminated(run.info.run_id, "KILLED")
            run = client.get_run(run.info.run_id)
        out[run.data.tags.get(TRIAL_TAG)] = run
    return out


def pipeline_tags(cfg: PipelineConfig, snapshot: Any) -> dict[str, str]:
    """Tags that identify a pipeline run: pipeline, config hash, snapshot id/sha/db_version, git commit."""
    manifest = snapshot.manifest
    tags = {
        "pipeline": cfg.name,
        "config_hash": cfg.config_hash(),
        "snapshot_id": manifest.snapshot_id,
        "snapshot_sha256": manifest.content_sha256,
        "db_version": manifest.db_version,
        "crystalvision_version": __version__,
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def logged_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The config as a run logs it (artifact and ``cfg.*`` params): ``split.holdout.ids`` named as records name it,
    relative to the checkout when inside it (:func:`~crystalvision.data.holdout_file_text`)."""
    dumped = cfg.model_dump(mode="json")
    if cfg.split.holdout is not None:
        dumped["split"]["holdout"]["ids"] = holdout_file_text(cfg.split.holdout.ids)
    return dumped


def log_pipeline_context(
    cfg: PipelineConfig, snapshot: Any, selection: Any, render_result: Any = None, splits: Any = None
) -> None:
    """Log what a pipeline run depends on into the active run: config, data provenance, splits, environment."""
    import mlflow

    dumped = logged_config(cfg)
    mlflow.log_dict(_redact_obj(dumped), f"{CONFIG_ARTIFACT_DIR}/{CONFIG_ARTIFACT_NAME}")
    params = flatten(dumped, prefix="cfg")
    manifest = snapshot.manifest
    params.update(
        snapshot_id=manifest.snapshot_id,
        snapshot_sha256=manifest.content_sha256,
        db_version=manifest.db_version,
        snapshot_source=manifest.source,
        n_structures_selected=len(selection.records),
        n_dropped_flagged=len(selection.dropped_flagged),
    )
    if cfg.split.holdout is not None:  # holdout.file, .sha256, .use, .n_ids; n_held_out: left out of the selection
        params |= flatten(describe_holdout(cfg.split), prefix="holdout")
        params["n_held_out"] = len(getattr(selection, "held_out", []))
    for target in TARGETS:
        params[f"label_source.{target}"] = _label_source(manifest, target)
    if render_result is not None:
        params.update(flatten(render_result.summary(), prefix="render"))
    if splits is not None:
        params.update(flatten(splits.describe(), prefix="split"))
    log_params_safe(params)
    mlflow.set_tags({f"label_source.{t}": _label_source(manifest, t) for t in TARGETS})
    env = environment_info()
    mlflow.set_tags({f"env.{k}": v for k, v in env.items()})
    mlflow.log_dict(env, "environment.json")
    if selection.dropped_flagged:
        mlflow.log_dict({"dropped_flagged": list(selection.dropped_flagged)}, "data/dropped_flagged.json")


def _label_source(manifest: Any, target: str) -> str:
    """Where ``target``'s labels come from: the snapshot's record, or symmetry analysis for the class targets."""
    default = SYMMETRY_LABEL_SOURCE if target in TARGETS_CLASSIFICATION else "unknown"
    return manifest.label_source.get(target) or default


def log_params_safe(params: Mapping[str, Any], run_id: str | None = None, tracking_uri: str | None = None) -> None:
    """Log params with secrets masked and long values truncated (into ``run_id`` or the active run)."""
    import mlflow

    clean = {k[:250]: _truncate(_redact(str(v))) for k, v in params.items()}
    if run_id is None:
        mlflow.log_params(clean)
        return
    client = mlflow.MlflowClient(tracking_uri)
    client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in clean.items()])


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}``; lists stay whole (as their string form)."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def git_commit(path: Path = PACKAGE_DIR) -> str | None:
    """The git commit of the checkout holding ``path`` (``-dirty`` appended when modified), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def environment_info() -> dict[str, str]:
    """Versions (python, torch, ray, timm, mlflow, crystalvision) and CPU/GPU description."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "crystalvision": __version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }
    for module in ("torch", "ray", "timm", "mlflow", "numpy", "pyarrow"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = "missing"
    info.update(_gpu_info())
    return info


def _gpu_info() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {"gpu": "none"}
    if not torch.cuda.is_available():
        return {"gpu": "none", "torch_cuda_build": str(torch.version.cuda)}
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"gpu": ", ".join(names), "gpu_count": str(len(names)), "torch_cuda_build": str(torch.version.cuda)}


def _truncate(value: str) -> str:
    return value if len(value) <= MAX_PARAM_CHARS else value[: MAX_PARAM_CHARS - 3] + "..."


def _redact(text: str) -> str:
    from crystalvision.core import mask

    return mask(text)


def _redact_obj(obj: Any) -> Any:
    """Mask secrets anywhere in a JSON-like object (round trip through YAML text)."""
    text = _redact(yaml.safe_dump(obj, sort_keys=False))
    return yaml.safe_load(text)
