"""Retrain when data arrives, on a real `prefect server`: prefect.yaml deployed as `make
deploy` does, a worker, then `digits add`. The accepted batches' events start one retraining
that nobody asked for, on the deployment's store and registry, once the debounce window has
passed with no further batch; events forged by any client of the API, naming other folders,
start nothing and write nothing there (issue 28). Generated data (mlp, 3 epochs), so the
run itself takes seconds; the test shortens the deployed window from prefect.yaml's 60 s
(tests/unit/test_settings.py holds that value) to WINDOW_S and waits it out."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from flows.events import ACCEPTED, QUARANTINED
from flows.schedule import DAILY_DRIFT, ON_NEW_DATA, WEEKLY
from tests.helpers.batchstore import new_digits, write_batch
from tests.helpers.deployments import POOL, deploy_project, deployment_runs, redeploy
from tests.helpers.processes import BIN, REPO, background, tail, wait_for
from tests.helpers.synth import make_digits, make_prototypes, write_dataset

pytestmark = pytest.mark.integration

FAST = {"model": "mlp", "train_overrides": {"epochs": 3}, "min_train_rows": 1000}
ADD_SECONDS = 240  # one `digits add` on a loaded 2-core machine (TensorFlow start, checks)
RUN_SECONDS = 240  # the window, the server's 5 s proactive tick, then a short training run
# The deployed trigger's window, shortened for the test: wide enough for the three adds,
# started together, to land inside it (4.8 s apart on a loaded 2-core machine), short
# enough not to wait out the real minute.
WINDOW_S = 20


def write_npz(path: Path, n: int, seed: int) -> Path:
    images, labels = make_digits(n, seed, make_prototypes())  # the synthetic MNIST's style
    np.savez(path, images=images, labels=labels)
    return path


def add(server, batch: Path, name: str, dirs: list[str], log: Path) -> subprocess.Popen:
    command = [str(BIN / "digits"), "add", str(batch), "--name", name, *dirs]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=server.env, stdout=out,
                                stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path) -> int:
    try:
        return process.wait(timeout=ADD_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"digits add still running after {ADD_SECONDS}s:\n{tail(log)}")


def batch_events(server) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter

    only_batches = EventFilter(event=EventNameFilter(prefix=["digits.batch."]))
    with server.client() as client:
        return sorted(client.read_events(filter=only_batches, limit=50).events,
                      key=lambda event: event.occurred)


def triggered(server, deployment) -> list:
    """The deployment's runs that an automation created: nobody started them."""
    return [run for run in deployment_runs(server, deployment)
            if run.created_by and run.created_by.type == "AUTOMATION"]


@pytest.fixture(scope="module")
def deployment(server):
    deploy_project(server)
    with server.client() as client:
        return client.read_deployment_by_name(f"retrain/{WEEKLY.name}")


def shorten_window(server, automation):
    """The automation as deployed, but waiting WINDOW_S seconds of quiet instead of 60."""
    from prefect.events.schemas.automations import AutomationCore

    trigger = automation.trigger.model_copy(update={"within": timedelta(seconds=WINDOW_S)})
    # The fields an update takes (the server refuses owner_resource in one).
    fields = automation.model_dump(include=set(AutomationCore.model_fields) - {"owner_resource"})
    with server.client() as client:
        client.update_automation(automation.id, AutomationCore(**fields | {"trigger": trigger}))
        return client.read_automation(automation.id)


def forge(server, store: Path, registry: Path, label: Path) -> None:
    """`digits.batch.accepted` as any client of the Prefect API can emit it: `label` as the
    store the trigger keys on, `store` and `registry` in the payload."""
    resource = {"prefect.resource.id": "digits.batch." + "ab" * 32,
                "prefect.resource.name": "forged", "digits.store": str(label)}
    payload = {"id": "ab" * 32, "name": "forged", "rows": 30, "status": "accepted",
               "reason": None, "store": str(store), "registry": str(registry)}
    server.prefect("event", "emit", ACCEPTED, "--resource", json.dumps(resource),
                   "--payload", json.dumps(payload))


def foreign_store(folder: Path) -> Path:
    """The repro's store: a quarantined batch copied by hand into batches/."""
    import shutil

    quarantined = write_batch(folder, *new_digits(30, 12), name="noise", quarantined=True)
    shutil.copytree(quarantined, folder / "batches" / quarantined.name)
    return folder


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_batches_in_quick_succession_start_one_retraining(server, deployment, tmp_path):
    mnist = write_dataset(tmp_path / "mnist")
    # The deployment's folders, fixed when `make deploy` ran (here: the server's env).
    store, registry = Path(server.env["DIGITS_DATA"]), Path(server.env["DIGITS_REGISTRY"])
    assert deployment.parameters["store_dir"] == str(store)
    assert deployment.parameters["registry"] == str(registry)
    # What a user would write under `parameters:` in prefect.yaml: train fast, on the
    # generated MNIST.
    redeploy(server, deployment.id, **FAST, data_dir=str(mnist))
    with server.client() as client:
        [automation] = client.read_automations_by_name(ON_NEW_DATA.name)
    # `make deploy` filled in the store the trigger listens to: this one, and no other.
    assert automation.trigger.match.model_dump()["digits.store"] == str(store)
    automation = shorten_window(server, automation)
    assert automation.trigger.within == timedelta(seconds=WINDOW_S)
    theirs = foreign_store(tmp_path / "theirs")
    before = files_under(theirs)
    dirs = ["--reference-dir", str(mnist)]  # into $DIGITS_DATA, checked with $DIGITS_REGISTRY
    worker_log, add_log = tmp_path / "worker.log", tmp_path / "add.log"
    command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"]

    with background(command, server.env, worker_log):
        started = time.monotonic()
        # First, so that a window of its own would end before the adds' one: an event that
        # names another store (and registry) for a batch copied there from quarantine.
        forge(server, theirs, theirs / "registry", label=theirs)
        # Two good batches and a quarantined one (too few rows), added at once: one `digits
        # add` takes about a minute on a loaded 2-core machine (most of it starting
        # TensorFlow and Prefect), so one after the other they would land a window apart.
        adds = [add(server, write_npz(tmp_path / f"{name}.npz", n, seed), name, dirs, add_log)
                for name, n, seed in [("alice", 60, 5), ("bob", 60, 6), ("few", 5, 7)]]
        # Inside the adds' window: the deployment's store, other folders in the payload.
        wait_for(lambda: [event for event in batch_events(server) if event.event == ACCEPTED
                          and event.payload["name"] != "forged"],
                 ADD_SECONDS, "the first accepted batch", 1, add_log)
        forge(server, theirs, theirs / "registry", label=store)
        assert [finish(process, add_log) for process in adds] == [0, 0, 4], tail(add_log)
        adds_s = time.monotonic() - started

        def runs_finished():
            runs = triggered(server, deployment.id)
            return runs if runs and all(run.state.is_final() for run in runs) else None

        runs = wait_for(runs_finished, RUN_SECONDS, "the triggered retrain run", 2, worker_log)
        print(f"\nadds {adds_s:.0f}s, adds to finished run {time.monotonic() - started:.0f}s")

    forged = [event for event in batch_events(server) if event.payload["name"] == "forged"]
    assert [event.resource["digits.store"] for event in forged] == [str(theirs), str(store)]
    events = [event for event in batch_events(server) if event.payload["name"] != "forged"]
    assert [event.event for event in events].count(ACCEPTED) == 2, events
    [quarantined] = [event for event in events if event.event == QUARANTINED]
    assert quarantined.payload["name"] == "few" and quarantined.payload["rows"] == 5
    first, last = [event for event in events if event.event == ACCEPTED]
    gap = last.occurred - first.occurred
    print(f"accepted events {gap.total_seconds():.1f}s apart")
    assert gap < timedelta(seconds=WINDOW_S), (
        "the adds were a window apart: this test proves nothing about the debounce")
    assert {first.payload["name"], last.payload["name"]} == {"alice", "bob"}
    assert first.payload["rows"] == 60 and first.payload["registry"] == str(registry)
    assert first.resource.id == f"digits.batch.{first.payload['id']}"
    assert first.resource["digits.store"] == first.payload["store"] == str(store)

    # One run, created by the automation from prefect.yaml once the window after the last
    # batch had passed, with the deployment's store and registry: none from an event.
    assert len(runs) == 1, [(run.name, run.created, run.parameters) for run in runs]
    [run] = runs
    assert run.created_by.id == automation.id
    assert run.created >= last.occurred + timedelta(seconds=WINDOW_S)
    assert run.parameters["store_dir"] == str(store)
    assert run.parameters["registry"] == str(registry)
    assert run.state.is_completed(), run.state.message
    assert run.state.message.startswith("promoted v1 (accuracy "), run.state.message
    manifest = json.loads((registry / "v1" / "manifest.json").read_text())
    trained_on = [batch["name"] for batch in manifest["data"]["snapshot"]["batches"]]
    assert sorted(trained_on) == ["alice", "bob"]  # both, the quarantined one never
    # Nothing written where the forged events pointed: no registry, no lock, no cache.
    assert files_under(theirs) == before

    # docs/scheduling.md's way to turn it off for a while.
    server.prefect("automation", "pause", ON_NEW_DATA.name)
    with server.client() as client:
        assert client.read_automation(automation.id).enabled is False


def test_the_drift_check_is_deployed_daily(server, deployment):
    with server.client() as client:
        found = client.read_deployment_by_name(f"drift/{DAILY_DRIFT.name}")
    assert found.entrypoint == "flows/drift.py:drift"
    assert [s.schedule.cron for s in found.schedules] == [DAILY_DRIFT.cron]
    assert found.work_pool_name == POOL and set(DAILY_DRIFT.tags) <= set(found.tags)
