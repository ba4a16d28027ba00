"""Logging set-up for the CLI and jobs, and the one secret-masking function everything calls (:func:`mask`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from crystalvision.core.settings import secret_values
from crystalvision.core.uris import MASK, mask_uris

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def mask(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every configured secret and the user info of every URI (:func:`uris.mask_uris`) replaced by
    ``***``.

    ``secrets`` defaults to those configured now (:func:`settings.secret_values`: MP key, S3 keys and session
    token, MLflow tracking password/token, MLflow admin password, the password of every configured URI). The CLI,
    the job entrypoints, logging, tracking, the run summary and mp all call this.
    """
    values = secret_values() if secrets is None else list(secrets)
    for secret in sorted((s for s in values if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return mask_uris(text)


class RedactSecrets(logging.Filter):
    """Mask secrets (:func:`mask`) in a log record's message, its traceback text and its stack text."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self._fixed = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask(msg, self._fixed)
        if masked != msg:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, self._fixed)
        if record.stack_info:
            record.stack_info = mask(record.stack_info, self._fixed)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (a test runner's or CliRunner's replacement too), so a
    handler made while stderr was swapped never writes to a stream closed since."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current sys.stderr always wins
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once: level from CRYSTALVISION_LOG_LEVEL (default INFO), secrets masked."""
    level = level or os.environ.get("CRYSTALVISION_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "_crystalvision", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._crystalvision = True  # type: ignore[attr-defined]
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "filelock", "matplotlib", "PIL", "alembic", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
