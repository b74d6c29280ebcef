"""The store of labelled batches that users add beside MNIST (`digits add`).

Layout under the data folder (`DIGITS_DATA`, default `data/`):

    batches/<id>/      images.npy (N, 28, 28) uint8, labels.npy (N,) uint8, batch.json
    quarantine/<id>/   the same plus the report of the check that failed; never trained on

A batch's id is the SHA-256 of its normalised arrays, so adding the same batch twice is
a no-op. Each image goes to the train or the held-out part by a hash of its own pixels
(`held_out_mask`), so it lands on the same side in every run and every reproduction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.errors import DataError

BATCHES = "batches"
QUARANTINE = "quarantine"
HELD_OUT_PERCENT = 20  # share of each batch's images kept out of training, by image hash
SPLIT_RULE = f"sha256(image bytes)[:8] as big-endian int % 100 < {HELD_OUT_PERCENT}: held out"


@dataclass(frozen=True)
class Batch:
    """One accepted (or quarantined) batch as stored: normalised arrays and their record."""

    id: str  # SHA-256 of images.tobytes() + labels.tobytes()
    name: str
    images: np.ndarray  # (N, 28, 28) uint8, white digit on black
    labels: np.ndarray  # (N,) uint8 in 0..9
    record: dict  # batch.json: id, name, rows, class_counts, status, reason, added_at, ...


def batch_id(images: np.ndarray, labels: np.ndarray) -> str:
    """The content address of a batch: equal arrays, equal id, whatever the file names."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def held_out_mask(images: np.ndarray) -> np.ndarray:
    """True for the images that stay out of training: decided by each image's own bytes."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    buckets = [int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "big") % 100
               for row in flat]
    return np.array(buckets, dtype=np.int64) < HELD_OUT_PERCENT


def read_batch(folder: Path) -> Batch:
    """Load one stored batch and check that its arrays still hash to its id."""
    try:
        record = json.loads((folder / "batch.json").read_text())
        images = np.load(folder / "images.npy", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{folder}: unreadable batch ({error})") from None
    if batch_id(images, labels) != folder.name:
        raise DataError(f"{folder}: arrays do not match the batch id (changed on disk)")
    return Batch(folder.name, record.get("name", folder.name), images, labels, record)


def accepted_batches(data_dir: Path) -> list[Batch]:
    """Every accepted batch, oldest first (by when it was added, then id)."""
    root = Path(data_dir) / BATCHES
    if not root.is_dir():
        return []
    batches = [read_batch(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(batches, key=lambda b: (b.record.get("added_at", ""), b.id))
