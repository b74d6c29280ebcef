"""Snapshot tasks: the accepted batches and the snapshot of a run's data, the skip check,
and the union of MNIST train with the batches' train parts (digits.data.snapshot)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from digits.config import PRODUCTION_ALIAS
from digits.data.batches import Batch, verified_batches
from digits.data.ingest import Dataset
from digits.data.snapshot import NewData, combine, data_rows, is_unchanged, take_snapshot
from digits.registry.location import open_registry
from tasks import stage


@stage("snapshot")
def snapshot(data: Dataset, store: Path) -> tuple[list[Batch], dict]:
    """The accepted batches in training order, and the snapshot naming all the run's data;
    DataError naming every folder of `batches/` that its record does not say was accepted
    as it is (digits.data.check_record)."""
    batches = verified_batches(store)
    get_run_logger().info(
        "data: %s and %d accepted batch(es) %s",
        data.source,
        len(batches),
        ", ".join(f"{b.name} ({b.id[:12]}, {len(b.labels)} rows)" for b in batches) or "",
    )
    return batches, take_snapshot(data, batches)


@stage("check-new-data")
def unchanged_since(
    registry: Path, snapshot: dict, settings: dict, tuned_counts: bool = False
) -> str | None:
    """Production's version when it was trained on this data with these settings (or was
    tuned on it, with `tuned_counts`), else None.

    Read without the lock: a skip only avoids work, it writes nothing.
    """
    root = open_registry(registry)
    if PRODUCTION_ALIAS not in root.aliases():
        return None
    production = root.manifest(PRODUCTION_ALIAS)
    unchanged = is_unchanged(production, snapshot, settings, tuned_counts)
    return production["version"] if unchanged else None


@stage("union")
def union(data: Dataset, batches: list[Batch]) -> tuple[Dataset, NewData, dict[str, int]]:
    """MNIST train plus the batches' train parts; their held-out parts pooled as new data;
    the row counts the manifest records."""
    combined, new = combine(data, batches)
    if batches:
        get_run_logger().info(
            "training on %d MNIST + %d batch images; %d held-out batch images as new data",
            len(data.train_labels),
            len(combined.train_labels) - len(data.train_labels),
            new.rows,
        )
    return combined, new, data_rows(data, combined, new)
