"""A k-fold headline trained one seed per part: each part's prediction table kept with its record, then merged.

A part is ``crystalvision pipeline run <k-fold config> --set name=<name>-seed<s> --set 'train.seeds=[<s>]' --json``;
its printed JSON, saved as ``DIR/seed-<s>.json``, is its record. The pooled scores of several seeds need every
seed's per-structure predictions, which the record does not hold: the parent run logged them in MLflow
(``evaluation/oof_predictions.parquet``).

- ``export RECORD [--out DIR]`` reads the record's parent run id, fetches that table from MLflow (tracking URI from
  crystalvision's settings, i.e. ``CRYSTALVISION_HOME``), checks that it reproduces the record's pooled scores and
  writes it beside the record as ``seed-<s>.oof.parquet`` (plain columns; reading it executes nothing), with
  ``seed-<s>.run.json``: the run's resolved config, start and end, hardware and the table's sha256.
- ``merge DIR [--seeds 0 1 2] [--readme PAGE]`` reads every ``seed-<s>.json`` with its table and run file, checks
  that they share snapshot, render, recipe, config (all but the name and the seed), folds and structures (an error
  names the record that differs), pools the tables and scores them with ``crystalvision.evaluate.oof.summarise``:
  seed-averaged pooled metrics, each seed's own pooled metrics and their sample std, the image model's interval
  and its paired differences from every baseline. It writes ``DIR/merged.json`` and the tables (between the
  page's ``space-formula-table`` markers, or ``--marker``'s, with ``--readme``, else printed); ``--seeds`` names the
  seeds not run yet.

Parts tested on a hold-out (``split.holdout.use: test``: one fold, the hold-out's structures) merge the same way;
they must share the hold-out's sha256 too (not its path), and the merged record and its text name the hold-out file
(relative to the checkout), sha256 and the number of its ids tested.

Usage: ``python docs/study/seed_record.py export docs/study/records/space-formula/seed-0.json`` then
``python docs/study/seed_record.py merge docs/study/records/space-formula --seeds 0 1 2 --readme docs/study.md``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import shutil
import tempfile
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import space_table as st  # a sibling script: run as a script, this folder is on sys.path

from crystalvision.core import TARGETS, PipelineConfig
from crystalvision.evaluate import oof
from crystalvision.track.tracking import CONFIG_ARTIFACT_DIR, CONFIG_ARTIFACT_NAME

log = logging.getLogger("seed_record")

TABLE_ARTIFACT = "evaluation/oof_predictions.parquet"
CONFIG_ARTIFACT = f"{CONFIG_ARTIFACT_DIR}/{CONFIG_ARTIFACT_NAME}"
MARKER = "space-formula-table"
MERGED = "merged.json"
RECORD_NAME = re.compile(r"^seed-(\d+)\.json$")
SEED_SUFFIX = re.compile(r"-seed(\d+)$")
# What may differ between the parts of one headline. The hold-out file's path too: the parts must share its sha256
# (identity's holdout_sha256), wherever each checkout kept the file.
NOT_COMPARED = {"name", "train.seed", "train.seeds", "split.holdout.ids"}
TOLERANCE = 1e-9
CARRIED = ("n_folds", "cgcnn_layers_mean", "cgcnn_atom_features_mean")  # the record's settings the tables name
ROOT = Path(__file__).resolve().parents[2]


def paths(folder: Path, seed: int) -> dict[str, Path]:
    """A part's files: its record, its prediction table, its run file."""
    return {kind: folder / f"seed-{seed}{suffix}" for kind, suffix in
            (("record", ".json"), ("table", ".oof.parquet"), ("run", ".run.json"))}  # fmt: skip


def part_seed(record: dict, source: str) -> int:
    """The one training seed of a part's record; its pipeline name, if it names a seed, must name the same."""
    seeds = (record.get("pooled") or {}).get("seeds") or []
    if len(seeds) != 1:
        raise SystemExit(f"{source}: a part trains one seed; this record has seeds {seeds}")
    named = SEED_SUFFIX.search(record.get("pipeline", ""))
    if named and int(named.group(1)) != seeds[0]:
        raise SystemExit(f"{source}: pipeline `{record['pipeline']}` names seed {named.group(1)}, trained {seeds[0]}")
    return int(seeds[0])


def subsets_of(config: dict) -> dict[str, int]:
    """``evaluate.subsets`` of a resolved config: name -> nelements."""
    return {name: s["nelements"] for name, s in (config.get("evaluate", {}).get("subsets") or {}).items()}


def pooled_only(metrics: dict) -> dict[str, float]:
    """The pooled scores of a metrics dict (no differences, intervals or seed spread)."""
    return {k: v for k, v in metrics.items() if k.startswith("pooled_") and "_diff_" not in k
            and not k.endswith(("_lo", "_hi", "_seed_std")) and k != "pooled_bootstrap_resamples"}  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def hardware(tags: dict[str, str]) -> str:
    """The run's machine from its ``env.*`` tags: ``x86_64, 2 CPU cores, no GPU``."""
    gpu = tags.get("env.gpu", "none")
    return f"{tags.get('env.cpu', '?')}, {tags.get('env.cpu_count', '?')} CPU cores, " + (
        "no GPU" if gpu == "none" else f"GPU {gpu}"
    )


# ----------------------------------------------------------------------------------------------------- export


def fetch(run_id: str, tracking_uri: str | None, dst: Path) -> tuple[pd.DataFrame, dict, Any]:
    """The parent run's prediction table, resolved config and run (info + tags), from MLflow."""
    import mlflow
    import yaml

    from crystalvision.core.settings import get_settings

    client = mlflow.MlflowClient(tracking_uri or get_settings().tracking.mlflow_tracking_uri)
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise SystemExit(f"run {run_id} is {run.info.status}, not FINISHED: export it when its part has finished")
    try:
        table = pd.read_parquet(client.download_artifacts(run_id, TABLE_ARTIFACT, str(dst)))
        config = yaml.safe_load(Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, str(dst))).read_text())
    except Exception as exc:  # MLflow raises its own and OSError types for a missing artifact
        raise SystemExit(f"run {run_id}: cannot fetch {TABLE_ARTIFACT} / {CONFIG_ARTIFACT}: {exc}") from exc
    return table, config, run


def check_table(table: pd.DataFrame, record: dict, seed: int, config: dict, source: str) -> None:
    """The table is this record's: one seed (``seed``), and its pooled scores are the record's."""
    if set(table["seed"].unique()) != {seed}:
        raise SystemExit(f"{source}: the run's table holds seeds {sorted(table['seed'].unique())}, not [{seed}]")
    ours = pooled_only(oof.pooled_metrics(table, subsets_of(config)))
    theirs = pooled_only(record.get("metrics", {}))
    differ = [k for k in ours.keys() & theirs.keys() if not math.isclose(ours[k], theirs[k], abs_tol=TOLERANCE)]
    if not theirs.keys() & ours.keys() or differ:
        raise SystemExit(f"{source}: the run's table does not reproduce the record's pooled scores ({differ[:3]})")


def export(record_path: Path, out: Path | None = None, tracking_uri: str | None = None) -> dict[str, Path]:
    """Keep a part's prediction table (and run file) beside its record, as ``seed-<s>.*`` in ``out``."""
    record = json.loads(record_path.read_text())
    seed = part_seed(record, record_path.as_posix())
    files = paths(out or record_path.parent, seed)
    elsewhere = files["record"].resolve() != record_path.resolve()
    if elsewhere and files["record"].exists() and json.loads(files["record"].read_text()) != record:
        raise SystemExit(f"{files['record']} holds another record than {record_path}")
    with tempfile.TemporaryDirectory(prefix="seed-record-") as tmp:
        table, config, run = fetch(record["run_id"], tracking_uri, Path(tmp))
    check_table(table, record, seed, config, record_path.as_posix())
    files["record"].parent.mkdir(parents=True, exist_ok=True)
    if elsewhere:  # the part's record joins the others only once its run and table are checked
        shutil.copyfile(record_path, files["record"])
    table.to_parquet(files["table"], index=False)
    started, finished = run.info.start_time, run.info.end_time
    files["run"].write_text(json.dumps({
        "run_id": record["run_id"], "seed": seed, "table": files["table"].name, "table_sha256": sha256(files["table"]),
        "started": _iso(started), "finished": _iso(finished),
        "minutes": round((finished - started) / 60000, 1) if started and finished else None,
        "hardware": hardware(run.data.tags), "commit": run.data.tags.get("git_commit"), "config": config,
    }, indent=2) + "\n")  # fmt: skip
    log.info("seed %d: %d rows -> %s, %s", seed, len(table), files["table"], files["run"])
    return files


# ------------------------------------------------------------------------------------------------------ merge


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b.c`` keys."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out |= flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def identity(record: dict, run: dict) -> dict[str, Any]:
    """What every part of one headline shares: the record's data, render, recipe, grouping and baselines and the
    run's whole config except :data:`NOT_COMPARED`."""
    pooled = record.get("pooled") or {}
    out = {
        "pipeline": SEED_SUFFIX.sub("", record.get("pipeline", "")),
        "snapshot_sha256": record.get("snapshot_sha256"),
        "n_structures": record.get("n_structures"),
        "render_config_hash": (record.get("render") or {}).get("render_config_hash"),
        "label_source": record.get("label_source"),
        **{k: record.get("metrics", {}).get(k) for k in CARRIED},
        "group_by": pooled.get("group_by"),
        "baselines": json.dumps(pooled.get("baselines"), sort_keys=True),
        "recipe": json.dumps(record.get("recipe"), sort_keys=True),
        "holdout_sha256": (record.get("holdout") or {}).get("sha256"),
    }
    config = {k: v for k, v in flat(run.get("config") or {}).items() if k not in NOT_COMPARED}
    return out | {f"config.{k}": json.dumps(v, sort_keys=True) for k, v in config.items()}


def read_part(folder: Path, seed: int) -> dict[str, Any]:
    """One part: record, run file and table, each present and the table the one the run file names."""
    files = paths(folder, seed)
    for kind in ("table", "run"):
        if not files[kind].is_file():
            raise SystemExit(f"{files['record']} has no {files[kind].name}: run "
                             f"`python docs/study/seed_record.py export {files['record']}` first")  # fmt: skip
    record, run = json.loads(files["record"].read_text()), json.loads(files["run"].read_text())
    if part_seed(record, files["record"].as_posix()) != seed or run.get("seed") != seed:
        raise SystemExit(f"{files['record']}: its record or run file is another seed's")
    if run.get("run_id") != record.get("run_id") or sha256(files["table"]) != run.get("table_sha256"):
        raise SystemExit(f"{files['record']}: {files['table'].name} or {files['run'].name} is another run's")
    return {"seed": seed, "files": files, "record": record, "run": run, "table": pd.read_parquet(files["table"])}


@lru_cache
def config_defaults() -> dict[str, str]:
    """Every config key at this code's default, as :func:`identity` keys: a part run before a key existed is
    compared at that key's default."""
    defaults = flat(PipelineConfig(name="defaults").model_dump(mode="json"))
    return {f"config.{k}": json.dumps(v, sort_keys=True) for k, v in defaults.items() if k not in NOT_COMPARED}


def compared(ident: dict[str, Any], key: str) -> Any:
    """``ident[key]``; a config key the part lacks (its code predates the key) at this code's default, or null."""
    if key in ident or not key.startswith("config."):
        return ident.get(key)
    return config_defaults().get(key, "null")


def check_same(parts: list[dict[str, Any]]) -> None:
    """Every part matches the first: identity (:func:`identity`, :func:`compared`), folds, structures and their
    truth."""
    first = parts[0]
    ref, heads = identity(first["record"], first["run"]), [h for h in TARGETS if h in first["table"]]
    truth = first["table"][["fold", "material_id", *heads]].sort_values(["fold", "material_id"], ignore_index=True)
    for part in parts[1:]:
        name, other = part["files"]["record"].name, first["files"]["record"].name
        theirs = identity(part["record"], part["run"])
        differ = sorted(k for k in ref.keys() | theirs.keys() if compared(ref, k) != compared(theirs, k))
        if differ:
            shown = "; ".join(f"{k}: {compared(theirs, k)} here, {compared(ref, k)} in {other}" for k in differ[:5])
            raise SystemExit(f"{name} is not a part of {other}'s headline: {shown}")
        mine = part["table"][["fold", "material_id", *heads]].sort_values(["fold", "material_id"], ignore_index=True)
        if not mine[["fold", "material_id"]].equals(truth[["fold", "material_id"]]):
            raise SystemExit(f"{name} tests other folds or structures than {other}")
        if not mine.equals(truth):
            raise SystemExit(f"{name} has other labels than {other} for the same structures")


def part_summary(part: dict[str, Any]) -> dict[str, Any]:
    """A part's files, run, dates, minutes and machine, as the merged record names them."""
    run = part["run"]
    return {"record": part["files"]["record"].name, "table": part["files"]["table"].name, "run_id": run["run_id"],
            "started": run["started"], "finished": run["finished"], "minutes": run["minutes"],
            "hardware": run["hardware"], "commit": run.get("commit")}  # fmt: skip


def merge(folder: Path) -> dict[str, Any]:
    """The merged record of every ``seed-<s>.json`` in ``folder`` (written to ``folder/merged.json``)."""
    seeds = sorted(int(m.group(1)) for p in folder.glob("seed-*.json") if (m := RECORD_NAME.match(p.name)))
    if not seeds:
        raise SystemExit(f"{folder} has no seed-<s>.json record")
    parts = [read_part(folder, s) for s in seeds]
    check_same(parts)
    first, config = parts[0]["record"], parts[0]["run"]["config"]
    subsets, ecfg = subsets_of(config), config.get("evaluate", {})
    table = pd.concat([p["table"] for p in parts], ignore_index=True)
    metrics = oof.summarise(table, subsets, n_resamples=int(ecfg.get("bootstrap_resamples", 2000)),
                            seed=int(ecfg.get("bootstrap_seed", 0)))  # fmt: skip
    metrics |= {k: first["metrics"][k] for k in CARRIED if k in first["metrics"]}
    holdout = first.get("holdout") or {}
    merged = {
        "pipeline": SEED_SUFFIX.sub("", first["pipeline"]),
        "protocol": f"grouped by {first['pooled']['group_by']}, {split_text(first['metrics']['n_folds'], holdout)}; "
        f"one part per training seed on the same {'split' if holdout.get('use') == 'test' else 'folds'}; per "
        f"structure, {'on the hold-out' if holdout.get('use') == 'test' else 'pooled out of fold'}, seed-averaged",
        "group_by": first["pooled"]["group_by"],
        "n_folds": first["metrics"]["n_folds"],
        **({"holdout": holdout} if holdout else {}),
        "seeds": seeds,
        "snapshot_id": first["snapshot_id"],
        "snapshot_sha256": first["snapshot_sha256"],
        "n_structures": first["n_structures"],
        "label_source": first["label_source"],
        "baselines": first["pooled"]["baselines"],
        "recipe": first["recipe"],
        "bootstrap": "paired over structures; seed-averaged metric per resample",
        "parts": {str(p["seed"]): part_summary(p) for p in parts},
        "metrics": metrics,
        "per_seed": {str(p["seed"]): oof.pooled_metrics(p["table"], subsets) for p in parts},
    }
    (folder / MERGED).write_text(json.dumps(merged, indent=2) + "\n")
    return merged


# ------------------------------------------------------------------------------------------------------ tables


def split_text(n_folds: float, holdout: dict) -> str:
    """How the parts were tested: k folds, or the one hold-out (``split.holdout.use: test``) by file and sha256."""
    if holdout.get("use") != "test":
        return f"{n_folds:.0f} folds"
    file = Path(holdout["file"])  # relative to the checkout (absolute in records made before that)
    shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
    tested, n_ids = holdout.get("n_tested", holdout["n_ids"]), holdout["n_ids"]
    count = f"{n_ids} ids" if tested == n_ids else f"{tested} of its {n_ids} ids tested"
    return (f"test set: the hold-out {shown} ({count}, sha256 {holdout['sha256'][:12]}), training + "
            "validation carved from the other structures")  # fmt: skip


def per_seed_table(merged: dict) -> str:
    """The image model's pooled score on every structure, per seed, then the seeds' sample std."""
    cols = [(h, m, t) for h, m, t in st.COLUMNS if f"pooled_model_{m}_{h}" in merged["metrics"]]
    lines = ["| image model, seed | " + " | ".join(t for *_, t in cols) + " |", "|---|" + "---|" * len(cols)]
    for seed, m in merged["per_seed"].items():
        lines.append(f"| {seed} | " + " | ".join(st.value_cell(m, f"pooled_model_{k}_{h}") for h, k, _ in cols) + " |")
    if len(merged["per_seed"]) > 1:
        stds = [merged["metrics"].get(f"pooled_model_{k}_{h}_seed_std") for h, k, _ in cols]
        lines.append("| sample std over seeds | " + " | ".join("" if s is None else f"{s:.2f}" for s in stds) + " |")
    return "\n".join(lines)


def render(merged: dict, source: str, missing: list[int] | None = None) -> str:
    """The merged record's tables: every scope with intervals and seed spread, then the image model per seed."""
    m, holdout = merged["metrics"], merged.get("holdout") or {}
    on_holdout = holdout.get("use") == "test"
    what = "split" if on_holdout else "folds"
    scored = "out-of-fold predictions scored once over every structure"
    if on_holdout:
        scored = "predictions of the hold-out's structures scored once"
    runs = "; ".join(f"seed {s}: {p['finished'][:10]}, {p['minutes']:.0f} min wall ({p['hardware']}"
                     + (f", commit {p['commit'][:7]})" if p.get("commit") else ")")
                     for s, p in merged["parts"].items())  # fmt: skip
    text = (
        f"Records: `{source}/seed-*.json`, one part per training seed, each with its out-of-fold table "
        f"(`seed-<s>.oof.parquet`), merged into `{source}/{MERGED}` (pipeline `{merged['pipeline']}`; grouped by "
        f"**{merged['group_by']}**, {split_text(merged['n_folds'], holdout)}, the same {what} in every part). "
        f"Runs: {runs}. Per structure: each seed's {scored}, then averaged over "
        f"{len(merged['seeds'])} seed(s); the image model's 95 % bootstrap interval over structures in brackets, "
        "± the sample std of the seeds' pooled scores (two seeds or more; not shown under 0.01). Differences: image "
        "model minus baseline, paired over structures, seed-averaged per resample, 95 % interval. The baselines are "
        "refit in every part with their own fixed seeds. Band gap and e_hull are surrogate labels (see the data "
        "section), the band gaps a pretrained CGCNN's predictions, which favours CGCNN on that head."
    )
    if missing:
        text += f" Seeds not run yet: {', '.join(map(str, missing))}."
    parts = [text, f"Every structure ({m['pooled_n_structures']:.0f}):", st.scope_table(m, spread=True)]
    parts += st.subset_sections(m, spread=True)
    parts += ["Image model per seed, every structure:", per_seed_table(merged)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="Keep a part's prediction table and run file beside its record.")
    ex.add_argument("record", type=Path)
    ex.add_argument("--out", type=Path, help="Folder of the parts (default: the record's).")
    ex.add_argument("--tracking-uri", help="MLflow tracking URI (default: crystalvision's settings).")
    mg = sub.add_parser("merge", help="Merge every part in a folder into merged.json and its tables.")
    mg.add_argument("folder", type=Path)
    mg.add_argument("--seeds", nargs="*", type=int, default=None, help="The headline's seeds, to name missing ones.")
    mg.add_argument("--readme", type=Path, help="Write the tables between this page's --marker markers.")
    mg.add_argument("--marker", default=MARKER, help=f"The page's markers to write between (default: {MARKER}).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "export":
        return export(args.record, args.out, args.tracking_uri)
    merged = merge(args.folder)
    missing = [s for s in args.seeds or [] if s not in merged["seeds"]]
    text = render(merged, args.folder.as_posix(), missing)
    if args.readme:
        args.readme.write_text(st.replace_between(args.readme.read_text(), args.marker, text))
    else:
        print(text)
    return merged


if __name__ == "__main__":
    main()
