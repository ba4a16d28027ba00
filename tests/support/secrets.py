"""The secrets the secret tests set, and how they look for them."""

from __future__ import annotations

import pytest

S3_KEYS = {
    "CRYSTALVISION_AWS_ACCESS_KEY_ID": "AKIASECRETID4TEST9",
    "CRYSTALVISION_AWS_SECRET_ACCESS_KEY": "s3cr3t/KEY+value+Do-Not-Leak",
    "CRYSTALVISION_AWS_SESSION_TOKEN": "FwoGZXIvSESSION+token/Do-Not-Leak",
}
SECRETS = {
    "MP_API_KEY": "mpkeyZq81SECRETw7Yx0123456789abc",  # 32 characters: a well-formed key, sent to the replay API
    **S3_KEYS,
    "MLFLOW_TRACKING_PASSWORD": "trackingPASSWORD-Do-Not-Leak",
    "MLFLOW_TRACKING_TOKEN": "trackingTOKEN-Do-Not-Leak",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "adminPASSWORD-Do-Not-Leak",
}
URI_PASSWORD = "pgPASSWORD-in-a-uri"  # configured nowhere: masked because it sits in a URI
ALL = {**SECRETS, "URI_PASSWORD": URI_PASSWORD}  # every value no output may hold


def leaks(text: str) -> list[str]:
    """The names of the secrets ``text`` holds."""
    return [name for name, value in ALL.items() if value in text]


def s3_keys_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 keys from CRYSTALVISION_AWS_* alone: the AWS default chain cannot find them, so the driver's filesystem
    carries them explicitly."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in S3_KEYS.items():
        monkeypatch.setenv(name, value)
