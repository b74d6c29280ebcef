"""Every event digits emits, named in one place, each about one resource automations can match:

- `digits.retrain.promoted|rejected|skipped|failed`: how a run that trains a model ended
  (retrain and tune alike, so one automation watches every way a model reaches
  production); the resource is the registry (flows/outcome.py emits it).
- `digits.batch.accepted|quarantined`: a batch the add flow stored, its store as the
  resource's `digits.store` label (absolute, resolved). prefect.yaml's deployment trigger
  starts a retraining on `accepted` in the deployment's own store (flows/schedule.py,
  ON_NEW_DATA); the run takes nothing from the event, whose store and registry (where the
  add stored it, what its checks used) are for people and automations to read: anyone who
  reaches the Prefect API can emit one (flows/deployed.py).
- `digits.serving.drift`: a verdict on the served traffic; the resource is the log folder.

Prefect adds the emitting flow run (and its deployment and tags) as related resources. It
is imported inside `emit`: flows/schedule.py, which the Makefile runs, reads names from here.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "digits"
RETRAIN = f"{PREFIX}.retrain"  # + .promoted, .rejected, .skipped, .failed
ACCEPTED = f"{PREFIX}.batch.accepted"
QUARANTINED = f"{PREFIX}.batch.quarantined"
DRIFT = f"{PREFIX}.serving.drift"
# A resource label naming the batch store: the trigger matches its deployment's store by it.
STORE_LABEL = f"{PREFIX}.store"


def resource(kind: str, key: str, name: str, **labels: str) -> dict[str, str]:
    """The resource `digits.<kind>.<key>`, shown as `name` in the UI."""
    return {"prefect.resource.id": f"{PREFIX}.{kind}.{key}", "prefect.resource.name": name,
            **labels}


def emit(event: str, about: dict[str, str], payload: dict) -> None:
    from prefect.events import emit_event

    emit_event(event=event, resource=about, payload=payload)


def retrain_event(kind: str, registry: Path, payload: dict) -> dict:
    """The keyword arguments of `emit` for a training run's outcome (`kind`)."""
    return {"event": f"{RETRAIN}.{kind}",
            "about": resource("registry", str(registry), str(registry)), "payload": payload}


def batch_event(record: dict, store: Path, registry: Path) -> dict:
    """The keyword arguments of `emit` for a stored batch's record."""
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
    return {
        "event": ACCEPTED if record["status"] == "accepted" else QUARANTINED,
        "about": resource("batch", record["id"], record["name"], **{STORE_LABEL: str(store)}),
        "payload": payload,
    }


def drift_event(log_dir: Path, payload: dict) -> dict:
    """The keyword arguments of `emit` for a verdict on the traffic logged in `log_dir`."""
    return {"event": DRIFT, "about": resource("serving", str(log_dir), str(log_dir)),
            "payload": payload}
