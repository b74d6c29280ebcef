"""The store of labelled batches that users add beside MNIST (`digits add`).

Layout under the data folder (`DIGITS_DATA`, default `data/`):

    batches/<id>/      images.npy (N, 28, 28) uint8, labels.npy (N,) uint8, batch.json
    quarantine/<id>/   the same plus the report of the check that failed; never trained on

A batch's id is the SHA-256 of its normalised arrays, so adding the same batch twice is
a no-op. Each image goes to the train or the held-out part by a hash of its own pixels
(`held_out_mask`), so it lands on the same side in every run and every reproduction.

A batch folder that cannot be read is skipped with a warning naming it (and listed as
"unreadable"), so one damaged folder does not stop every retrain and every add.

Reading a user's batch is bounded before anything is decoded (`BatchChecks.max_rows`,
`max_image_pixels`): only `0`..`9` name label folders, links are refused, and an .npz's
shapes come from its members' headers.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.config import DIGITS, IMAGE_SHAPE, BatchChecks
from digits.errors import DataError
from digits.files import sha256_bytes

log = logging.getLogger(__name__)

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
    if not isinstance(record, dict) or not all(
            isinstance(array, np.ndarray) for array in (images, labels)):
        raise DataError(f"{folder}: unreadable batch (batch.json is not an object, or an "
                        "array file holds no single array)")
    if batch_id(images, labels) != folder.name:
        raise DataError(f"{folder}: arrays do not match the batch id (changed on disk)")
    return Batch(folder.name, record.get("name", folder.name), images, labels, record)


def batch_folders(root: Path) -> list[Path]:
    """The batch folders of one store (`batches/` or `quarantine/`): not staging, not locks."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def accepted_batches(data_dir: Path, exclude: Collection[str] = ()) -> list[Batch]:
    """Every readable accepted batch but those in `exclude` (ids), oldest first (by when it
    was added, then id); each unreadable one is skipped with a warning naming it."""
    batches = []
    for folder in batch_folders(Path(data_dir) / BATCHES):
        if folder.name in exclude:
            continue
        try:
            batches.append(read_batch(folder))
        except DataError as error:
            log.warning("%s; skipped (`digits data` lists it)", error)
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


LABEL_FOLDERS = {str(digit): digit for digit in DIGITS}  # exactly "0".."9": not "007", "٣"


def read_source(path: Path, config: BatchChecks | None = None) -> Source:
    """A folder of `0`..`9` subfolders of PNG/JPEG, or an .npz with images and labels, within
    the read limits of `config`."""
    path, config = Path(path), config or BatchChecks()
    if path.is_dir():
        return read_folder(path, config)
    if path.is_file() and path.suffix.lower() == ".npz":
        return read_npz(path, config.max_rows)
    raise DataError(f"{path}: not a folder of digit subfolders nor an .npz file")


def read_folder(folder: Path, config: BatchChecks) -> Source:
    from digits.data.images import SHRINK_MIN_SIDE, normalize_image, read_grayscale

    files = [(file, LABEL_FOLDERS[sub.name]) for sub in label_folders(folder)
             for file in sorted(image_files(sub))]
    if len(files) > config.max_rows:
        raise DataError(f"{folder}: {len(files)} images, over the limit of {config.max_rows} "
                        "(max_rows)")
    images, labels, unreadable = [], [], []
    for file, label in files:
        try:
            gray = read_grayscale(file, config.max_image_pixels, min_side=SHRINK_MIN_SIDE)
            images.append(normalize_image(gray))
            labels.append(label)
        except (DataError, ValueError) as error:
            unreadable.append(f"{file}: {str(error).removeprefix(f'{file}: ')}")
    if not images and not unreadable:
        raise DataError(f"{folder}: no images in subfolders 0..9")
    stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    return Source(str(folder), stacked, np.array(labels, dtype=np.int64), unreadable)


def label_folders(folder: Path) -> list[Path]:
    """The subfolders `0`..`9`; any other visible subfolder, or a link, is a data error naming
    it, before any image is read (a typo must not merge classes or drop one)."""
    subs = sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or p.is_symlink()))
    for sub in subs:
        refuse_link(sub)
        if sub.name not in LABEL_FOLDERS:
            raise DataError(f"{sub}: not a label folder (subfolders must be named 0..9)")
    return subs


def refuse_link(path: Path) -> None:
    # A link would let any file on the machine, or another user's, enter the store.
    if path.is_symlink():
        raise DataError(f"{path}: a symbolic link (refused: only the batch's own files are read)")


def image_files(folder: Path) -> list[Path]:
    # Only images count: a notes.txt or Thumbs.db beside them is not an unreadable digit
    # (which would quarantine the batch); hidden files are the OS's, not the user's.
    files = [p for p in folder.iterdir() if not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES]
    for file in files:
        refuse_link(file)
    return [p for p in files if p.is_file()]


def read_npz(path: Path, max_rows: int) -> Source:
    """An .npz's `images` and `labels`, their shapes and sizes checked from the members'
    headers first: a few MB of deflated zeros can claim billions of images."""
    from digits.data.images import BATCH_SHAPE

    try:
        with zipfile.ZipFile(path) as archive:
            images = member_header(path, archive, "images")
            if len(images.shape) != 3 or images.shape[1:] != IMAGE_SHAPE or (
                    images.dtype != np.uint8):
                raise DataError(f"{path}: images must be {BATCH_SHAPE} uint8, got "
                                f"{images.shape} {images.dtype}")
            if images.shape[0] > max_rows:
                raise DataError(f"{path}: {images.shape[0]} images, over the limit of "
                                f"{max_rows} (max_rows)")
            labels = member_header(path, archive, "labels")
            if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
                raise DataError(f"{path}: labels must be ({images.shape[0]},) integers, got "
                                f"{labels.shape} {labels.dtype}")
            for member in (images, labels):
                member.check_size(path)
        with np.load(path, allow_pickle=False) as loaded:  # a pickle could run code
            pixels, targets = loaded["images"], loaded["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz ({error})") from None
    return Source(str(path), pixels, targets.astype(np.int64), [])


@dataclass(frozen=True)
class Member:
    """An .npz member as its header and the zip's directory describe it, nothing inflated."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    size: int  # uncompressed bytes, from the zip's directory
    claimed: int  # header plus data bytes, from the header

    def check_size(self, path: Path) -> None:
        # Anything but exactly the header's array is padding a bomb could hide in.
        if self.size != self.claimed:
            raise DataError(f"{path}: {self.name} holds {self.size} bytes, its header says "
                            f"{self.claimed}")


def member_header(path: Path, archive: zipfile.ZipFile, name: str) -> Member:
    from digits.data.images import npy_header

    member = f"{name}.npy"
    if member not in archive.namelist():
        raise DataError(f"{path}: no array {name!r} (needs 'images' and 'labels')")
    with archive.open(member) as file:
        shape, dtype = npy_header(file)
        claimed = file.tell() + math.prod(shape) * dtype.itemsize
    return Member(member, shape, dtype, archive.getinfo(member).file_size, claimed)


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


# Given the batches accepted since the checks began, the record and report to store instead.
Recheck = Callable[[list[Batch]], tuple[dict, dict]]


def store_batch(data_dir: Path, source: Source, record: dict, report: dict,
                recheck: Recheck | None = None, compared: Collection[str] = ()
                ) -> tuple[Path, bool]:
    """Write the batch into `batches/` (accepted) or `quarantine/` (anything else), kill-safe:
    built in a staging folder, renamed into place under `batches/.lock`. Returns the folder
    and whether it was written here (False: an equal batch was stored first).

    An accepted batch is rechecked, under the lock, against the accepted batches that its
    checks did not compare it with (`compared`: their ids): two adds at once would otherwise
    each miss the other's held-out images.
    """
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
        write_records(staging, record, report)
        with FileLock(lock_dir / STORE_LOCK):
            if find_batch(data_dir, record["id"]) is not None:
                return parent / record["id"], False
            rechecked = recheck is not None and record["status"] == "accepted"
            since = accepted_batches(data_dir, exclude=compared) if rechecked else []
            if since:
                record, report = recheck(since)
                write_records(staging, record, report)
            if record["status"] != "accepted":
                parent = Path(data_dir) / QUARANTINE
                parent.mkdir(exist_ok=True)
            staging.rename(parent / record["id"])
    return parent / record["id"], True


def write_records(folder: Path, record: dict, report: dict) -> None:
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (folder / "batch.json").write_text(json.dumps(record, indent=2))


def list_batches(data_dir: Path) -> list[dict]:
    """The record of every stored batch, accepted and quarantined, oldest first; a folder
    that does not read back (as training would read it) is listed as status "unreadable"
    with the reason, and warned about."""
    records = []
    for store in (BATCHES, QUARANTINE):
        for folder in batch_folders(Path(data_dir) / store):
            try:
                records.append(read_batch(folder).record)
            except DataError as error:
                log.warning("%s", error)
                records.append({"id": folder.name, "name": None, "status": "unreadable",
                                "reason": str(error)})
    return sorted(records, key=lambda r: (r.get("added_at") or "", r["id"]))
