"""A real `prefect server` on 127.0.0.1 for the module (temporary PREFECT_HOME, SQLite, a
copy of the session's migrated database), stopped after the module even when a test fails."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from digits.environment import ENV_DEFAULTS
from tests.helpers.prefect_db import migrated_database
from tests.helpers.processes import BIN, REPO, answers, background, free_port, wait_for

SERVER_STARTUP_SECONDS = 180  # the first start runs the SQLite migrations; CI machines are slow


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/api
    env: dict[str, str]  # for clients, workers and flow runs
    root: Path

    def prefect(self, *args: str, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """Run the `prefect` CLI from the repository root against this server."""
        env = {key: value for key, value in self.env.items() if key not in unset}
        result = subprocess.run(
            [str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=180,
        )
        command = " ".join(args)
        assert result.returncode == 0, f"prefect {command}:\n{result.stdout}\n{result.stderr}"
        return result

    @contextmanager
    def client(self):
        """A sync Prefect client (and settings for blocks) pointed at this server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            with get_client(sync_client=True) as client:
                yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("prefect-server")
    migrated_database(tmp_path_factory, root / "prefect-home" / "prefect.db")
    url = f"http://127.0.0.1:{free_port()}/api"
    base = {**os.environ, **ENV_DEFAULTS, "PREFECT_HOME": str(root / "prefect-home")}
    # Workers and flow runs get what prefect.yaml and the code set, as on a user's machine.
    for name in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        base.pop(name, None)
    server_env = {
        **base,
        "PREFECT_UI_ENABLED": "false",  # no static files to build: a faster start
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # a queued run (deployment concurrency limit) is retried after 3 s, not 30 s
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
    }
    env = {
        **base,
        "PREFECT_API_URL": url,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "DIGITS_PROJECT_DIR": str(REPO),  # prefect.yaml's pull step
        "DIGITS_ARTIFACTS": str(root / "artifacts"),
        "DIGITS_DATA": str(root / "data-cache"),
        "DIGITS_REGISTRY": str(root / "default-registry"),
    }
    log = root / "server.log"
    port = url.rsplit(":", 1)[1].split("/")[0]
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
    with background(command, server_env, log) as process:
        health = f"{url}/health"
        wait_for(lambda: answers(health, process, log), SERVER_STARTUP_SECONDS, health, 0.5)
        yield Server(url=url, env=env, root=root)
