"""The `add` flows: read a labelled batch, check it, store it as accepted or quarantined.
`add` reads a user's file or folder (always a "file" batch); `add-feedback` reads people's
labels from the prediction log, the only way a batch is judged as "feedback"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.states import Completed

from digits.checks.settings import BatchChecks
from digits.data.batches import find_batch
from digits.data.intake import Source, source_id
from digits.environment import default_store_dir, muted_stderr
from digits.errors import ValidationFailed
from digits.registry.location import registry_location
from flows.events import batch_event, emit

with muted_stderr():  # the check task loads Keras for the production model
    from tasks.add import check, read, read_feedback, release, store


@dataclass(frozen=True)
class Added:
    """What `digits add` prints: the batch, and whether it was new."""

    id: str
    name: str
    rows: int
    status: str
    new: bool
    reason: str | None = None

    def line(self) -> str:
        if not self.new:
            return f"batch {self.id[:12]} ({self.name}) already {self.status}; nothing added"
        return f"accepted batch {self.id[:12]} ({self.name}): {self.rows} images"


@flow(name="add", flow_run_name="add-{name}", validate_parameters=False)
def add(path: Path, name: str, store_dir: Path | None = None, reference_dir: Path | None = None,
        registry: str | Path | None = None, config: BatchChecks | None = None):
    config = config or BatchChecks()
    return check_and_store(read(path, config), name, store_dir, reference_dir, registry, config)


@flow(name="add-feedback", flow_run_name="add-feedback-{name}", validate_parameters=False)
def add_feedback(log_dir: Path, name: str, since: datetime | None = None,
                 store_dir: Path | None = None, reference_dir: Path | None = None,
                 registry: str | Path | None = None, config: BatchChecks | None = None):
    """The trusted labels in the prediction log at `log_dir` since `since` (never its
    suggestions), as a feedback batch."""
    config = config or BatchChecks()
    source, ids = read_feedback(log_dir, since, config)
    data = store_dir.resolve() if store_dir else default_store_dir()
    try:
        return check_and_store(source, name, data, reference_dir, registry, config)
    finally:  # stored, accepted or quarantined, the rows are safe: the log may let them go
        if find_batch(data, source_id(source)) is not None:
            release(log_dir, ids)


def check_and_store(source: Source, name: str, store_dir: Path | None,
                    reference_dir: Path | None, registry: str | Path | None, config: BatchChecks):
    """The steps both flows share, once the batch is read: its final state."""
    data = store_dir.resolve() if store_dir else default_store_dir()
    existing = find_batch(data, source_id(source))
    if existing is not None and existing["status"] != "accepted":
        raise ValidationFailed(f"batch {existing['id'][:12]} already quarantined: "
                               f"{existing['reason']}; nothing added")
    if existing is not None:  # the same arrays, whatever the file names: nothing to do
        added = Added(existing["id"], existing["name"], existing["rows"], existing["status"],
                      new=False, reason=existing.get("reason"))
        return Completed(message=added.line(), data=added)
    root = registry_location(registry)
    checks, compared, render = check(source, data, reference_dir, root, config)
    record, new = store(source, name, checks, compared, data, config, render)
    if new:  # an equal batch stored meanwhile by another add was announced by that add
        emit(**batch_event(record, data, root))
    if record["status"] != "accepted":
        raise ValidationFailed(f"batch {record['id'][:12]} quarantined: {record['reason']}")
    added = Added(record["id"], record["name"], record["rows"], record["status"], new)
    return Completed(message=added.line(), data=added)
