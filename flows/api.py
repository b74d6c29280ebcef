"""A local Prefect API for one command, started before the heavy imports instead of after.

Prefect's own ephemeral API starts on first use: after TensorFlow, Great Expectations and
Prefect are imported, so the command waits for both in turn. This starts the same server
(uvicorn on Prefect's app factory, as `SubprocessASGIServer` does) first, without importing
Prefect, so it boots on the other core while this process imports; the command then points
`PREFECT_API_URL` at it and stops it before printing its last line.

Prefect migrates its SQLite database on every server start, which costs seconds even when
there is nothing to do; a stamp in PREFECT_HOME records the Prefect version and database
file that were migrated, and later starts skip the check while both are unchanged. One
start at a time migrates (a lock in PREFECT_HOME): commands started together on a new
database wait until its server answers, then skip the migrations.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from digits.environment import API_STARTUP_TIMEOUT_S, env_number
from digits.errors import DigitsError

if TYPE_CHECKING:
    from filelock import FileLock

STAMP = "digits-migrated.json"
MIGRATION_LOCK = "digits-migrating.lock"
POLL_S = 0.1
NO_PROXY_NAMES = ("no_proxy", "NO_PROXY")  # urllib and httpx read either; set both alike
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@contextmanager
def local_api() -> Iterator[Callable[[], None]]:
    """Run the block against PREFECT_API_URL if set, else against a server started here.

    Yields the function that waits until the API answers: call it after the imports that
    the server's start overlaps with.
    """
    timeout = startup_timeout()  # a bad value would stop Prefect's import: refuse it first
    if configured_api_url():
        try:
            yield lambda: None
        finally:  # the command may exit without the interpreter's teardown (cli.entry)
            send_queued_logs_and_events()
        return
    lock = migration_lock(timeout)  # held only by a start that migrates the database
    migrate = not is_migrated()
    saved = {name: os.environ.get(name) for name in (*NO_PROXY_NAMES, "PREFECT_API_URL")}
    try:
        os.environ.update(loopback_no_proxy())
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
             "--lifespan", "on"],
            env={**os.environ, **server_env(migrate)},
        )
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        try:
            if lock is not None:  # the others wait for the migration alone, not our imports
                wait_until_ready(server, timeout)
                release(lock)
            yield lambda: wait_until_ready(server, timeout)
        finally:
            try:
                send_queued_logs_and_events()
            finally:  # whatever the flush does, the server must not outlive the command
                stop(server)
    finally:
        release(lock)
        restore(saved)


def migration_lock(timeout: float) -> FileLock | None:
    """The lock on migrating this PREFECT_HOME's SQLite database, taken when the database is
    not migrated yet; None when it is, or when the lock cannot be written (a read-only home:
    the start migrates unguarded, as Prefect's own does).

    Two commands started at once on a new database would both run Prefect's migrations, and
    alembic fails the second ("expected to match one row"). So a start that must migrate
    takes the lock first, and looks again once it has it: the command that held it has
    migrated the database meanwhile. A custom database (PostgreSQL) is left to Prefect.
    """
    if is_migrated() or custom_database():
        return None
    from filelock import FileLock, Timeout

    lock = FileLock(prefect_home() / MIGRATION_LOCK, thread_local=False)
    try:
        prefect_home().mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout)
    except Timeout:
        raise DigitsError(
            f"waited {timeout:g} s for another command to migrate the Prefect database in "
            f"{prefect_home()} (it holds {lock.lock_file}); try again, or raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") from None
    except OSError:
        return None
    if is_migrated():
        lock.release()
        return None
    return lock


def release(lock: FileLock | None) -> None:
    if lock is not None and lock.is_locked:
        lock.release()


def startup_timeout() -> int:
    """Seconds the API may take to answer: Prefect's own setting for the server it would
    start (an integer there too), so one value bounds both."""
    return env_number(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", API_STARTUP_TIMEOUT_S, minimum=1
    )


def loopback_no_proxy() -> dict[str, str]:
    """no_proxy and NO_PROXY with 127.0.0.1 and localhost added, for this process (Prefect's
    client) and the server: a proxy from http_proxy cannot reach this machine's loopback."""
    current = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    hosts = [host.strip() for host in current.split(",") if host.strip()]
    if hosts != ["*"]:  # `*` (no proxy at all) counts only as the whole value
        hosts += [host for host in LOOPBACK_HOSTS if host not in hosts]
    return dict.fromkeys(NO_PROXY_NAMES, ",".join(hosts))


def restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def send_queued_logs_and_events() -> None:
    """Prefect ships logs and events from background workers; flush them while the server
    is still up, or they retry against a closed port for minutes at exit."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def configured_api_url() -> str | None:
    """The API this process would use: Prefect's settings once imported (a test harness or
    settings context may set it there), else the environment."""
    if "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url
    return os.environ.get("PREFECT_API_URL")


def wait_until_ready(server: subprocess.Popen, timeout: float) -> None:
    """Block until the API answers, and remember that its database is migrated."""
    url = f"{os.environ['PREFECT_API_URL']}/health"
    deadline = time.monotonic() + timeout
    # Loopback, never through a proxy: with http_proxy set, every probe would fail.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with direct.open(url, timeout=2) as response:
                if response.status == 200:
                    record_migration()
                    return
        except OSError:
            time.sleep(POLL_S)
    raise DigitsError(
        f"the local Prefect API at {url} did not start (exit code {server.poll()}); "
        "see the lines above, or start one with `make ui` and set PREFECT_API_URL"
    )


def server_env(migrate: bool) -> dict[str, str]:
    """What Prefect's own ephemeral server sets, plus whether to run the migrations."""
    return {
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "true" if migrate else "false",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_home() -> Path:
    """The home Prefect uses: `digits` sets PREFECT_HOME (digits.environment); Prefect's
    own default stands for any other caller."""
    return Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()


def database_identity() -> dict | None:
    """This Prefect and the schema revision the default SQLite database is at; None when
    there is none yet or a custom database is configured (then Prefect checks every time).

    The revision is read from the database itself, not from the file's inode or times: a
    deleted and re-created database may reuse the inode, and SQLite's writes change the times.
    """
    if custom_database():
        return None
    database = prefect_home() / "prefect.db"
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None  # not a Prefect database yet (or not readable): let Prefect migrate it
    if row is None:
        return None
    return {"prefect": version("prefect"), "path": str(database), "revision": row[0]}


def custom_database() -> bool:
    """Whether Prefect is configured for a database other than PREFECT_HOME's SQLite file."""
    custom = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
    return any(os.environ.get(name) for name in custom)


def is_migrated() -> bool:
    identity = database_identity()
    stamp = prefect_home() / STAMP
    try:
        return identity is not None and json.loads(stamp.read_text()) == identity
    except (OSError, ValueError):
        return False


def record_migration() -> None:
    """After a healthy start the database has this Prefect's schema: remember it."""
    identity = database_identity()
    if identity is not None:
        (prefect_home() / STAMP).write_text(json.dumps(identity))
