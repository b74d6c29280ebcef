"""The local API: the migration stamp (a server start skips Prefect's migrations only while
the database is at the schema revision this Prefect version recorded after migrating it),
the readiness check and the environment it gives the command and the server."""

import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digits.environment import ENV_DEFAULTS
from digits.errors import UsageError
from flows import api

REPO = Path(__file__).resolve().parents[2]


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


class FakeServer:
    """Stands for the uvicorn process: running until stopped."""

    def poll(self):
        return None

    def terminate(self):
        pass

    def wait(self, timeout=None):
        return 0


@pytest.fixture
def health_port():
    """A loopback HTTP server whose /api/health answers 200, as a started API does."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxied(monkeypatch):
    """http_proxy pointing at a closed port and no no_proxy: a proxy would refuse everything."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{api.free_port()}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_starts(home, monkeypatch):
    """local_api starts a FakeServer; the environment each start was given is collected."""
    envs = []

    def popen(*args, env, **kwargs):
        envs.append(env)
        return FakeServer()

    monkeypatch.setattr(api, "configured_api_url", lambda: None)
    monkeypatch.setattr(api.subprocess, "Popen", popen)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return envs


@pytest.fixture
def started(home, fake_starts):
    """fake_starts on a database migrated before."""
    make_database(home / "prefect.db", "abc123")
    api.record_migration()
    return fake_starts


def test_the_readiness_check_never_goes_through_a_proxy(home, health_port, proxied, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{health_port}/api")
    began = time.monotonic()
    api.wait_until_ready(FakeServer(), timeout=3)
    assert time.monotonic() - began < 2


def test_a_started_api_is_reached_without_a_proxy(home, proxied, started, monkeypatch):
    monkeypatch.setenv("no_proxy", "example.com")
    loopback = {"example.com", "127.0.0.1", "localhost"}
    with api.local_api():
        for name in ("no_proxy", "NO_PROXY"):  # Prefect's client (httpx) reads either
            assert set(os.environ[name].split(",")) == loopback
            assert set(started[0][name].split(",")) == loopback  # the server's own
    assert os.environ["no_proxy"] == "example.com" and "NO_PROXY" not in os.environ


def test_no_proxy_for_every_host_is_kept(home, proxied, started, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "*")  # urllib honours `*` only on its own
    with api.local_api():
        assert os.environ["no_proxy"] == os.environ["NO_PROXY"] == "*"


@pytest.mark.parametrize("value", ["soon", "nan", "-5", "0", "2.5", ""])
def test_a_bad_startup_timeout_is_a_usage_error_before_any_start(home, started, monkeypatch,
                                                                 value):
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", value)
    with pytest.raises(UsageError) as refused, api.local_api() as wait_for_api:
        wait_for_api()
    assert f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS={value!r}" in str(refused.value)
    assert not started  # refused before a server starts


@pytest.mark.slow  # two real Prefect servers, one migrating a new database (about 20 CPU-s)
def test_two_commands_starting_at_once_on_a_new_database_both_get_their_api(tmp_path):
    # Two `digits run`s started together in one project: both found the database unmigrated,
    # both servers ran Prefect's migrations, and one failed in alembic ("expected to match
    # one row"), ending its command (one start in three here, with three commands). One
    # migrates now; the other waits for its server, then skips them.
    env = {**os.environ, **ENV_DEFAULTS, "PREFECT_HOME": str(tmp_path)}
    for name in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL",
                 "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        env.pop(name, None)
    script = "from flows.api import local_api\nwith local_api() as ready:\n    ready()\n"
    commands = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        errors = [command.communicate(timeout=300)[1] for command in commands]
    finally:
        for command in commands:
            command.kill()
    assert [command.returncode for command in commands] == [0, 0], "\n".join(errors)
    assert (tmp_path / api.STAMP).is_file()


@pytest.fixture
def first_migrating(home, monkeypatch):
    """Another command's start on a new database: it holds the migration lock."""
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "5")
    holder = api.migration_lock(timeout=5)
    assert holder is not None
    yield holder
    api.release(holder)


def test_a_start_waits_for_the_one_migrating_then_skips_the_migrations(home, first_migrating,
                                                                       fake_starts):
    envs, entered = fake_starts, threading.Event()

    def second_command():
        with api.local_api():
            entered.set()

    thread = threading.Thread(target=second_command, daemon=True)
    thread.start()
    assert not entered.wait(0.5) and not envs  # waiting, no server started yet
    make_database(home / "prefect.db", "abc123")
    api.record_migration()  # the first command's server answered
    api.release(first_migrating)
    thread.join(timeout=10)
    assert entered.is_set()
    assert [env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] for env in envs] == ["false"]


def test_a_migrating_start_holds_the_lock_only_until_its_server_answers(home, health_port,
                                                                         fake_starts,
                                                                         monkeypatch):
    monkeypatch.setattr(api, "free_port", lambda: health_port)  # "our server" answers there
    with api.local_api():  # the block: this command's imports, its flow run
        other = api.migration_lock(timeout=1)  # another start is not kept waiting
        assert other is not None
        api.release(other)
    with pytest.raises(RuntimeError), api.local_api():
        raise RuntimeError("the command failed")
    api.release(api.migration_lock(timeout=1))  # released after a failure too


def test_a_home_that_cannot_hold_the_lock_migrates_unguarded(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    assert api.migration_lock(timeout=1) is None


def test_a_custom_database_is_left_to_prefect(home, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/x")
    assert api.migration_lock(timeout=1) is None
