"""Add tasks: read and normalise a batch (a user's file, or people's labels from the
prediction log), run its checks (artifacts for each), store it with its page (report.html,
also an artifact)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from digits.checks.batch import Check, check_batch, failures, recheck_leakage, report_of
from digits.checks.measure import held_out_parts, reference_of
from digits.checks.policy import fmt
from digits.checks.render import markdown_of, renderer
from digits.checks.settings import BatchChecks
from digits.config import NUM_CLASSES
from digits.data.batches import PAGE, Batch, Render, accepted_batches, find_batch, store_batch
from digits.data.ingest import load_mnist
from digits.data.intake import Source, read_source, source_id
from digits.files import staging_folder
from digits.monitoring.feedback import feedback_source
from digits.monitoring.rotation import release_labels
from digits.registry.load import load_production
from digits.registry.manifest import utc_now
from tasks import stage


@stage("read-batch")
def read(path: Path, config: BatchChecks) -> Source:
    return read_source(path, config)


@stage("read-feedback")
def read_feedback(log_dir: Path, since: datetime | None,
                  config: BatchChecks) -> tuple[Source, list[str]]:
    return feedback_source(log_dir, since, config.max_rows)


@stage("release-labels")
def release(log_dir: Path, ids: list[str]) -> int:
    """The store holds these trusted answers now (accepted or quarantined, it keeps the
    rows either way): the log may let them rotate, with whatever else is settled (dismissed
    suggestions). How many label and suggestion files were let go."""
    return release_labels(log_dir, ids)


@stage("check-batch")
def check(source: Source, store_dir: Path, reference_dir: Path | None, registry_root: Path,
          config: BatchChecks) -> tuple[list[Check], frozenset[str], Render]:
    """Every check, the ids of the accepted batches they compared with (`store` rechecks
    against any accepted since), and the renderer of the batch's page (it keeps the
    reference and the model, to find the rows behind the checks)."""
    mnist = load_mnist(reference_dir, store_dir)
    batches = accepted_batches(store_dir)
    reference = reference_of(mnist.train_images, mnist.train_labels, mnist.test_images,
                             held_out_parts(batches), config)
    model = load_production(registry_root)
    with staging_folder(store_dir, ".checks-") as work:
        checks = check_batch(source, reference, model, config, work)
    publish(checks)
    return checks, frozenset(batch.id for batch in batches), renderer(
        source, reference, model, config)


def publish(checks: list[Check]) -> None:
    failed = failures(checks)
    create_table_artifact(
        key="batch-checks",
        table=[{"check": c.name, "observed": fmt(c.observed), "bound": c.bound,
                "result": "pass" if c.passed else "FAIL", "note": c.note} for c in checks],
        description="Checks of the new batch (Great Expectations on the measured numbers): "
        + ("passed" if not failed else f"FAILED {', '.join(c.name for c in failed)}"),
    )


@stage("store-batch")
def store(source: Source, name: str, checks: list[Check], compared: frozenset[str],
          store_dir: Path, config: BatchChecks, render: Render | None = None
          ) -> tuple[dict, bool]:
    """Store the batch with its page; the record stored (this one, a rechecked one, or an
    equal batch's) and whether it was written here."""

    def recheck(since: list[Batch]) -> tuple[dict, dict]:  # under the store's lock
        return records_of(source, name, recheck_leakage(source, checks, since, config))

    record, report = records_of(source, name, checks)
    folder, written = store_batch(store_dir, source, record, report, recheck, compared, render)
    record = find_batch(store_dir, record["id"])
    create_markdown_artifact(
        key="batch-stored",
        markdown=f"# Batch {record['id'][:12]} {record['status']}\n\n"
        f"{record['rows']} images from `{source.path}` in `{folder}`\n\n"
        + (f"Reason: {record['reason']}\n\n" if record["reason"] else "")
        + page_line(folder, record),
        description=f"batch {record['status']}",
    )
    if written and (folder / PAGE).is_file():
        create_markdown_artifact(key="batch-report", markdown=markdown_of(
            (folder / PAGE).read_text(encoding="utf-8")),
            description=f"the page of batch {record['id'][:12]} ({PAGE})")
    return record, written


def page_line(folder: Path, record: dict) -> str:
    if (folder / PAGE).is_file():
        return f"Page: `{folder / PAGE}` (artifact `batch-report`)\n"
    return f"No {PAGE}: {record.get('report_error', 'not rendered')}\n"


def records_of(source: Source, name: str, checks: list[Check]) -> tuple[dict, dict]:
    """batch.json and report.json of a batch with these checks."""
    report = report_of(checks)
    labels = source.labels
    known = labels[(labels >= 0) & (labels < NUM_CLASSES)]
    record = {
        "id": source_id(source),
        "name": name,
        "source": source.path,
        "origin": source.origin,  # "file" or "feedback": which rules judged it
        "rows": len(source.images),
        "class_counts": [int(n) for n in _counts(known)],
        "status": report["status"],
        "reason": report["reason"],
        "added_at": utc_now(),
        "checks": {c.name: {"observed": c.observed, "bound": c.bound, "passed": c.passed}
                   for c in checks},
    }
    if source.credentials is not None:  # who taught the batch: per row in credentials.npy
        names, counts = np.unique(source.credentials.astype(str), return_counts=True)
        record["credentials"] = {str(name): int(n) for name, n in zip(names, counts)}
    return record, report


def _counts(labels):
    return np.bincount(labels.astype(np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
