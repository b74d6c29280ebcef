"""Scheduled retraining on a real `prefect server`: deploy prefect.yaml, run with a worker,
read back states, task runs, artifacts and events through the API; notify through an
automation; `digits schedule`. Generated data (mlp, 3 epochs), so a run takes seconds."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest

from digits.config import IDX_FILES
from tests.helpers.deployments import POOL, deploy_project, deployed_parameters, redeploy
from tests.helpers.processes import BIN, background, free_port, tail, wait_for
from tests.helpers.synth import write_dataset

pytestmark = pytest.mark.integration

DEPLOYMENT = "retrain/weekly"  # prefect.yaml
FAST = {"model": "mlp", "train_overrides": {"epochs": 3}, "min_train_rows": 1000}
STAGES = {
    "ingest", "snapshot", "check-new-data", "validate-raw", "union", "preprocess",
    "validate-processed", "train", "evaluate", "evaluate-new-data", "package", "export",
    "gate-and-promote",
}
ARTIFACT_KEYS = {
    "validation-raw", "validation-processed", "per-class-metrics", "evaluation-summary",
}
RUN_SECONDS = 150
TF_NOISE = ("use_unbounded_threadpool", "oneDNN", "absl::InitializeLog", "cpu_feature_guard")


@pytest.fixture(scope="module")
def deployment(server) -> UUID:
    """`make deploy`: create the pool, deploy everything in prefect.yaml."""
    deploy_project(server)
    with server.client() as client:
        return client.read_deployment_by_name(DEPLOYMENT).id


def start_run(server, deployment: UUID, **parameters) -> UUID:
    with server.client() as client:
        return client.create_flow_run_from_deployment(deployment, parameters=parameters).id


def run_worker_once(server, log: Path) -> None:
    """`prefect worker start --run-once`: submits the due runs and waits for them to finish."""
    command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--run-once"]
    with background(command, server.env, log) as worker:
        try:
            assert worker.wait(timeout=RUN_SECONDS) == 0, tail(log)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {RUN_SECONDS}s:\n{tail(log)}")


def run_filter(flow_run_id: UUID):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))


def events_of(server, flow_run_id: UUID) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(prefix=["digits.retrain."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    with server.client() as client:
        return client.read_events(filter=event_filter, limit=50).events  # server max 50


def scheduled_runs(server, deployment: UUID) -> list:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
    )
    with server.client() as client:
        return client.read_flow_runs(flow_run_filter=runs)


def test_deployment_from_prefect_yaml_is_scheduled_weekly(server, deployment):
    with server.client() as client:
        found = client.read_deployment(deployment)
    assert found.entrypoint == "flows/retrain.py:retrain"
    assert found.work_pool_name == POOL
    assert {"digits", "mnist"} <= set(found.tags)
    assert [s.schedule.cron for s in found.schedules] == ["0 3 * * 1"]
    assert found.global_concurrency_limit.limit == 1
    assert found.concurrency_options.collision_strategy == "ENQUEUE"
    # The folders are fixed when deployed (the deploying environment's, absolute).
    assert found.parameters == deployed_parameters(server)
    pull = {"directory": "{{ $DIGITS_PROJECT_DIR }}"}  # resolved on the worker, per machine
    assert found.pull_steps == [{"prefect.deployments.steps.set_working_directory": pull}]
    # The server's scheduler creates the next runs: Mondays 03:00 UTC.
    runs = wait_for(lambda: scheduled_runs(server, deployment), 60, "scheduled runs")
    starts = [run.expected_start_time for run in runs]
    assert all((t.weekday(), t.hour, t.minute) == (0, 3, 0) for t in starts), starts


def test_worker_run_promotes_and_reports_through_the_api(server, deployment, tmp_path):
    data = write_dataset(tmp_path / "data")
    registry = tmp_path / "registry"
    redeploy(server, deployment, **FAST, data_dir=str(data), registry=str(registry))
    run_id = start_run(server, deployment)

    run_worker_once(server, tmp_path / "worker.log")

    with server.client() as client:
        run = client.read_flow_run(run_id)
        task_runs = client.read_task_runs(flow_run_filter=run_filter(run_id))
        artifacts = client.read_artifacts(flow_run_filter=run_filter(run_id))
    # Plain Completed (the UI's default filters hide custom state names), the outcome in
    # the message and a tag, which every run view of the UI shows.
    assert run.state.is_completed() and run.state.name == "Completed", run.state.message
    assert run.state.message.startswith("promoted v1 (accuracy ")
    assert run.state.message.endswith("no production model yet")  # what the gate compared
    assert run.name.startswith("retrain-mlp-")
    assert {"digits", "mnist", "promoted"} <= set(run.tags)
    noise = [line for line in (tmp_path / "worker.log").read_text().splitlines()
             if any(word in line for word in TF_NOISE)]
    assert noise == []  # prefect.yaml's env and the flow module keep TensorFlow quiet
    stages = {task.name: task.state for task in task_runs}  # named by stage, no suffix
    assert set(stages) == STAGES
    assert all(state.is_completed() for state in stages.values()), stages
    assert ARTIFACT_KEYS <= {artifact.key for artifact in artifacts}
    assert (registry / "v1" / "manifest.json").is_file()
    assert json.loads((registry / "aliases.json").read_text()) == {"production": "v1"}

    events = wait_for(lambda: events_of(server, run_id), 30, "the digits.retrain event")
    assert [event.event for event in events] == ["digits.retrain.promoted"]
    assert events[0].resource.id == f"digits.registry.{registry.resolve()}"
    assert events[0].payload["version"] == "v1" and events[0].payload["accuracy"] >= 0.97


def run_all(server, run_ids: list[UUID], log: Path) -> list:
    """A worker with no limit of its own until every one of the runs has ended."""
    command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL]
    with background(command, server.env, log):
        def finished():
            with server.client() as client:
                runs = [client.read_flow_run(run_id) for run_id in run_ids]
            return runs if all(run.state.is_final() for run in runs) else None

        return wait_for(finished, RUN_SECONDS, f"{len(run_ids)} runs", 2, log)


def test_a_run_of_the_deployment_may_not_choose_its_folders_or_weaken_the_gate(
        server, deployment, tmp_path):
    """Issue 28, repro 3: any client of the API started `retrain/weekly` with its own
    data_dir and registry and regression_tolerance=null, and it trained and promoted there."""
    registry = tmp_path / "registry"
    redeploy(server, deployment, **FAST, data_dir=str(write_dataset(tmp_path / "data")),
             registry=str(registry))
    theirs = tmp_path / "theirs"
    repro = start_run(server, deployment, data_dir=str(write_dataset(theirs / "mnist")),
                      registry=str(theirs / "registry"), regression_tolerance=None)
    no_check = start_run(server, deployment, regression_tolerance=None)

    runs = run_all(server, [repro, no_check], tmp_path / "worker.log")

    assert all(run.state.is_failed() for run in runs), [run.state for run in runs]
    assert runs[0].state.message == (
        f"a run of retrain/weekly may not set data_dir={theirs / 'mnist'}, "
        f"registry={theirs / 'registry'}, regression_tolerance=None (the deployment's "
        "folders and a regression check no weaker than 0.002 are fixed; only `digits run` "
        "may choose them)"), runs[0].state.message
    assert runs[1].state.message.startswith(
        "a run of retrain/weekly may not set regression_tolerance=None ")
    assert not (theirs / "registry").exists() and not registry.exists()


class Webhook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def webhook():
    """A local HTTP endpoint standing in for Slack: collects the JSON bodies posted to it."""
    Webhook.received = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Webhook)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{receiver.server_port}/hook", Webhook.received
    finally:
        receiver.shutdown()
        receiver.server_close()


AUTOMATION = """\
name: digits-retrain-alerts
description: Tell people when a scheduled retraining is rejected or fails.
trigger:
  type: event
  posture: Reactive
  expect: ["digits.retrain.rejected", "digits.retrain.failed"]
  match:
    prefect.resource.id: "digits.registry.*"
  threshold: 1
  within: 0
actions:
  - type: send-notification
    block_document_id: {block_id}
    subject: "digits: {{{{ event.event }}}}"
    body: "{{{{ event.payload.flow_run }}}}: {{{{ event.payload.message }}}}"
"""  # docs/scheduling.md shows the same automation


def wait_until_live(server, received: list[dict]) -> None:
    """Emit a failure event of a stand-in registry until the automation notifies of it:
    the server's triggers take up a new automation on their own time, and an event before
    that is never notified (on a loaded machine, a run's failure had been)."""

    def notified() -> bool:
        server.prefect("event", "emit", "digits.retrain.failed",
                       "--resource-id", "digits.registry.canary",
                       "--payload", json.dumps({"flow_run": "canary", "message": "canary"}))
        return bool(wait_until(lambda: received, 5))

    wait_for(notified, 90, "the automation's first notification", every=0)
    assert "canary: canary" in received[0]["text"], received


def wait_until(check, seconds: float):
    """`check()` once it is truthy, or its last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


def test_failed_runs_queue_one_at_a_time_and_notify(server, deployment, webhook, tmp_path):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, received = webhook
    with server.client():
        block = CustomWebhookNotificationBlock(
            name="digits", url=url, json_data={"text": "{{subject}} | {{body}}"},
            allow_private_urls=True,  # the stand-in endpoint is on 127.0.0.1
        )
        block_id = block.save("digits-alerts", overwrite=True)
    (tmp_path / "automation.yaml").write_text(AUTOMATION.format(block_id=block_id))
    server.prefect("automation", "create", "--from-file", str(tmp_path / "automation.yaml"))
    wait_until_live(server, received)

    data = write_dataset(tmp_path / "data")
    (data / IDX_FILES["train_images"]).write_bytes(b"\x00\x00\x08\x01garbage")
    redeploy(server, deployment, **FAST, data_dir=str(data), registry=str(tmp_path / "registry"))
    run_ids = [start_run(server, deployment) for _ in range(2)]

    # A worker without its own limit: only the deployment's concurrency limit keeps the two
    # runs apart (the second waits in AwaitingConcurrencySlot).
    runs = run_all(server, run_ids, tmp_path / "worker.log")

    for run in runs:
        assert run.state.is_failed(), run.state
        assert "invalid IDX file" in run.state.message, run.state.message
    first, second = sorted(runs, key=lambda run: run.start_time)
    assert first.end_time <= second.start_time, "the deployment's runs overlapped"
    with server.client() as client:
        waited = {state.name for state in client.read_flow_run_states(second.id)}
    assert "AwaitingConcurrencySlot" in waited, waited
    assert not (tmp_path / "registry").exists()

    # Automations react to events in the server's own time: generous on a loaded machine.
    def runs_notified() -> list[str]:  # a canary notified late (wait_until_live) is no run's
        return [message["text"] for message in received if "canary" not in message["text"]]

    wait_for(lambda: len(runs_notified()) >= 2, 180, "two notifications")
    texts = sorted(runs_notified())
    assert all(text.startswith("digits: digits.retrain.failed | retrain-mlp-") for text in texts)
    assert all("invalid IDX file" in text for text in texts), texts


def test_digits_schedule_needs_a_server(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [str(BIN / "digits"), "schedule"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: digits schedule needs a Prefect server")
    assert "make ui" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_digits_schedule_registers_a_schedule(server, tmp_path):
    from prefect.exceptions import ObjectNotFound

    command = [str(BIN / "digits"), "schedule", "--name", "nightly", "--cron", "0 4 * * *",
               "--model", "mlp"]
    log = tmp_path / "serve.log"

    def registered():
        with server.client() as client:
            try:
                return client.read_deployment_by_name("retrain/nightly")
            except ObjectNotFound:
                return None

    with background(command, server.env, log) as serving:
        # Stopped the moment its deployment appears, before its runner has started: the
        # window where Prefect's own SIGTERM handler exits without pausing.
        found = wait_for(registered, 90, "deployment retrain/nightly", every=0.05, log=log)
        # SIGTERM (what a service manager sends) must end it cleanly, before any SIGKILL.
        # The bound only stops a hang: a whole `make test` beside it on 2 cores once made
        # the exit (pausing the schedule, TensorFlow's teardown) take over 30 s, then exit 0.
        os.killpg(serving.pid, signal.SIGTERM)
        assert serving.wait(timeout=90) == 0, tail(log)
    assert [s.schedule.cron for s in found.schedules] == ["0 4 * * *"]
    # $DIGITS_REGISTRY is --registry's default: the deployment names the registry it
    # writes to, so the UI shows it and a worker elsewhere cannot pick another.
    assert found.parameters == {"model": "mlp", "registry": server.env["DIGITS_REGISTRY"]}
    assert found.global_concurrency_limit.limit == 1
    assert {"digits", "mnist"} <= set(found.tags)
    assert registered().paused  # a stopped `digits schedule` pauses its schedule
