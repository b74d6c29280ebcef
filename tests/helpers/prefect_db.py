"""A migrated Prefect database, made once per test session and copied into fresh homes.

Every Prefect server the suite starts on an empty SQLite file runs all of Prefect's
migrations first: about 6 CPU-seconds each, the same work for each of the dozen servers a
`make test` starts. The first worker to need one migrates a database under a file lock; the
others copy it (SQLite's backup API, so the copy is whole whatever the journal mode), and
their servers find nothing left to migrate.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from filelock import FileLock

# Prefect's own code for a new database: `prefect server start` runs the same on startup.
MIGRATE = ("import asyncio; from prefect.server.database import provide_database_interface; "
           "asyncio.run(provide_database_interface().create_db())")


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder that every xdist worker sees (each worker's basetemp is a
    subfolder of it); a run without xdist has only its own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def template(shared: Path) -> Path:
    """The session's migrated database, made by the first caller."""
    database = shared / "prefect-template" / "prefect.db"
    with FileLock(shared / "prefect-template.lock"):
        if not database.is_file():
            migrate(database)
    return database


def migrate(database: Path) -> None:
    building = database.parent / "building"
    building.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(building)}  # the default database lives there
    for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", MIGRATE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"migrating a Prefect database failed:\n{done.stderr[-3000:]}"
    copy_database(building / "prefect.db", database)


def copy_database(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as reader, closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)
    return target


def migrated_database(tmp_path_factory: pytest.TempPathFactory, target: Path) -> Path:
    """A copy of the session's migrated database at `target` (a home's `prefect.db`)."""
    return copy_database(template(shared_folder(tmp_path_factory)), target)
