"""Runtime settings: where data, objects, tracking and Ray live. One pydantic-settings model per concern.

Every field can be set from the environment with the prefix ``CRYSTALVISION_`` (the MP key also from
``MP_API_KEY``, S3 credentials also from the standard ``AWS_*`` variables). Secrets are ``SecretStr`` so they
never appear in ``repr``, logs or MLflow params.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crystalvision.core.uris import credentials

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # crystalvision/, the package root (this file is core/settings.py)
SNAPSHOTS_DIR = PACKAGE_DIR / "data" / "snapshots"
BUNDLED_SNAPSHOT = SNAPSHOTS_DIR / "lmno"
CHECKOUT = PACKAGE_DIR.parents[1]  # the checkout holding platform/crystalvision: records name its files from here


def from_checkout(path: str | Path) -> str:
    """``path`` as records, params and config hashes name it: relative to the checkout (``CHECKOUT``, e.g.
    ``docs/study/records/holdout.json``) when inside it, so they carry no machine's path; absolute otherwise."""
    p = Path(path).expanduser().resolve()
    return p.relative_to(CHECKOUT).as_posix() if p.is_relative_to(CHECKOUT) else str(p)


def bundled_snapshots() -> dict[str, Path]:
    """The snapshots shipped with the package, by name (``snapshot.name`` in a pipeline): name -> folder."""
    return {p.name: p for p in sorted(SNAPSHOTS_DIR.iterdir()) if (p / "manifest.json").is_file()}


def _home() -> Path:
    import os

    return Path(os.environ.get("CRYSTALVISION_HOME", ".crystalvision")).resolve()


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRYSTALVISION_", extra="ignore", populate_by_name=True)


class PathSettings(_Base):
    """The working folder that holds the embedded defaults (object store, MLflow database, Ray storage)."""

    home: Path = Field(
        default_factory=_home,
        description="Root of local state; env CRYSTALVISION_HOME (default .crystalvision in the working dir; a Ray "
        "job's: ~/.crystalvision, never inside its runtime-env package).",
    )


class DataSettings(_Base):
    """Where snapshots are read from and written to."""

    snapshot_uri: str = Field(
        default=str(BUNDLED_SNAPSHOT),
        description="Snapshot folder to use by default (the bundled Li-Mn-Ni-O snapshot).",
    )
    snapshots_root: str = Field(
        default_factory=lambda: str(_home() / "snapshots"),
        description="Folder where `crystalvision ingest` writes new snapshots.",
    )


class StorageSettings(_Base):
    """Object storage for rendered images and tables: a local folder, or s3://bucket/prefix."""

    object_store_uri: str = Field(
        default_factory=lambda: str(_home() / "store"),
        description="Root URI of the object store (local path or s3://bucket/prefix).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3 endpoint override (MinIO, moto, Ceph); None means AWS.",
    )
    s3_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("CRYSTALVISION_S3_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"),
        description="S3 region.",
    )
    s3_retry_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a store operation keeps retrying an unreachable S3 endpoint before a StorageError "
        "(on top of the S3 client's own 5 attempts).",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key (secret; never logged).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key (secret; never logged).",
    )
    aws_session_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="S3 session token of temporary credentials (secret; never logged).",
    )


class TrackingSettings(_Base):
    """MLflow tracking: SQLite + local artifact folder by default, any tracking server otherwise."""

    mlflow_tracking_uri: str = Field(
        default_factory=lambda: f"sqlite:///{_home() / 'mlflow.db'}",
        validation_alias=AliasChoices("CRYSTALVISION_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI (sqlite:///..., http://host:5000).",
    )
    mlflow_artifact_location: str = Field(
        default_factory=lambda: str(_home() / "mlartifacts"),
        description="Artifact root for experiments created here (local folder or s3://).",
    )
    experiment_name: str = Field(default="crystalvision", description="Default MLflow experiment.")
    model: str = Field(
        default="models:/lmno-efficientnet-b0-quickstart@champion",
        description="The model `crystalvision predict` uses without --model or --config: any MLflow model URI "
        "(default: the champion that `make run` registers).",
    )
    # MLflow reads these itself; they are here so that they are masked like every other secret.
    mlflow_tracking_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_PASSWORD"),
        description="Basic-auth password of the tracking server (secret; never logged).",
    )
    mlflow_tracking_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_TOKEN"),
        description="Bearer token of the tracking server (secret; never logged).",
    )
    mlflow_admin_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_AUTH_ADMIN_PASSWORD"),
        description="The MLflow server's first-start admin password (secret; never logged).",
    )


class RaySettings(_Base):
    """How to reach Ray: None starts a local cluster in this process."""

    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_RAY_ADDRESS", "RAY_ADDRESS"),
        description="Ray cluster address ('auto', 'ray://host:10001'); None starts a local one.",
    )
    ray_storage_path: str = Field(
        default_factory=lambda: str(_home() / "ray_results"),
        description="Ray Train/Tune storage path for checkpoints (local path or s3://).",
    )
    ray_num_cpus: int | None = Field(default=None, description="CPUs for a local Ray cluster (None: all).")


class MPSettings(_Base):
    """Materials Project API access through mp-api."""

    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MP_API_KEY", "CRYSTALVISION_MP_API_KEY", "PMG_MAPI_KEY"),
        description="Materials Project API key (secret; never logged). Get one at materialsproject.org.",
    )
    endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CRYSTALVISION_MP_ENDPOINT", "MP_API_ENDPOINT"),
        description="API endpoint override (a replay server in tests); None means the public API.",
    )
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries with exponential back-off on 429/5xx.")
    retry_backoff_s: float = Field(
        default=1.0, ge=0, le=60, description="First back-off delay; doubles each retry (with jitter)."
    )
    retry_max_backoff_s: float = Field(default=60.0, gt=0, le=600, description="Cap on one back-off delay.")


class Settings(_Base):
    """All settings together."""

    paths: PathSettings = Field(default_factory=PathSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    mp: MPSettings = Field(default_factory=MPSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once from the environment (call ``get_settings.cache_clear()`` after changing it)."""
    return Settings()


def secret_values(settings: Settings | None = None) -> list[str]:
    """Every secret currently configured, for redaction and for tests that check nothing leaks: the secret
    settings and the password inside every configured URI."""
    s = settings or get_settings()
    secrets = [
        s.mp.api_key,
        s.storage.aws_access_key_id,
        s.storage.aws_secret_access_key,
        s.storage.aws_session_token,
        s.tracking.mlflow_tracking_password,
        s.tracking.mlflow_tracking_token,
        s.tracking.mlflow_admin_password,
    ]
    values = [v.get_secret_value() for v in secrets if v is not None and v.get_secret_value()]
    return values + [p for uri in _configured_uris(s) for p in credentials(uri) if p not in values]


def _configured_uris(s: Settings) -> list[str]:
    """Every URI configured now: the settings' own and any in the environment (MLflow server URIs too)."""
    import os

    own = [s.tracking.mlflow_tracking_uri, s.tracking.mlflow_artifact_location, s.storage.object_store_uri]
    own += [s.storage.s3_endpoint_url, s.mp.endpoint, s.ray.ray_address, s.ray.ray_storage_path]
    return [u for u in dict.fromkeys([*own, *os.environ.values()]) if u and "://" in u]
