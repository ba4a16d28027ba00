"""Reading a pipeline YAML into a :class:`PipelineConfig`: ``--set key=value`` overrides merged in, and one error
that names the file and every bad key (unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from crystalvision.core.config import PipelineConfig
from crystalvision.core.errors import ConfigError


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"invalid pipeline config {path}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{loc}': remove it or fix its spelling")
        else:
            lines.append(f"  - {loc}: {e['msg']}")
    return "\n".join(lines)


# Keys of a pipeline that name a local file or folder: relative ones in a pipeline file resolve against that file's
# folder (the file goes wherever the checkout goes: a Ray job's package, the Docker image), those in overrides
# against the caller's working dir.
PATH_KEYS = (("snapshot", "uri"), ("registry", "generalisation_record"), ("split", "holdout", "ids"))


def resolve_paths(raw: dict, folder: Path) -> dict:
    """A copy of the nested dict ``raw`` with each relative local path under :data:`PATH_KEYS` made absolute
    against ``folder`` (URIs such as ``s3://`` and absolute paths unchanged)."""
    out = dict(raw)
    for *sections, key in PATH_KEYS:
        out = _resolved(out, sections, key, folder)
    return out


def _resolved(raw: dict, sections: list[str], key: str, folder: Path) -> dict:
    """``raw`` with the path at ``sections`` + ``key`` made absolute (copied on the way down; unchanged if absent)."""
    if not sections:
        value = raw.get(key)
        if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
            return {**raw, key: str((folder / value).resolve())}
        return raw
    node = raw.get(sections[0])
    return {**raw, sections[0]: _resolved(node, sections[1:], key, folder)} if isinstance(node, dict) else raw


def load_pipeline(path: str | Path, overrides: dict | None = None, base: str | Path | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; ``overrides`` is a nested dict merged on top. Relative paths in the file
    resolve against its folder, those in ``overrides`` against ``base`` (default: the working dir)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline config {p} not found: pass a YAML file such as pipelines/quickstart.yaml")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline config {p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"pipeline config {p} must be a mapping at the top level")
    raw = resolve_paths(raw, p.resolve().parent)
    if overrides:
        raw = deep_merge(raw, resolve_paths(overrides, Path(base) if base is not None else Path.cwd()))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(str(p), exc)) from exc


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["train.epochs=2", "render.image_size=32"]`` into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. train.epochs=2")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"override '{item}' sets a key inside '{section}', which another override set to {node!r}; "
                    f"give either {section}=... or {section}.<key>=..., not both"
                )
        node[parts[-1]] = yaml.safe_load(value)
    return out
