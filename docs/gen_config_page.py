"""Write docs/configuration.md from the code: every pipeline config key and every environment variable.

The pipeline keys come from the pydantic models behind ``PipelineConfig`` (type, default, allowed range and the
field's own description). The environment variables come from the runtime settings models (their ``CRYSTALVISION_``
names and aliases) plus every other ``CRYSTALVISION_*`` name found in the source; a name found in the source that is
neither a setting nor described in :data:`OTHER_VARIABLES` below is an error, so a new variable cannot go
undocumented.

    python docs/gen_config_page.py            # rewrite docs/configuration.md
    python docs/gen_config_page.py --check    # exit 1 if the committed page is stale
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

try:
    from pydantic import AliasChoices, BaseModel, SecretStr
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticUndefined

    import crystalvision  # noqa: F401
except ModuleNotFoundError as exc:  # a python without the project's packages (the system's)
    print(
        f"error: {sys.executable} lacks the project's packages ({exc}); run this with the project's environment: "
        "source .venv/bin/activate, then python docs/gen_config_page.py (or .venv/bin/python docs/gen_config_page.py)",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
# Where the code reads environment variables (the package, the Ray job entrypoints, the MLflow launcher, benchmarks).
SCAN = ("platform/crystalvision", "jobs", "mlflow", "bench", "tests/run_files.py")

# Descriptions of pipeline keys whose pydantic field carries none (the model's own description wins when present).
FALLBACK: dict[str, str] = {}  # every key describes itself in the models (Field description)

# CRYSTALVISION_* variables the code reads outside the settings models: default and meaning.
OTHER_VARIABLES = {
    "CRYSTALVISION_RAY_OBJECT_STORE_MB": (
        "3x the job's decoded images, 256 MiB to Ray's default",
        "Object store of a local Ray cluster in MiB; 0: Ray's own default.",
    ),
    "CRYSTALVISION_WATCH_LEASE_S": (
        "300",
        "Lease of the retrain lock in seconds (1 to 86400); must exceed the longest stretch without progress.",
    ),
    "CRYSTALVISION_TRAIN_LEASE_S": (
        "300",
        "Lease of the lock on a Ray Train run name in seconds (1 to 86400), renewed by training and validation "
        "batches; must exceed the longest stretch without progress.",
    ),
    "CRYSTALVISION_LOG_LEVEL": ("INFO", "Level of the library log (the log file; the terminal shows progress)."),
    "CRYSTALVISION_MLFLOW_FLUSH_TIMEOUT_S": (
        "60",
        "How long the end of training waits for MLflow logging held back by an outage.",
    ),
    "CRYSTALVISION_MLFLOW_WAIT_S": ("5", "How long one logging call waits for an unreachable MLflow."),
    "CRYSTALVISION_TRAIN_FAULT": (
        "unset",
        "Fault injection for tests: `rank=1,epoch=2,step=1` makes that training worker exit there, once per run; "
        "`slow_ms=800` makes every training step of rank 0 0.8 s longer.",
    ),
    "CRYSTALVISION_RENDER_FAULT": (
        "unset",
        "Fault injection for tests and benchmarks (`after=3`, `simulate_ms=X`): a render actor fails or sleeps.",
    ),
    "CRYSTALVISION_BENCH_THREADS": ("2", "Torch threads of `python -m bench.impostor_equivalence`."),
    "CRYSTALVISION_TEST_JOBS": ("1", "Ray Train test files `tests/run_files.py` runs at once (`-j`)."),
    "CRYSTALVISION_TEST_LANES": ("2 lanes", "`1`: `tests/run_files.py` runs all test files in one lane."),
    "CRYSTALVISION_TEST_CACHE": (
        "set by `tests/run_files.py`",
        "Folder the test processes of one suite run share (a migrated empty MLflow database); unset: the temp folder.",
    ),
}


def _module(*names: str) -> types.ModuleType:
    """The first importable module of ``names`` (the package's layout may move a module into a sub-package)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"none of {names} can be imported; update docs/gen_config_page.py")


def _type(t: Any) -> str:
    """A short, readable type: ``int``, ``float | None``, ``"uniform" | "trajectory"``, ``list[int]``."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is type(None):
        return "None"
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(a) for a in args)}]"
    if isinstance(t, type):
        return t.__name__
    return str(t)


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    return REQUIRED if field.default is PydanticUndefined else field.default


REQUIRED = object()


def _value(v: Any) -> str:
    if v is REQUIRED:
        return "required"
    if isinstance(v, BaseModel):
        return "(section)"
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f'`"{v}"`' if v else '`""`'
    if isinstance(v, tuple):
        v = list(v)
    return f"`{v}`".replace("'", '"')


def _range(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(parts)


def _submodel(t: Any) -> type[BaseModel] | None:
    """The model a field holds (also through ``X | None``), else None."""
    for a in (t, *typing.get_args(t)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key of ``model``, nested sections flattened with dots."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _submodel(field.annotation)
        desc = field.description or FALLBACK.get(key, "")
        rng = _range(field)
        if rng:
            desc = f"{desc} Allowed: {rng}." if desc else f"Allowed: {rng}."
        if sub is not None and field.annotation is sub:  # a section: its keys follow
            continue
        rows.append((key, _type(field.annotation), _value(_default(field)), desc))
        if sub is not None:  # an optional nested model (split.test_only): its keys too
            rows += config_rows(sub, f"{key}.")
    return rows


def sections(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    return [(n, f.annotation) for n, f in model.model_fields.items() if _submodel(f.annotation) is f.annotation]


def env_names(model: type[BaseModel], name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{model.model_config.get('env_prefix', '')}{name}".upper()]


def settings_rows(settings_mod: types.ModuleType) -> list[tuple[str, str, str, str]]:
    home = str(settings_mod._home())
    package = str(settings_mod.PACKAGE_DIR)
    rows = []
    for _, group in settings_mod.Settings.model_fields.items():
        model = group.annotation
        for name, field in model.model_fields.items():
            names = env_names(model, name, field)
            secret = "SecretStr" in _type(field.annotation) or field.annotation is SecretStr
            default = _default(field)
            if name == "home":
                shown = "`./.crystalvision`"
            elif default is None:
                shown = "unset"
            else:
                text = str(default).replace(home, "$CRYSTALVISION_HOME").replace(package, "<package>")
                shown = f"`{text}`"
            desc = field.description or ""
            if secret and "secret" not in desc.lower():
                desc += " Secret: never logged."
            rows.append((", ".join(f"`{n}`" for n in names), _type(field.annotation), shown, desc))
    return rows


def source_variables() -> set[str]:
    found: set[str] = set()
    for entry in SCAN:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            found |= {m for m in re.findall(r"CRYSTALVISION_[A-Z0-9_]+", f.read_text()) if not m.endswith("_")}
    return found


def page() -> str:
    config_mod = _module("crystalvision.core.config")
    settings_mod = _module("crystalvision.core.settings")
    pipeline = config_mod.PipelineConfig
    out = [
        "# Configuration",
        "",
        "<!-- Generated by docs/gen_config_page.py from the pydantic models; do not edit by hand. -->",
        "",
        "A pipeline is a YAML file (`pipelines/*.yaml`) validated against the models below: unknown keys are "
        "errors, and every key can be overridden on the command line with `--set section.key=value` (values are "
        "parsed as YAML, e.g. `--set 'train.seeds=[0, 1, 2]'`). `crystalvision pipeline validate FILE` prints the "
        "resolved config. Where things live (stores, tracking, Ray) is not part of a pipeline: it comes from the "
        "[environment](#environment).",
        "",
        "## Top level",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, typ, default, desc in config_rows(pipeline):
        out.append(f"| `{key}` | `{_cell(typ)}` | {_cell(default)} | {_cell(desc)} |")
    for name, model in sections(pipeline):
        doc = " ".join((model.__doc__ or "").split())
        out += ["", f"## `{name}`", "", doc, "", "| key | type | default | description |", "|---|---|---|---|"]
        for key, typ, default, desc in config_rows(model, f"{name}."):
            out.append(f"| `{key}` | `{_cell(typ)}` | {_cell(default)} | {_cell(desc)} |")
    out += [
        "",
        "## Environment",
        "",
        "Runtime settings are read from the environment once per process. `$CRYSTALVISION_HOME` is the local "
        "state folder (not your `$HOME`); `<package>` is the installed package's folder. Where a row names several "
        "variables, the first one set wins.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    rows = settings_rows(settings_mod)
    for names, typ, default, desc in rows:
        out.append(f"| {names} | `{_cell(typ)}` | {_cell(default)} | {_cell(desc)} |")
    covered = {n.strip("`") for names, *_ in rows for n in names.split(", ")}
    extra = source_variables() - covered
    unknown = sorted(extra - set(OTHER_VARIABLES))
    if unknown:
        raise SystemExit(f"undocumented environment variables {unknown}: describe them in OTHER_VARIABLES ({__file__})")
    out += [
        "",
        "Read directly by the code (not part of the settings models):",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name in sorted(extra):
        default, desc = OTHER_VARIABLES[name]
        out.append(f"| `{name}` | {_cell(default)} | {_cell(desc)} |")
    out += [
        "",
        "MLflow and Ray read their own variables as well (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`, "
        "`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `RAY_AUTH_MODE`, `RAY_AUTH_TOKEN`, ...); see [Cluster and "
        "Kubernetes](cluster.md) and [Failure modes](failure-modes.md).",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is not current")
    ap.add_argument("--out", type=Path, default=PAGE)
    args = ap.parse_args(argv)
    text = page()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run python docs/gen_config_page.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
