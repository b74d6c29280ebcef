"""The training set of a run: MNIST plus the accepted batches, and the snapshot naming it.

A run trains on MNIST train plus each accepted batch's train part and keeps the batches'
held-out parts (`digits.data.batches.held_out_mask`) as a pooled "new data" test set. The
snapshot (the manifest's `data.snapshot`) names exactly that data: MNIST file hashes, the
batches' ids and array hashes in training order, and the split rule, so `digits reproduce`
can rebuild it and a scheduled run can tell that nothing changed since production.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from digits.config import TrainConfig, ValidationConfig
from digits.data.batches import BATCHES, QUARANTINE, SPLIT_RULE, Batch, held_out_mask, read_batch
from digits.data.ingest import Dataset
from digits.errors import DataError
from digits.files import sha256_bytes


@dataclass(frozen=True)
class NewData:
    """The pooled held-out parts of the batches: images no run ever trains on."""

    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8

    @property
    def rows(self) -> int:
        return len(self.labels)


def sha256_of_array(array: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def take_snapshot(data: Dataset, batches: list[Batch]) -> dict:
    """What a run trains and tests on, by content: equal snapshots mean equal data."""
    return {
        "mnist": dict(sorted(data.sha256.items())),
        "batches": [
            {
                "id": batch.id,
                "name": batch.name,
                "rows": len(batch.labels),
                "images_sha256": sha256_of_array(batch.images),
                "labels_sha256": sha256_of_array(batch.labels),
            }
            for batch in batches
        ],
        "split_rule": SPLIT_RULE,
    }


def combine(data: Dataset, batches: list[Batch]) -> tuple[Dataset, NewData]:
    """MNIST with every batch's train part appended to train, and the pooled held-out parts.

    The order is MNIST then the batches in the given (snapshot) order, so a reproduction
    that passes the same batches gets the same arrays and hence the same validation split.
    """
    masks = [held_out_mask(batch.images) for batch in batches]
    train_images = [data.train_images] + [b.images[~m] for b, m in zip(batches, masks)]
    train_labels = [data.train_labels] + [b.labels[~m] for b, m in zip(batches, masks)]
    new = NewData(
        images=np.concatenate([b.images[m] for b, m in zip(batches, masks)] or [
            np.zeros((0, *data.test_images.shape[1:]), np.uint8)]),
        labels=np.concatenate([b.labels[m] for b, m in zip(batches, masks)] or [
            np.zeros(0, np.uint8)]),
    )
    union = replace(
        data,
        train_images=np.concatenate(train_images).astype(np.uint8, copy=False),
        train_labels=np.concatenate(train_labels).astype(np.uint8, copy=False),
    )
    return union, new


def data_rows(data: Dataset, union: Dataset, new: NewData) -> dict[str, int]:
    """The manifest's `data.rows`: MNIST's, plus the batches' parts when there are any."""
    rows = data.rows()
    if union.rows()["train"] != rows["train"] or new.rows:
        rows |= {"new_train": union.rows()["train"] - rows["train"], "new_held_out": new.rows}
    return rows


def union_checks(checks: ValidationConfig, rows: dict[str, int]) -> ValidationConfig:
    """The processed suite counts the union: the pinned MNIST's exact train count grows by
    the batches' train parts (the raw suite still checks MNIST's own count)."""
    if not checks.exact_rows or not rows.get("new_train"):
        return checks
    exact = {**checks.exact_rows, "train": checks.exact_rows["train"] + rows["new_train"]}
    return replace(checks, exact_rows=exact)


def run_settings(
    config: TrainConfig, threshold: float, regression_tolerance: float | None
) -> dict:
    """What, besides the data, decides a run's outcome: compared as the manifest records it."""
    return json.loads(json.dumps({
        "model": config.model,
        "hyperparameters": asdict(config),
        "threshold": threshold,
        "regression_tolerance": regression_tolerance,
    }))


def recorded_settings(manifest: dict) -> dict:
    return {
        "model": manifest.get("model"),
        "hyperparameters": manifest.get("hyperparameters"),
        "threshold": manifest.get("threshold"),
        "regression_tolerance": (manifest.get("gate") or {}).get("regression_tolerance"),
    }


def is_unchanged(
    production: dict | None, snapshot: dict, settings: dict, tuned_counts: bool = False
) -> bool:
    """True when production was trained on this very data with these very settings:
    retraining would only repeat it (manifests from before snapshots never match).

    With `tuned_counts` (a run that asked for the model's defaults), a production chosen
    by `digits tune` on this data counts too, whatever hyperparameters the study picked:
    the defaults would only replace the study's pick on data it has already seen.
    """
    if production is None:
        return False
    recorded = (production.get("data") or {}).get("snapshot")
    if recorded != json.loads(json.dumps(snapshot)):
        return False
    found = recorded_settings(production)
    if tuned_counts and production.get("study"):
        found["hyperparameters"] = settings["hyperparameters"]
    return found == settings


def check_mnist(data: Dataset, snapshot: dict) -> None:
    """Refuse MNIST files that differ from those the snapshot names (exit 4)."""
    recorded = snapshot.get("mnist", {})
    for name, digest in sorted(recorded.items()):
        found = data.sha256.get(name)
        if found != digest:
            what = "missing" if found is None else f"SHA-256 {found}"
            raise DataError(f"{name} from {data.source}: {what}, the snapshot has {digest}")


def snapshot_batches(store: Path, snapshot: dict) -> list[Batch]:
    """The snapshot's batches from the store, in its order, each checked against its hashes.

    A batch quarantined since still counts: the snapshot says it was trained on.
    """
    batches = []
    for entry in snapshot.get("batches", []):
        label = f"batch {entry.get('name')!r} ({entry['id'][:12]})"
        folders = [Path(store) / part / entry["id"] for part in (BATCHES, QUARANTINE)]
        folder = next((f for f in folders if f.is_dir()), None)
        if folder is None:
            raise DataError(f"{label}: missing from {Path(store) / BATCHES}")
        try:
            batch = read_batch(folder)
        except DataError as error:
            raise DataError(f"{label}: {error}") from None
        if (sha256_of_array(batch.images), sha256_of_array(batch.labels)) != (
            entry.get("images_sha256"), entry.get("labels_sha256")
        ):
            raise DataError(f"{label}: arrays in {folder} differ from the snapshot's hashes")
        batches.append(batch)
    return batches
