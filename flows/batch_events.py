"""`digits.batch.accepted` and `digits.batch.quarantined`: how automations hear of a batch.

The add flow emits one when it has stored a new batch. prefect.yaml's deployment trigger
starts a retraining on `accepted` (flows/schedule.py, ON_NEW_DATA), with the batch's store
and the registry its checks used as the run's parameters, so the run trains on what was
just added and promotes where the checks looked. Paths are absolute: the worker runs from
another folder. Prefect is imported inside the function: flows/schedule.py (which the
Makefile runs) reads the names from here.
"""

from __future__ import annotations

from pathlib import Path

BATCH_EVENT_PREFIX = "digits.batch"
ACCEPTED = f"{BATCH_EVENT_PREFIX}.accepted"
QUARANTINED = f"{BATCH_EVENT_PREFIX}.quarantined"
# A resource label naming the batch store: the trigger debounces each store on its own.
STORE_LABEL = "digits.store"


def batch_event(record: dict, store: Path, registry: Path) -> dict:
    """The keyword arguments of `emit_event` for a stored batch's record."""
    payload = {
        "id": record["id"],
        "name": record["name"],
        "rows": record["rows"],
        "status": record["status"],
        "reason": record.get("reason"),
        "store": str(store),
        "registry": str(registry),
    }
    if "origin" in record:  # where the images came from (a file, people's corrections)
        payload["origin"] = record["origin"]
    accepted = record["status"] == "accepted"
    return {
        "event": ACCEPTED if accepted else QUARANTINED,
        "resource": {
            "prefect.resource.id": f"{BATCH_EVENT_PREFIX}.{record['id']}",
            "prefect.resource.name": record["name"],
            STORE_LABEL: str(store),
        },
        "payload": payload,
    }


def announce_batch(record: dict, store: Path, registry: Path) -> None:
    """Emit the batch's event; Prefect adds the add's flow run and flow as related."""
    from prefect.events import emit_event

    emit_event(**batch_event(record, store, registry))
