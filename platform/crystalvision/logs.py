"""Logging set-up for the CLI and jobs, with a filter that masks every configured secret."""

from __future__ import annotations

import logging
import os

from crystalvision.settings import secret_values

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replace any configured secret (MP key, S3 credentials) in a log record with '***'."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self._fixed = secrets

    @property
    def secrets(self) -> list[str]:
        """The secrets to mask: the fixed list, else those configured now (settings can change after start-up)."""
        values = self._fixed if self._fixed is not None else secret_values()
        return [s for s in values if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            msg = record.getMessage()
            masked = msg
            for s in secrets:
                masked = masked.replace(s, "***")
            if masked != msg:
                record.msg, record.args = masked, None
        return True


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once: level from CRYSTALVISION_LOG_LEVEL (default INFO), secrets masked."""
    level = level or os.environ.get("CRYSTALVISION_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "_crystalvision", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._crystalvision = True  # type: ignore[attr-defined]
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "filelock", "matplotlib", "PIL", "alembic", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
