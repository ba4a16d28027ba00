"""The ``crystalvision`` command line: one sub-command per stage, plus ``pipeline run``.

Commands are thin: they parse options, call the command table (:mod:`crystalvision.app.commands`, which the Ray
Jobs entrypoints in ``jobs/`` share) and turn :class:`~crystalvision.core.errors.CrystalVisionError` (and an unreachable
MLflow server) into one clear message and exit code 2. Any other error prints its traceback without local variables
and with every secret masked (:func:`crystalvision.core.logs.mask`), exit code 1.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from crystalvision.app.failure import describe
from crystalvision.core import CrystalVisionError, setup_logging

log = logging.getLogger("crystalvision")

app = typer.Typer(
    help="Learn material properties from rendered images of crystal structures.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals of HTTP clients hold basic-auth strings and tokens
)
pipeline_app = typer.Typer(help="Run declarative pipelines (pipelines/*.yaml).", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML (pipelines/*.yaml).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config value: section.key=value (repeatable).")
]
DEFAULT_CONFIG = Path("pipelines/quickstart.yaml")


def handle_errors(fn):
    """A CrystalVisionError or an unreachable MLflow server: one line on stderr, exit 2. Any other error: its
    traceback with secrets masked, exit 1 (:func:`crystalvision.app.failure.describe`, as in a job's log)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            code, text = describe(exc)
            typer.echo(text, err=True)
            raise typer.Exit(code=code) from None

    return wrapper


def _load(config: Path, overrides: list[str] | None):
    from crystalvision.core import load_pipeline, parse_overrides

    return load_pipeline(config, parse_overrides(overrides or []))


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _run(name: str, config: Path, overrides: list[str] | None, **options) -> None:
    """Run command ``name`` of the command table on the loaded config and print its result as JSON."""
    from crystalvision.app.commands import run

    _echo_json(run(name, _load(config, overrides), **options))


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the full result as JSON (for machines).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray and MLflow logs on the terminal.")]


def _run_long(name: str, config: Path, overrides: list[str] | None, json_out: bool, verbose: bool, **options) -> None:
    """Run a long command: library logs go to a file, stages show progress, the end is a short summary (or the
    full JSON with ``--json``)."""
    from crystalvision.app.commands import run
    from crystalvision.app.console import StageDisplay, quiet_output
    from crystalvision.app.summary import result_summary
    from crystalvision.core import get_settings, progress
    from crystalvision.ops import processes_stopped_on_exit

    cfg = _load(config, overrides)
    with quiet_output(get_settings().paths.home, name, verbose=verbose) as out:
        if out.log_path:
            out.console.print(f"logs: {out.log_path}", highlight=False)
        started = None
        try:
            # Ray is shut down inside the quiet block (its log monitor would print into the restored terminal), and
            # an interrupted command takes the processes it started (Ray's workers and agents) down with it
            with (
                processes_stopped_on_exit() as started,
                StageDisplay(out.console) as display,
                progress.listening(display),
            ):
                result = run(name, cfg, **options)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (which acts as Ctrl-C)
            signum = (started.signal if started else None) or signal.SIGINT
            why = f" ({exc})" if str(exc) else ""
            where = f"; the whole log is in {out.log_path}" if out.log_path else ""
            out.console.print(f"interrupted by {signal.Signals(signum).name}{why}{where}", highlight=False)
            raise typer.Exit(code=128 + signum) from None
        except BaseException:
            if out.log_path:
                out.console.print(f"failed; the whole log is in {out.log_path}", highlight=False)
            raise
        summary = None if json_out else result_summary(result, str(out.log_path) if out.log_path else None)
        if summary is None:
            out.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
            return
        out.console.print(summary)


@app.command()
@handle_errors
def ingest(
    chemsys: Annotated[str | None, typer.Option(help="Chemical system, e.g. Li-Mn-Ni-O.")] = None,
    elements: Annotated[str | None, typer.Option(help="Comma-separated elements (alternative to chemsys).")] = None,
    nelements: Annotated[int | None, typer.Option(help="Exact number of elements.")] = None,
    subsystems: Annotated[
        bool | None, typer.Option("--subsystems", help="Every sub-system of --chemsys too (the whole space).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for snapshots (default: settings).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Query the Materials Project (needs MP_API_KEY) and write a versioned, content-hashed snapshot."""
    from crystalvision.app.commands import run
    from crystalvision.core import deep_merge, load_pipeline, parse_overrides

    options = {"chemsys": chemsys, "nelements": nelements, "subsystems": subsystems}
    query = {k: v for k, v in options.items() if v is not None}
    if elements:
        query |= {"elements": elements.split(","), "chemsys": chemsys}
    cfg = load_pipeline(config, deep_merge(parse_overrides(set_ or []), {"ingest": query}))  # checked as the YAML
    typer.echo(run("ingest", cfg, out=out)["snapshot"])


@app.command("snapshot")
@handle_errors
def snapshot_info(
    uri: Annotated[
        str | None, typer.Argument(help="Snapshot folder or bundled name (default: list the bundled ones).")
    ] = None,
) -> None:
    """List the bundled snapshots (records, usable = unflagged, hash verified), or show one snapshot's manifest."""
    from crystalvision.core import bundled_snapshots, get_settings
    from crystalvision.data import describe, load_snapshot

    bundled = bundled_snapshots()
    if uri is None:
        default = get_settings().data.snapshot_uri
        rows = {name: describe(path) for name, path in bundled.items()}
        default_row = next((r for r in rows.values() if r["path"] == str(default)), None)
        _echo_json({"default": default_row or describe(default), "bundled": rows})
        return
    snap = load_snapshot(bundled[uri] if uri in bundled and not Path(uri).is_dir() else uri)
    info = snap.manifest.model_dump()
    info["n_flagged"] = sum(1 for r in snap.records if r.flags)
    info["path"] = str(snap.path)
    _echo_json(info)


@app.command()
@handle_errors
def render(
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    retry_quarantined: Annotated[bool, typer.Option(help="Try quarantined structures again.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Render the selected structures into images + a labels table in the object store (Ray Data)."""
    retry = ["render.retry_quarantined=true"] if retry_quarantined else []
    _run_long("render", config, [*(set_ or []), *retry], json_out, verbose)


@app.command()
@handle_errors
def train(
    config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False
) -> None:
    """Render if needed, then train the multi-head EfficientNet-B0 with Ray Train and log to MLflow."""
    _run_long("train", config, set_, json_out, verbose)


@app.command()
@handle_errors
def evaluate(
    run_id: Annotated[str, typer.Option(help="MLflow run id of a training run.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Evaluate a trained run on its own test split: metrics, plots, baselines, saliency, HTML report."""
    _run("evaluate", config, set_, run_id=run_id)


@app.command()
@handle_errors
def tune(
    config: ConfigOpt = DEFAULT_CONFIG, set_: SetOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False
) -> None:
    """Sweep learning rate and loss weights with Ray Tune (ASHA); trials are nested MLflow runs."""
    _run_long("tune", config, set_, json_out, verbose)


@app.command()
@handle_errors
def register(
    run_id: Annotated[str, typer.Option(help="MLflow run id whose model to register.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Register a run's model as the challenger and promote it to champion only if it is better."""
    _run("register", config, set_, run_id=run_id)


class PredictOutput(enum.StrEnum):
    """What ``predict --output`` can print."""

    table = "table"
    json = "json"


@app.command()
@handle_errors
def predict(
    files: Annotated[list[Path], typer.Argument(help="CIF or PNG/JPEG files.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model URI or registered name (its champion); default: --config's champion, else "
            "$CRYSTALVISION_MODEL (the quickstart's)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Use the champion this pipeline YAML registers.")
    ] = None,
    views: Annotated[int, typer.Option(min=1, max=64, help="Views rendered per CIF (predictions averaged).")] = 8,
    output: Annotated[
        PredictOutput, typer.Option(help="table, or json (json keeps the full distributions)")
    ] = PredictOutput.table,
) -> None:
    """Predict band gap, e_above_hull, crystal system and space group for CIF or image files."""
    from crystalvision.serve import default_model_uri, predict_files, print_predictions

    frame = predict_files(files, model_uri=model or default_model_uri(config), views=views)
    print_predictions(frame, output.value)
    if "error" in frame and frame["error"].notna().any():
        raise typer.Exit(code=1)


@app.command()
@handle_errors
def serve(
    model: Annotated[str | None, typer.Argument(help="Model URI; default: $CRYSTALVISION_MODEL.")] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port.")] = 5001,
    host: Annotated[str, typer.Option("--host", "-h", help="Address (0.0.0.0: every interface).")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
) -> None:
    """Serve a model over REST (POST /invocations) with MLflow's scoring server, from this environment."""
    from crystalvision.serve import default_model_uri
    from crystalvision.serve import serve as run_server

    run_server(model or default_model_uri(None), host=host, port=port, workers=workers)


@app.command()
@handle_errors
def curve(
    config: Annotated[Path, typer.Argument(help="A grouped k-fold pipeline YAML with learning_curve.sizes.")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the point records, learning_curve.json, figure.")] = None,
    size: Annotated[
        list[str] | None, typer.Option("--size", help="Run only this point (a size, or all); repeatable.")
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Learning curve: the k-fold pipeline at nested subsets of each fold's structures, one record per point; a
    point with a record is skipped (long)."""
    _run_long("curve", config, set_, json_out, verbose, out=out, sizes=size)


@app.command()
@handle_errors
def watch(
    config: ConfigOpt = Path("pipelines/watch.yaml"),
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Retrain even if nothing changed.")] = False,
) -> None:
    """Retrain when the Materials Project publishes a new database version (promotes only a better model)."""
    _run("watch", config, set_, force=force)


@app.command()
@handle_errors
def bench(
    out: Annotated[
        Path | None, typer.Option(help="JSON file; default bench/results/bench.json, --quick: under the home.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Smallest sizes (smoke run), to $CRYSTALVISION_HOME/bench/.")] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Parts: render_bench, train_bench, quickstart, MODULE.FUNCTION.")
    ] = None,
    readme: Annotated[Path | None, typer.Option(help="Rewrite this page's bench table (docs/benchmarks.md).")] = None,
    merge: Annotated[bool, typer.Option(help="With --only: replace those rows in the existing JSON.")] = False,
) -> None:
    """Run every benchmark in bench/ (of this source checkout), print one table and write JSON."""
    from crystalvision.core import PACKAGE_DIR, get_settings

    root = PACKAGE_DIR.parents[1]  # platform/crystalvision -> the checkout that holds bench/
    if not (root / "bench" / "run_all.py").is_file():
        raise CrystalVisionError(
            f"no bench/run_all.py next to {PACKAGE_DIR}; run `crystalvision bench` from a checkout"
        )
    if out is None:  # a smoke run never overwrites the committed results
        out = get_settings().paths.home / "bench" / "bench-quick.json" if quick else root / "bench/results/bench.json"
    cmd = [sys.executable, "-m", "bench.run_all", "--out", str(out.resolve()), *(["--quick"] if quick else [])]
    path = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # this checkout's package in the runner and its parts
    extra = [*(["--only", *only] if only else []), *(["--readme", str(readme.resolve())] if readme else [])]
    extra += ["--merge"] if merge else []
    done = subprocess.run([*cmd, *extra], cwd=root, env=env, check=False)
    if done.returncode:
        raise typer.Exit(code=done.returncode)


@app.command()
@handle_errors
def holdout(
    out: Annotated[Path, typer.Option(help="The hold-out file to write (JSON), e.g. docs/study/records/holdout.json.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    fraction: Annotated[float, typer.Option(help="Share of the selected structures held out (m/k, k <= 20).")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the grouped, stratified folds it is made of.")] = 0,
) -> None:
    """Make a structure hold-out of the config's selection for split.holdout: grouped by reduced formula, stratified
    by crystal system, seeded; JSON with the ids, their formulas, how they were made and their sha256."""
    from crystalvision.data import write_holdout

    sets = "".join(f" --set {s}" for s in set_ or [])
    command = f"crystalvision holdout -c {config}{sets} --fraction {fraction} --seed {seed} --out {out}"
    made = write_holdout(_load(config, set_), out, fraction, seed, command)
    typer.echo(f"{out}: {made['n_ids']} structures, {made['n_formulas']} formulas, sha256 {made['sha256']}")


@pipeline_app.command("run")
@handle_errors
def pipeline_run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. pipelines/quickstart.yaml.")],
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a whole pipeline: snapshot -> render -> train -> evaluate -> register; ends with a short summary."""
    _run_long("pipeline", config, set_, json_out, verbose)


@pipeline_app.command("validate")
@handle_errors
def pipeline_validate(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    set_: SetOpt = None,
) -> None:
    """Validate a pipeline YAML and print the resolved config; for k folds also the resolved split (from the
    snapshot's records, no rendering): structures per fold, classes unseen in training, the accuracy ceiling."""
    from crystalvision.data import plan_text
    from crystalvision.stages import plan_folds

    cfg = _load(config, set_)
    _echo_json(cfg.model_dump(mode="json"))
    plan = plan_folds(cfg)
    if plan is not None:
        typer.echo(plan_text(plan, cfg.split))
        if "holdout" in plan:
            typer.echo("hold-out: " + ", ".join(f"{k} {v}" for k, v in plan["holdout"].items()))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
