"""The end-of-run summary for people: at most 25 lines, built from a long command's result (:func:`result_summary`:
a pipeline result's ``summary()`` dict, a sweep's, a render's).

Per target the test metric beside the majority (dummy) and 1-NN baselines; the snapshot and its label source; the
registered model version and the alias decision (its reason whole, wrapped); where to look next (MLflow run URL or
the exact ``mlflow ui`` command, the HTML report, the log file).
"""

from __future__ import annotations

import math
import shlex
import shutil
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from crystalvision.core import mask, without_userinfo

MAX_LINES = 25
LABEL_WIDTH = 10  # "snapshot  ", "model     ": the label column of every line
# (row label, metric key part, target): the headline metric of each head, then the class heads' imbalance metrics.
HEADLINES = [
    ("band gap R²", "r2", "band_gap"),
    ("e above hull R²", "r2", "energy_above_hull"),
    ("crystal system acc", "acc", "crystal_system"),
    ("  balanced acc", "balanced_acc", "crystal_system"),
    ("  macro-F1", "macro_f1", "crystal_system"),
    ("space group acc", "acc", "spacegroup"),
    ("  balanced acc", "balanced_acc", "spacegroup"),
    ("  macro-F1", "macro_f1", "spacegroup"),
]
# column -> metric prefix of a baseline (per structure, fit on what the model saw)
BASELINE_COLUMNS = {"majority": "baseline_dummy", "1-NN": "baseline_1nn", "trees": "baseline_tabular",
                    "CGCNN": "cgcnn_test"}  # fmt: skip


def _num(metrics: dict[str, Any], key: str) -> str:
    """One metric, or ``mean ± std`` over the folds of a k-fold run."""
    value = metrics.get(key)
    if value is None and f"{key}_mean" in metrics:
        return f"{float(metrics[f'{key}_mean']):.3f} ± {float(metrics.get(f'{key}_std', 0.0)):.3f}"
    return "-" if value is None else f"{float(value):.3f}"


def _has(metrics: dict[str, Any], key: str) -> bool:
    return key in metrics or f"{key}_mean" in metrics


def metrics_table(metrics: dict[str, Any]) -> Table | None:
    """Test metric per head against the baselines (None when nothing was evaluated), per structure like the
    baselines (the model's views averaged; per image only where no per-structure number exists, and then the
    header says so); a k-fold run shows mean ± std over its folds."""
    level = "test_struct" if any(k.startswith("test_struct_") for k in metrics) else "test"
    rows = [
        (label, f"{level}_{kind}_{t}", kind, t) for label, kind, t in HEADLINES if _has(metrics, f"{level}_{kind}_{t}")
    ]
    if not rows:
        return None
    columns = {c: p for c, p in BASELINE_COLUMNS.items() if any(k.startswith(p + "_") for k in metrics)}
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    model = "model/structure" if level == "test_struct" else "model/image"
    for name in ("test set", model, *columns):
        table.add_column(name, justify="left" if name == "test set" else "right")
    for label, key, kind, target in rows:
        table.add_row(label, _num(metrics, key), *(_num(metrics, f"{p}_{kind}_{target}") for p in columns.values()))
    return table


def registry_line(decision: dict[str, Any]) -> str | None:
    """``model NAME vN: champion (reason)`` or ``... challenger, champion stays vM (reason)``, the reason whole."""
    verdict = registry_verdict(decision)
    return f"model     {verdict}" if verdict else None


def registry_verdict(decision: dict[str, Any]) -> str | None:
    """``NAME vN -> champion (reason)``, ``... -> challenger; champion stays vM (reason)``, or a k-fold run's
    ``not registered (reason)``."""
    if not decision:
        return None
    name, version = decision.get("model_name"), decision.get("challenger_version")
    reason = str(decision.get("reason", ""))
    if decision.get("registered") is False:
        return f"not registered ({reason})"
    if decision.get("promoted"):
        return f"{name} v{version} -> champion ({reason})"
    return f"{name} v{version} -> challenger; champion stays v{decision.get('champion_version')} ({reason})"


def labelled(label: str, value: str) -> Table:
    """``label`` in a 10-character column and ``value`` beside it, wrapped inside its own column (never cut)."""
    grid = Table.grid()
    grid.add_column(width=LABEL_WIDTH, no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(label, value)
    return grid


def mlflow_pointer(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """The run's URL on an MLflow server (without ``user:password@``: the browser asks), or the exact ``mlflow ui``
    command for a local store (a password in it masked)."""
    if tracking_uri.startswith(("http://", "https://")):
        base = without_userinfo(tracking_uri).rstrip("/")
        if run_id and experiment_id:
            return mask(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
        return mask(base)
    mlflow = env_command("mlflow")
    return mask(f"{mlflow} ui --backend-store-uri {shlex.quote(tracking_uri)} --host 127.0.0.1 --port 5000")


def env_command(name: str) -> str:
    """How to type this environment's command ``name`` here: bare when it is the ``name`` on PATH (the environment
    is activated), else its path (``.venv/bin/mlflow`` under the working folder), never another environment's."""
    own = Path(sysconfig.get_path("scripts")) / name
    found = shutil.which(name)
    if found and Path(found).resolve() == own.resolve():
        return name
    try:
        return str(own.relative_to(Path.cwd()))
    except ValueError:
        return str(own)


def summary_renderable(
    result: dict[str, Any],
    *,
    tracking_uri: str,
    experiment_id: str | None = None,
    label_source: str | None = None,
    report_path: str | None = None,
    log_path: str | None = None,
) -> Group:
    """The whole summary as one rich renderable (fits in ``MAX_LINES`` lines)."""
    parts: list[Any] = [Text(f"crystalvision: {result.get('pipeline')} finished", style="bold")]
    snapshot = f"snapshot  {result.get('snapshot_id')} ({result.get('n_structures')} structures"
    dropped = result.get("n_dropped_flagged")
    snapshot += f", {dropped} flagged dropped)" if dropped else ")"
    parts.append(Text(snapshot))
    if label_source:
        short = label_source if len(label_source) <= 100 else label_source[:99].rstrip() + "…"
        parts.append(Text(f"labels    {short}"))
    render = result.get("render") or {}
    if render:
        parts.append(
            Text(
                f"render    {render.get('render_n_images')} images ({render.get('render_n_new')} new), "
                f"{render.get('render_n_quarantined', 0)} structures quarantined"
            )
        )
    table = metrics_table(result.get("metrics") or {})
    if table is not None:
        parts.append(table)
    verdict = registry_verdict(result.get("registry") or {})
    if verdict:
        parts.append(labelled("model", verdict))
    if result.get("run_id"):
        parts.append(Text(f"run       {result['run_id']}"))
        parts.append(Text(f"MLflow    {mlflow_pointer(tracking_uri, experiment_id, result.get('run_id'))}"))
    if report_path:
        parts.append(Text(f"report    {report_path}"))
    if log_path:
        parts.append(Text(f"log       {log_path}"))
    return Group(*parts)


def pipeline_summary(result: dict[str, Any], log_path: str | None = None) -> Group:
    """The summary of a pipeline result as the CLI and a Ray job's log end with it (the tracking URI from the
    settings)."""
    from crystalvision.core import get_settings

    return summary_renderable(
        result,
        tracking_uri=get_settings().tracking.mlflow_tracking_uri,
        experiment_id=result.get("experiment_id"),
        label_source=result.get("label_source"),
        report_path=result.get("report_path"),
        log_path=log_path,
    )


def render_line(render: dict[str, Any]) -> str:
    """``N images (n new, s already there), q structures quarantined``."""
    line = f"{render.get('render_n_images')} images ({render.get('render_n_new')} new"
    skipped = render.get("render_n_skipped")
    line += f", {skipped} already there)" if skipped else ")"
    return line + f", {render.get('render_n_quarantined', 0)} structures quarantined"


def render_summary(result: dict[str, Any], log_path: str | None = None) -> Group:
    """``crystalvision render``: images made and reused, where they are, what was quarantined."""
    parts: list[Any] = [Text("crystalvision: render finished", style="bold")]
    took = result.get("render_total_s")
    parts.append(labelled("render", render_line(result) + (f" in {float(took):.1f} s" if took is not None else "")))
    where = result.get("render_uri") or result.get("render_prefix")
    if where:
        parts.append(labelled("images", str(where)))
    if result.get("render_n_quarantined"):
        parts.append(labelled("bad", f"{where}/quarantine.json names each quarantined structure and its error"))
    if result.get("render_labels_key"):
        parts.append(labelled("labels", str(result["render_labels_key"])))
    if log_path:
        parts.append(labelled("log", log_path))
    return Group(*parts)


def _best_line(result: dict[str, Any]) -> str:
    """``trial ID: lr 3.1e-04, val_loss 1.23``."""
    config, metrics, metric = result.get("best_config") or {}, result.get("best_metrics") or {}, result.get("metric")
    shown = [f"lr {float(config['lr']):.2g}"] if "lr" in config else []
    if metric in metrics:
        shown.append(f"{metric} {float(metrics[metric]):.3g}")
    return f"trial {result.get('best_trial_id')}" + (f": {', '.join(shown)}" if shown else "")


def tune_summary(result: dict[str, Any], log_path: str | None = None) -> Group:
    """``crystalvision tune``: the sweep, its best trial, that trial's test metrics against the baselines, and the
    model version it registered (when ``stages`` has ``register``)."""
    from crystalvision.core import get_settings

    parts: list[Any] = [Text(f"crystalvision: sweep {result.get('sweep')} finished", style="bold")]
    if result.get("snapshot_id"):
        parts.append(labelled("snapshot", f"{result['snapshot_id']} ({result.get('n_structures')} structures)"))
    if result.get("render"):
        parts.append(labelled("render", render_line(result["render"])))
    trials = f"{result.get('n_trials')} trials: {result.get('n_errors', 0)} failed, "
    parts.append(labelled("sweep", trials + f"{result.get('n_stopped_early', 0)} stopped early by ASHA"))
    parts.append(labelled("best", _best_line(result)))
    table = metrics_table(result.get("test_metrics") or {})
    if table is not None:
        parts.append(table)
    verdict = registry_verdict(result.get("registry") or {})
    if verdict:
        parts.append(labelled("model", verdict))
    run_id = result.get("best_run_id")
    if run_id:
        tracking_uri = get_settings().tracking.mlflow_tracking_uri
        parts.append(labelled("run", str(run_id)))
        parts.append(labelled("MLflow", mlflow_pointer(tracking_uri, result.get("experiment_id"), run_id)))
    if log_path:
        parts.append(labelled("log", log_path))
    return Group(*parts)


def result_summary(result: Any, log_path: str | None = None) -> Group | None:
    """The short summary of a long command's result: a learning curve (``curve``), a pipeline run (``pipeline
    run``, ``train``), a sweep (``tune``) or a render (``render``); None for any other result (print it as JSON)."""
    if not isinstance(result, dict):
        return None
    if "points" in result and "heads" in result:  # a learning curve (it names its pipeline too)
        return curve_summary(result, log_path)
    if "pipeline" in result:
        return pipeline_summary(result, log_path)
    if "sweep" in result:
        return tune_summary(result, log_path)
    if "render_n_images" in result:
        return render_summary(result, log_path)
    return None


def curve_summary(result: Mapping[str, Any], log_path: str | None = None) -> Group:
    """``crystalvision curve``: the points run, skipped and missing, the budget, and per point the image model and
    the trees on every head (at most 25 lines)."""
    from crystalvision.app.curve_record import point_key

    parts: list[Any] = [Text(f"crystalvision: learning curve {result.get('pipeline')}", style="bold")]
    done = ", ".join(result.get("ran") or []) or "none"
    parts.append(labelled("points", f"run now: {done}; kept: {', '.join(result.get('kept') or []) or 'none'}"))
    if result.get("missing"):
        parts.append(labelled("missing", ", ".join(result["missing"]) + " (run them: --size SIZE)"))
    b = result.get("budget") or {}
    steps = f"{b.get('epochs')} epoch(s) x {b.get('steps_per_epoch')} steps of batch {b.get('batch_size')}"
    parts.append(labelled("budget", f"{b.get('views_per_structure')} views, {steps} at every point"))
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in ("size", "method", "acc system", "acc space group", "R² gap", "R² e_hull"):
        table.add_column(name, justify="left" if name in ("size", "method") else "right")
    for point in result.get("points") or []:
        for method in ("image model", "trees"):
            cells = point["series"][method]
            row = [f"{c['value']:.2f}" if math.isfinite(c["value"]) else "-" for c in cells.values()]
            table.add_row(point_key(point["train_structures"]), method, *row)
    parts.append(table)
    for label, key in (("record", "record"), ("figure", "figure"), ("log", "log")):
        value = log_path if key == "log" else result.get(key)
        if value:
            parts.append(labelled(label, str(value)))
    return Group(*parts)
