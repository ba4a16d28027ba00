"""A fresh MLflow SQLite database without MLflow's schema migrations each time.

A new ``mlflow.db`` runs every Alembic migration of MLflow's schema (one commit each): 2 s on idle 2 cores, about 6 s
under load, in every test home and every test server. :func:`place_fresh_db` copies a database migrated once per
MLflow version instead (0.1 s): once per suite under ``tests/run_files.py`` (``CRYSTALVISION_TEST_CACHE``, the
folder its test processes share), else once per ``TMPDIR``. The copy holds MLflow's tables and nothing else: its
default experiment is removed, so the first store that opens it creates that experiment with its own artifact root,
as on a new database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

SQLITE = "sqlite:///"
CACHE_ENV = "CRYSTALVISION_TEST_CACHE"  # a folder every test process of one suite run shares (tests/run_files.py)


def _template() -> Path:
    """The migrated, empty database of this MLflow version (made once per TMPDIR; concurrent makers both finish)."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    cache = os.environ.get(CACHE_ENV) or tempfile.gettempdir()
    path = Path(cache) / "cv-mlflow-db" / f"empty-{mlflow.__version__}.db"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=path.parent))
    store = SqlAlchemyStore(f"{SQLITE}{work / 'mlflow.db'}", str(work / "artifacts"))
    store.engine.dispose()
    with sqlite3.connect(work / "mlflow.db") as db:
        db.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")
    os.replace(work / "mlflow.db", path)
    shutil.rmtree(work, ignore_errors=True)
    return path


def place_fresh_db(db: Path) -> None:
    """Put an empty, migrated MLflow database at ``db`` unless a file is there already."""
    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), db)


def place_fresh_db_for(tracking_uri: str) -> None:
    """:func:`place_fresh_db` for a ``sqlite:///`` tracking URI (any other URI: nothing to do)."""
    if tracking_uri.startswith(SQLITE):
        place_fresh_db(Path(tracking_uri[len(SQLITE) :]))
