"""`make deploy` and `make worker` talk to the server `make ui` started, on whatever port.

`make -n` prints the commands without running them (no server needed); the API URL they
use is in the health check that both targets run first.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from flows.schedule import WEEKLY
from tests.helpers.processes import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(target: str, *args: str, ui_url: str | None, tmp_path, **env: str) -> str:
    """What `make -n TARGET ARGS` would run, with `make ui`'s URL file holding `ui_url`."""
    url_file = tmp_path / "ui-url"
    if ui_url:
        url_file.write_text(ui_url + "\n")
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | env
    result = subprocess.run(
        ["make", "-n", target, f"UI_URL_FILE={url_file}", *args],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("target", ["deploy", "worker"])
def test_targets_use_the_port_make_ui_remembered(target, tmp_path):
    commands = planned(target, ui_url="http://127.0.0.1:4317/api", tmp_path=tmp_path)
    assert "http://127.0.0.1:4317/api/health" in commands
    assert "4200" not in commands


def test_an_explicit_port_or_api_url_wins(tmp_path):
    remembered = "http://127.0.0.1:4317/api"
    by_port = planned("deploy", "UI_PORT=4400", ui_url=remembered, tmp_path=tmp_path)
    assert "http://127.0.0.1:4400/api/health" in by_port
    by_url = planned(
        "deploy", ui_url=remembered, tmp_path=tmp_path, PREFECT_API_URL="http://prefect:4200/api"
    )
    assert "http://prefect:4200/api/health" in by_url


def test_without_make_ui_the_default_port(tmp_path):
    assert "http://127.0.0.1:4200/api/health" in planned("deploy", ui_url=None, tmp_path=tmp_path)


def test_ui_remembers_its_port(tmp_path):
    commands = planned("ui", "UI_PORT=4321", ui_url=None, tmp_path=tmp_path)
    assert f"echo http://127.0.0.1:4321/api > {tmp_path / 'ui-url'}" in commands
    assert "--port 4321" in commands


def test_worker_pool_comes_from_prefect_yaml(tmp_path):
    commands = planned("worker", ui_url=None, tmp_path=tmp_path)
    assert f"worker start --pool {WEEKLY.pool} --limit 1" in commands
