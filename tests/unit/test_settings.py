"""Every setting declared once: where another file must repeat one (prefect.yaml for
`prefect deploy`), it agrees with the one home; elsewhere the copies are gone."""

from pathlib import Path

import pytest
import typer
import yaml

from digits.config import (
    API_STARTUP_TIMEOUT_S,
    DEFAULT_TUNE_EPOCHS,
    DEFAULT_TUNE_TRIALS,
    DEFAULT_TUNE_WORKERS,
    ENV_DEFAULTS,
    PREFECT_HOME_DIR,
)
from digits.serving.settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from flows.cli import app
from flows.schedule import WEEKLY

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weekly() -> dict:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return next(d for d in spec["deployments"] if d["name"] == WEEKLY.name)


def test_prefect_yaml_deploys_the_schedule_tags_and_pool_the_cli_uses(weekly):
    [schedule] = weekly["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == (WEEKLY.cron, "UTC")
    assert tuple(weekly["tags"]) == WEEKLY.tags
    assert weekly["work_pool"]["name"] == WEEKLY.pool


def test_prefect_yaml_gives_flow_runs_the_environment_defaults(weekly):
    env = weekly["work_pool"]["job_variables"]["env"]
    assert env == {name: ENV_DEFAULTS[name] for name in env}
    assert {"GX_ANALYTICS_ENABLED", "TF_CPP_MIN_LOG_LEVEL"} <= set(env)  # what flow runs read


@pytest.mark.parametrize("path", ["Makefile", "benchmarks/run.py", "flows/api.py"])
def test_no_other_copy_of_the_environment_defaults(path):
    text = (REPO / path).read_text()
    copies = [f"{name} := " for name in ENV_DEFAULTS] + [f'"{name}": ' for name in ENV_DEFAULTS]
    assert not [copy for copy in copies if copy in text]
    assert f'"{API_STARTUP_TIMEOUT_S}"' not in text


def test_the_makefile_and_the_cli_share_one_prefect_home():
    assert f"export PREFECT_HOME ?= $(CURDIR)/{PREFECT_HOME_DIR}" in (REPO / "Makefile").read_text()


def option_defaults(command: str) -> dict:
    group = typer.main.get_command(app)
    return {param.name: param.default for param in group.commands[command].params}


def test_command_defaults_are_the_constants():
    serve = option_defaults("serve")
    assert (serve["host"], serve["port"], serve["max_body_bytes"]) == (
        DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_BODY_BYTES)
    tune = option_defaults("tune")
    assert (tune["trials"], tune["epochs"], tune["workers"]) == (
        DEFAULT_TUNE_TRIALS, DEFAULT_TUNE_EPOCHS, DEFAULT_TUNE_WORKERS)
