"""`digits tune` on a real Dask LocalCluster (2 worker processes) against a real
`prefect server` whose database is PostgreSQL, started here in a temporary directory.

Scaling past one machine, tested on one: the trial task runs must land under the tune flow
run in the server's database (not in a temporary server of each worker), the trials table
artifact must exist, and a second run with the same study name must resume the study.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from digits.environment import ENV_DEFAULTS
from tests.helpers.processes import (
    BIN,
    REPO,
    answers,
    background,
    free_port,
    wait_for,
)
from tests.helpers.synth import write_dataset

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 180


def postgres_bin() -> Path | None:
    """Debian's `postgresql` package: /usr/lib/postgresql/<major>/bin, newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(found[0]).parent if found else None


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: CI runs as root, so drop to the `postgres` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_cluster() -> Iterator[tuple[str, list[str]]]:
    """initdb + pg_ctl in a temporary folder on a free port; yields the asyncpg URL and a
    psql command line for it."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="digits-pg-"))  # under /tmp: reachable by postgres
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    subprocess.run(
        as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "digits", "-A", "trust",
                     "--no-sync"]),
        check=True, capture_output=True, timeout=120,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log")]
    subprocess.run(as_postgres([*pg_ctl, "-o", options, "-w", "start"]), check=True,
                   capture_output=True, timeout=120)
    try:
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "digits",
                "-d", "postgres", "-tA", "-c"]
        yield f"postgresql+asyncpg://digits@127.0.0.1:{port}/postgres", psql
    finally:
        subprocess.run(as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"]), check=False,
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """A `prefect server` on PostgreSQL; yields (api_url, env for the CLI, database URL)."""
    root = tmp_path_factory.mktemp("tune-server")
    with postgres_cluster() as (database, psql):
        url = f"http://127.0.0.1:{free_port()}/api"
        base = {**os.environ, **ENV_DEFAULTS, "PREFECT_HOME": str(root / "prefect-home")}
        base.pop("PREFECT_API_URL", None)
        server_env = {
            **base,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
            "PREFECT_API_DATABASE_CONNECTION_URL": database,  # the older name, same setting
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        port = url.rsplit(":", 1)[1].split("/")[0]
        log = root / "server.log"
        command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
        with background(command, server_env, log) as process:
            health = f"{url}/health"
            wait_for(lambda: answers(health, process, log), STARTUP_SECONDS, health, 0.5)
            env = {
                **base,
                "PREFECT_API_URL": url,
                "DIGITS_ARTIFACTS": str(root / "artifacts"),
                "DIGITS_DATA": str(root / "data-cache"),
            }
            yield url, env, root, psql


def digits_tune(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "digits"), "tune", *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=900, check=False,
    )


def flow_run_of(client, name_prefix: str, exclude: set) -> object:
    runs = [r for r in client.read_flow_runs() if r.name.startswith(name_prefix)]
    fresh = [r for r in runs if r.id not in exclude]
    assert len(fresh) == 1, [r.name for r in runs]
    return fresh[0]


def trial_names(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    return sorted(r.name.split()[0] for r in runs if r.name.startswith("trial-"))


def test_study_on_dask_reports_to_a_postgres_backed_server_and_resumes(pg_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, env, root, psql = pg_server
    data = write_dataset(tmp_path / "data")
    registry = tmp_path / "registry"
    common = ["--model", "mlp", "--epochs", "3", "--data-dir", str(data),
              "--min-train-rows", "1000", "--registry", str(registry), "--study", "itest"]

    first = digits_tune(env, *common, "--trials", "2", "--workers", "2", "--no-promote")
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-4000:]
    assert "Starting temporary server" not in output  # no worker started its own API
    assert first.stdout.strip().splitlines()[-1].startswith("best trial")

    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            run = flow_run_of(client, "tune-mlp-", exclude=set())
            assert trial_names(client, run.id) == ["trial-0", "trial-1"]
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            assert {"tuning-trials", "tuning-study"} <= {a.key for a in artifacts}
            table = next(a for a in artifacts if a.key == "tuning-trials")
            assert "trial" in (table.description or "") or table.data

    # Same study name, one more trial: the study resumes and the best model is promoted. One
    # trial is left, so one Dask worker (a second would start, import Keras and wait).
    second = digits_tune(env, *common, "--trials", "3", "--workers", "1")
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    assert "Starting temporary server" not in output
    assert second.stdout.strip().splitlines()[-1].startswith("promoted v1")
    journal = root / "artifacts" / "studies" / "itest.journal"
    assert journal.is_file()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            resumed = flow_run_of(client, "tune-mlp-", exclude={run.id})
            assert trial_names(client, resumed.id) == ["trial-2"]

    from digits.registry.store import Registry

    # The runs are in PostgreSQL itself, not in some SQLite file beside it.
    query = "select count(*) from task_run where name like 'trial-%'"
    counted = subprocess.run([*psql, query], check=True, capture_output=True, text=True)
    assert counted.stdout.strip() == "3"
    study = Registry(registry).manifest("v1")["study"]
    assert study["name"] == "itest" and [t["number"] for t in study["trials"]] == [0, 1, 2]
