"""Every setting declared once: where another file must repeat one (prefect.yaml for
`prefect deploy`), it agrees with the one home; elsewhere the copies are gone."""

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
import yaml

from digits.cli import app
from digits.config import (
    DEFAULT_TUNE_EPOCHS,
    DEFAULT_TUNE_TRIALS,
    DEFAULT_TUNE_WORKERS,
)
from digits.environment import API_STARTUP_TIMEOUT_S, ENV_DEFAULTS, PREFECT_HOME_DIR
from digits.serving.settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT
from flows.events import batch_event
from flows.schedule import DAILY_DRIFT, ON_NEW_DATA, WEEKLY

REPO = Path(__file__).resolve().parents[2]


def deployment(name: str) -> dict:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return next(d for d in spec["deployments"] if d["name"] == name)


@pytest.fixture(scope="module")
def weekly() -> dict:
    return deployment(WEEKLY.name)


@pytest.mark.parametrize("settings", [WEEKLY, DAILY_DRIFT], ids=lambda s: s.name)
def test_prefect_yaml_deploys_the_schedule_tags_and_pool_the_cli_uses(settings):
    found = deployment(settings.name)
    [schedule] = found["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == (settings.cron, "UTC")
    assert tuple(found["tags"]) == settings.tags
    assert found["work_pool"]["name"] == settings.pool


def test_the_drift_deployment_runs_the_drift_flow_with_its_defaults():
    found = deployment(DAILY_DRIFT.name)
    assert found["entrypoint"] == "flows/drift.py:drift"
    assert not found.get("parameters")


@pytest.mark.parametrize("name", [WEEKLY.name, DAILY_DRIFT.name])
def test_prefect_yaml_gives_flow_runs_the_environment_defaults(name):
    env = deployment(name)["work_pool"]["job_variables"]["env"]
    assert env == {name: ENV_DEFAULTS[name] for name in env}
    # what flow runs read
    assert {"GX_ANALYTICS_ENABLED", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"} <= set(env)


def test_the_new_data_trigger_is_a_debounce_on_the_weekly_deployment(weekly):
    [trigger] = weekly["triggers"]
    assert trigger["name"] == ON_NEW_DATA.name and trigger["enabled"] is True
    # Proactive with the same event after and expected, threshold 1: fires when a window
    # opened by the event ends without another (prefect/server/events/triggers.py).
    assert (trigger["posture"], trigger["threshold"]) == ("Proactive", 1)
    assert trigger["after"] == trigger["expect"] == [ON_NEW_DATA.event]
    assert trigger["within"] == ON_NEW_DATA.quiet_s >= 10  # Prefect's least for Proactive
    # Without for_each, the server opens a window of its own every `within` and fires
    # when it ends empty: a run a minute with no data at all.
    assert trigger["for_each"] == [ON_NEW_DATA.for_each]


def test_the_trigger_matches_what_the_add_flow_emits_for_the_deployments_store(weekly):
    from fnmatch import fnmatchcase

    [trigger] = weekly["triggers"]
    record = {"id": "ab" * 32, "name": "alice", "rows": 60, "status": "accepted"}
    emitted = batch_event(record, Path("/store"), Path("/registry"))
    assert emitted["event"] == ON_NEW_DATA.event
    assert fnmatchcase(emitted["about"]["prefect.resource.id"],
                       trigger["match"]["prefect.resource.id"])
    # Only the deployment's own store (issue 28): an event naming another folder opens
    # no window and starts no run, however many folders it names.
    assert trigger["match"][ON_NEW_DATA.for_each] == weekly["parameters"]["store_dir"]
    assert emitted["about"][ON_NEW_DATA.for_each] == "/store"


def test_deployments_fix_their_folders_when_deployed_and_events_choose_none(weekly):
    # `prefect deploy` fills in `{{ $VAR }}` from its environment (`make deploy` sets both
    # to the absolute folders `digits` would use there); the flow's defaults read the same.
    assert weekly["parameters"]["store_dir"] == "{{ $DIGITS_DATA }}"
    assert weekly["parameters"]["registry"] == "{{ $DIGITS_REGISTRY }}"
    assert {"store_dir", "registry"} <= flow_parameters(REPO / "flows/retrain.py", "retrain")
    [trigger] = weekly["triggers"]
    assert "parameters" not in trigger  # a triggered run is a run of the deployment as is


def test_make_deploy_fills_in_the_folders_as_digits_resolves_them(tmp_path):
    import os
    import subprocess
    import sys

    # Absolute and through links, as the add's event names its store: the trigger matches
    # the text, and a relative DIGITS_DATA means the checkout's folder.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    env = {**os.environ, "DIGITS_DATA": "link", "DIGITS_REGISTRY": "link/registry",
           "PYTHONPATH": str(REPO)}

    def folder(what: str) -> str:
        return subprocess.run([sys.executable, "-m", "flows.schedule", what], cwd=tmp_path,
                              env=env, capture_output=True, text=True, check=True).stdout
    assert folder("store") == f"{tmp_path / 'real'}\n"
    assert folder("registry") == f"{tmp_path / 'real' / 'registry'}\n"
    makefile = (REPO / "Makefile").read_text()
    assert 'export DIGITS_DATA="$$($(BIN)/python -m flows.schedule store)"' in makefile
    assert 'DIGITS_REGISTRY="$$($(BIN)/python -m flows.schedule registry)"; \\' in makefile
    assert 'mkdir -p "$$DIGITS_DATA"' in makefile  # a deployment's store must exist


def flow_parameters(path: Path, name: str) -> set[str]:
    """The parameter names of a flow function, read from its source (no TensorFlow import)."""
    import ast

    [function] = [node for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.FunctionDef) and node.name == name]
    return {arg.arg for arg in function.args.args + function.args.kwonlyargs}


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


def test_the_config_names_the_architectures_and_shifts_the_model_code_builds():
    # digits.config repeats these names so that a bad --model or --test-shifts is refused
    # before Keras (and TensorFlow) load; the two lists must stay equal.
    from digits.config import ARCHITECTURES, TEST_SHIFTS
    from digits.model.architectures import BUILDERS, SHIFTS

    assert set(ARCHITECTURES) == set(BUILDERS)
    assert set(TEST_SHIFTS) == set(SHIFTS)


def test_the_builders_defaults_build_what_the_recorded_defaults_build():
    # A builder called without a shape knob (tests, benchmarks) must build what a manifest
    # without it reproduces: TrainConfig's field defaults for the cnn, the original script
    # (the mlp preset) for the mlp. Only the seed differs (a builder's 0, a run's 42).
    import inspect

    from digits.config import PRESETS, TrainConfig
    from digits.model.architectures import BUILDERS

    recorded = {"cnn": TrainConfig(model="cnn"), "mlp": PRESETS["mlp"]}
    assert set(recorded) == set(BUILDERS)
    for name, config in recorded.items():
        defaults = {name: p.default for name, p in
                    inspect.signature(BUILDERS[name]).parameters.items() if name != "seed"}
        assert defaults == {knob: getattr(config, knob) for knob in defaults}, name


def every_option(command: click.Command,
                 path: str = "digits") -> Iterator[tuple[str, click.Parameter]]:
    yield from ((path, param) for param in command.params)
    for name, sub in getattr(command, "commands", {}).items():
        yield from every_option(sub, f"{path} {name}")


def test_the_reference_mnist_folder_has_one_flag_name_in_every_command():
    # `add`, `feedback export --add` and `drift` each compare with MNIST: one flag for it.
    found = {path: param.opts for path, param in every_option(typer.main.get_command(app))
             if "to compare with" in (getattr(param, "help", None) or "")}
    assert {"digits add", "digits feedback export", "digits drift"} <= set(found)
    assert {path for path, opts in found.items() if opts[0] != "--reference-dir"} == set()
