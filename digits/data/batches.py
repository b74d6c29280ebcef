"""The store of labelled batches that users add beside MNIST (`digits add`).

Layout under the data folder (`DIGITS_DATA`, default `data/`):

    batches/<id>/      images.npy (N, 28, 28) uint8, labels.npy (N,) uint8, batch.json
    quarantine/<id>/   the same plus the report of the check that failed; never trained on

A batch's id is the SHA-256 of its normalised arrays, so adding the same batch twice is
a no-op. Each image goes to the train or the held-out part by a hash of its own pixels
(`held_out_mask`), so it lands on the same side in every run and every reproduction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.config import IMAGE_SHAPE
from digits.errors import DataError
from digits.files import sha256_bytes

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
    return sha256_bytes(
        np.ascontiguousarray(images, dtype=np.uint8).tobytes(),
        np.ascontiguousarray(labels, dtype=np.uint8).tobytes(),
    )


def held_out_mask(images: np.ndarray) -> np.ndarray:
    """True for the images that stay out of training: decided by each image's own bytes."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    # The first 8 digest bytes as a big-endian int: 16 hex digits (SPLIT_RULE).
    buckets = [int(sha256_bytes(row.tobytes())[:16], 16) % 100 for row in flat]
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


# --- Adding batches (`digits add`) and listing them (`digits data`) -------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STAGING_PREFIX = ".staging-"  # a batch being written; its owner holds `<name>.lock`
STORE_LOCK = ".lock"  # in batches/: held while a batch is renamed into either store


@dataclass(frozen=True)
class Source:
    """A batch as read from the user's folder or .npz, before any check."""

    path: str
    images: np.ndarray  # (N, 28, 28) uint8, normalised as `digits predict` does
    labels: np.ndarray  # (N,) int64 as given: the labels check decides if they are 0..9
    unreadable: list[str]  # "file: why" for each image that could not be read


def read_source(path: Path) -> Source:
    """A folder of `0`..`9` subfolders of PNG/JPEG, or an .npz with images and labels."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return read_npz(path)
    raise DataError(f"{path}: not a folder of digit subfolders nor an .npz file")


def read_folder(folder: Path) -> Source:
    from digits.data.images import normalize_image, read_grayscale

    images, labels, unreadable = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = int(sub.name) if sub.name.lstrip("-").isdigit() else -1  # the labels check says
        for file in sorted(image_files(sub)):
            try:
                images.append(normalize_image(read_grayscale(file)))
                labels.append(label)
            except (DataError, ValueError) as error:
                unreadable.append(f"{file}: {str(error).removeprefix(f'{file}: ')}")
    if not images and not unreadable:
        raise DataError(f"{folder}: no images in subfolders 0..9")
    stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return Source(str(folder), stacked, np.array(labels, dtype=np.int64), unreadable)


def image_files(folder: Path) -> list[Path]:
    # Only images count: a notes.txt or Thumbs.db beside them is not an unreadable digit
    # (which would quarantine the batch); hidden files are the OS's, not the user's.
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in IMAGE_SUFFIXES]


def read_npz(path: Path) -> Source:
    from digits.data.images import BATCH_SHAPE

    try:
        with np.load(path, allow_pickle=False) as archive:  # a pickle could run code
            images, labels = archive["images"], archive["labels"]
    except KeyError as missing:
        raise DataError(f"{path}: no array {missing} (needs 'images' and 'labels')") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz ({error})") from None
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise DataError(f"{path}: images must be {BATCH_SHAPE} uint8, got {images.shape} "
                        f"{images.dtype}")
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be ({len(images)},) integers, got {labels.shape} "
                        f"{labels.dtype}")
    return Source(str(path), images, labels.astype(np.int64), [])


def source_id(source: Source) -> str:
    # Labels outside 0..9 are stored (in quarantine) as given; the id wraps them to bytes.
    return batch_id(source.images, source.labels.astype(np.uint8))


def find_batch(data_dir: Path, id: str) -> dict | None:
    """The record of a batch already accepted or quarantined under `id`, else None."""
    for store in (BATCHES, QUARANTINE):
        record = Path(data_dir) / store / id / "batch.json"
        if record.is_file():
            return json.loads(record.read_text())
    return None


def store_batch(data_dir: Path, source: Source, record: dict, report: dict) -> tuple[Path, bool]:
    """Write the batch into `batches/` (accepted) or `quarantine/` (anything else), kill-safe:
    built in a staging folder, renamed into place under `batches/.lock`. Returns the folder
    and whether it was written here (False: an equal batch was stored first)."""
    from filelock import FileLock

    from digits.files import staging_folder, sweep_staging

    parent = Path(data_dir) / (BATCHES if record["status"] == "accepted" else QUARANTINE)
    lock_dir = Path(data_dir) / BATCHES
    lock_dir.mkdir(parents=True, exist_ok=True)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(parent, STAGING_PREFIX)  # what a killed `digits add` left
    with staging_folder(parent, STAGING_PREFIX) as staging:
        labels = source.labels.astype(np.uint8 if record["status"] == "accepted" else np.int64)
        np.save(staging / "images.npy", source.images, allow_pickle=False)
        np.save(staging / "labels.npy", labels, allow_pickle=False)
        (staging / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (staging / "batch.json").write_text(json.dumps(record, indent=2))
        with FileLock(lock_dir / STORE_LOCK):
            if find_batch(data_dir, record["id"]) is not None:
                return parent / record["id"], False
            staging.rename(parent / record["id"])
    return parent / record["id"], True


def list_batches(data_dir: Path) -> list[dict]:
    """The record of every stored batch, accepted and quarantined, oldest first."""
    records = []
    for store in (BATCHES, QUARANTINE):
        root = Path(data_dir) / store
        if root.is_dir():
            records += [json.loads((p / "batch.json").read_text()) for p in root.iterdir()
                        if p.is_dir() and not p.name.startswith(".")
                        and (p / "batch.json").is_file()]
    return sorted(records, key=lambda r: (r.get("added_at", ""), r["id"]))
