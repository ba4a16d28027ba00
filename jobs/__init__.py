"""Ray job entrypoints: ``ray job submit --address ... --working-dir . -- python -m jobs.<stage> ...``.

A job's ``python`` is the first one on the ``PATH`` of the shell that started the Ray head node; started outside the
project's environment that is the system's, without Ray: then this says so in one line (exit 2) instead of a
``ModuleNotFoundError`` deep in the job.
"""

import importlib.util as _util
import sys as _sys

if _util.find_spec("ray") is None:
    print(
        f"error: the job's python ({_sys.executable}) has no Ray: start every Ray node from the project's "
        "environment (source .venv/bin/activate, then ray start ...), or make the entrypoint that environment's "
        "python (-- /path/to/.venv/bin/python -m jobs.STAGE ...)",
        file=_sys.stderr,
    )
    raise SystemExit(2)
