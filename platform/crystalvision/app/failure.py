"""How a failed command ends for people, the same in the CLI and in a Ray job's log: one clear line for errors
a user can fix (exit 2), a traceback without local variables for anything else (exit 1); every secret masked."""

from __future__ import annotations

import re
import traceback

from crystalvision.core import CrystalVisionError, mask

_API_REQUEST = re.compile(r"API request to (?P<url>\S+?)/api/\S* failed")


def unreachable_server(exc: BaseException) -> str | None:
    """The MLflow server URL when ``exc`` is MLflow's client giving up on a connection (refused, unknown host,
    timed out), else None."""
    import requests

    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if not any(isinstance(e, requests.exceptions.ConnectionError) for e in chain):
        return None
    found = next((m for e in chain if (m := _API_REQUEST.search(str(e)))), None)
    return found.group("url") if found else None


def describe(exc: BaseException) -> tuple[int, str]:
    """``(exit code, text)`` for ``exc``, secrets masked: ``error: ...`` and 2 for a CrystalVisionError or an
    unreachable MLflow server, the traceback and 1 for anything else."""
    if isinstance(exc, CrystalVisionError):
        return 2, f"error: {mask(str(exc))}"
    url = unreachable_server(exc)
    if url is not None:
        return 2, (
            f"error: the MLflow tracking server {mask(url)} is unreachable; start it (python mlflow/launch.py "
            "embedded) or set MLFLOW_TRACKING_URI to a running server"
        )
    return 1, mask("".join(traceback.format_exception(exc))).rstrip()
