"""The events digits emits (flows/events.py): a stored batch's (the server side is in
tests/integration/test_batch_trigger.py), a run's outcome, a drift verdict."""

from pathlib import Path

from flows.events import ACCEPTED, QUARANTINED, STORE_LABEL, batch_event, drift_event, retrain_event

RECORD = {"id": "c0ffee" * 10 + "abcd", "name": "alice", "rows": 60, "status": "accepted",
          "reason": None, "class_counts": [6] * 10, "checks": {"rows": {"passed": True}}}


def test_an_accepted_batch_is_announced_with_its_store_and_registry():
    event = batch_event(RECORD, Path("/data"), Path("/registry"))
    assert event["event"] == ACCEPTED == "digits.batch.accepted"
    assert event["about"] == {"prefect.resource.id": f"digits.batch.{RECORD['id']}",
                                 "prefect.resource.name": "alice", STORE_LABEL: "/data"}
    assert event["payload"] == {"id": RECORD["id"], "name": "alice", "rows": 60,
                                "status": "accepted", "reason": None, "store": "/data",
                                "registry": "/registry"}  # no checks or counts: kept small


def test_a_quarantined_batch_has_its_own_event_and_the_reason():
    record = {**RECORD, "status": "quarantined", "reason": "rows: observed 5, bound >= 20"}
    event = batch_event(record, Path("/data"), Path("/registry"))
    assert event["event"] == QUARANTINED == "digits.batch.quarantined"
    assert event["payload"]["reason"] == "rows: observed 5, bound >= 20"


def test_the_origin_is_announced_when_the_record_has_one():
    assert "origin" not in batch_event(RECORD, Path("/d"), Path("/r"))["payload"]
    event = batch_event({**RECORD, "origin": "feedback"}, Path("/d"), Path("/r"))
    assert event["payload"]["origin"] == "feedback"


def test_a_runs_outcome_and_a_drift_verdict_name_their_resources():
    event = retrain_event("promoted", Path("/registry"), {"version": "v3"})
    assert event == {"event": "digits.retrain.promoted", "payload": {"version": "v3"},
                     "about": {"prefect.resource.id": "digits.registry./registry",
                               "prefect.resource.name": "/registry"}}
    event = drift_event(Path("/log"), {"drifted": True})
    assert event["event"] == "digits.serving.drift"
    assert event["about"] == {"prefect.resource.id": "digits.serving./log",
                              "prefect.resource.name": "/log"}
