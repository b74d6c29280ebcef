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


def fake_pythons(folder, versions: dict[str, str | None]):
    """A PATH folder of interpreters that print a version (None: one that does not run, as
    a pyenv shim for a version not selected), and the few tools the Makefile's header runs."""
    folder.mkdir()
    for name, version in versions.items():
        body = f"echo {version}" if version else "echo 'pyenv: command not found' >&2; exit 127"
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    for tool in ("cat", "cksum", "cut"):
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


def make_with_path(folder, *args: str, tmp_path) -> subprocess.CompletedProcess:
    """`make ARGS` with only `folder` on PATH and a venv that does not exist yet."""
    return subprocess.run(
        [shutil.which("make"), *args, f"VENV={tmp_path / 'venv'}"], cwd=REPO,
        env={"PATH": str(folder), "HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=120,
    )


def test_the_venv_takes_the_newest_supported_python_that_runs(tmp_path):
    found = fake_pythons(tmp_path / "bin", {"python3.13": None, "python3.12": "3.12.3",
                                            "python3.11": "3.11.2", "python3": "3.10.12"})
    planned_run = make_with_path(found, "-n", "run", tmp_path=tmp_path)
    assert planned_run.returncode == 0, planned_run.stderr
    assert f"{found / 'python3.12'} -m venv {tmp_path / 'venv'}" in planned_run.stdout
    assert "'.[pipeline,dev]'" in planned_run.stdout  # make run/test install the pipeline


@pytest.mark.parametrize(("versions", "args", "found"), [
    ({"python3": "3.10.12"}, (), "found 3.10.12 at {bin}/python3"),
    ({"python3.11": None}, (), "found none that runs of python3.13 python3.12 python3.11 python3"),
    ({"python3.14": "3.14.0"}, ("PYTHON=python3.14",), "found 3.14.0 at {bin}/python3.14"),
])
def test_without_a_supported_python_make_says_what_it_found(tmp_path, versions, args, found):
    folder = fake_pythons(tmp_path / "bin", versions)
    for target in ("run", "test"):
        refused = make_with_path(folder, target, *args, tmp_path=tmp_path)
        assert refused.returncode == 2
        [line] = refused.stderr.splitlines()
        assert f"needs Python 3.11-3.13; {found.format(bin=folder)}" in line
        assert not (tmp_path / "venv").exists()
