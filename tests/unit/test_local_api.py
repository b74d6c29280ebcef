"""The migration stamp: a server start skips Prefect's migrations only while the database
is at the schema revision this Prefect version recorded after migrating it."""

import sqlite3
from contextlib import closing

import pytest

from flows import api


def make_database(path, revision: str | None) -> None:
    with closing(sqlite3.connect(path)) as db:
        if revision is not None:
            db.execute("CREATE TABLE alembic_version (version_num TEXT)")
            db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        db.commit()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    return tmp_path


def test_migrations_are_skipped_only_for_a_database_at_the_recorded_revision(home):
    assert not api.is_migrated()  # no database yet: the first start migrates
    make_database(home / "prefect.db", "abc123")
    assert not api.is_migrated()  # a database nobody recorded
    api.record_migration()
    assert api.is_migrated()

    (home / "prefect.db").unlink()  # deleted and created anew, empty: migrate again
    make_database(home / "prefect.db", None)
    assert not api.is_migrated()
    api.record_migration()  # nothing to record for an unmigrated file
    assert not api.is_migrated()

    (home / "prefect.db").unlink()  # an older schema put in its place: migrate again
    make_database(home / "prefect.db", "older")
    assert not api.is_migrated()


def test_a_configured_database_is_always_checked(home, monkeypatch):
    make_database(home / "prefect.db", "abc123")
    api.record_migration()
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/x")
    assert not api.is_migrated()
