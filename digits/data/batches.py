"""The store of labelled batches that users add beside MNIST (`digits add`).

Layout under the data folder (`DIGITS_DATA`, default `data/`):

    batches/<id>/      images.npy (N, 28, 28) uint8, labels.npy (N,) uint8, batch.json
                       (the verdict and the record of its checks: digits.data.check_record),
                       report.json (every check) and report.html (the batch's page); a
                       feedback batch also credentials.npy (N,) str: who gave each label
                       (a token's name or "review:NAME"), counted in batch.json's
                       `credentials`
    quarantine/<id>/   the same for a batch that failed a check; never trained on

A batch's id is the SHA-256 of its normalised arrays, so adding the same batch twice is
a no-op. Each image goes to the train or the held-out part by a hash of its own pixels
(`held_out_mask`), so it lands on the same side in every run and every reproduction.

A run trains only on what the checks accepted (`verified_batches`): a folder of `batches/`
whose record does not say so, or that cannot be read, stops it, named. An add's checks
compare with every readable accepted batch and skip an unreadable one with a warning.

Reading what a user hands to `digits add` is digits.data.intake.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digits.data.check_record import stamped, why_untrusted
from digits.errors import DataError
from digits.files import sha256_bytes

if TYPE_CHECKING:
    from digits.data.intake import Source

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


def accepted_batches(store_dir: Path, exclude: Collection[str] = ()) -> list[Batch]:
    """Every readable folder of `batches/` but those in `exclude` (ids), oldest first (by
    when it was added, then id), for an add's checks to compare with (a run trains only on
    `verified_batches`); each unreadable one is skipped with a warning naming it."""
    batches = []
    for folder in batch_folders(Path(store_dir) / BATCHES):
        if folder.name in exclude:
            continue
        try:
            batches.append(read_batch(folder))
        except DataError as error:
            log.warning("%s; skipped (`digits data` lists it)", error)
    return oldest_first(batches)


def oldest_first(batches: list[Batch]) -> list[Batch]:
    return sorted(batches, key=lambda b: (b.record.get("added_at", ""), b.id))


# How to have a batch judged by the checks again (`digits data remove`, then `digits add`).
READD = "take each out with `digits data remove ID --out FILE.npz` and `digits add FILE.npz`"


def verified_batches(store_dir: Path) -> list[Batch]:
    """Every batch of `batches/`, oldest first, each as the record of its checks says they
    accepted it; DataError (exit 4) naming every folder that is not, so a run trains on
    what the checks accepted or on nothing."""
    root = Path(store_dir) / BATCHES
    batches, refused = [], []
    for folder in batch_folders(root):
        try:
            batches.append(verified(folder))
        except DataError as error:
            refused.append(str(error))
    if refused:
        raise DataError(f"{root}: {len(refused)} batch folder(s) the checks did not accept as "
                        f"they are: {'; '.join(refused)}; {READD} to have it judged anew")
    return oldest_first(batches)


def verified(folder: Path) -> Batch:
    batch = read_batch(folder)
    reason = why_untrusted(folder, batch.record)
    if reason:
        raise DataError(f"{batch.id[:12]} ({batch.name}): {reason}")
    return batch


# --- Storing batches (`digits add`) and listing them (`digits data`) -----------------

STAGING_PREFIX = ".staging-"  # a batch being written; its owner holds `<name>.lock`
STORE_LOCK = ".lock"  # in batches/: held while a batch is renamed into either store


def find_batch(store_dir: Path, id: str) -> dict | None:
    """The record of a batch already accepted or quarantined under `id`, else None."""
    for store in (BATCHES, QUARANTINE):
        record = Path(store_dir) / store / id / "batch.json"
        if record.is_file():
            return json.loads(record.read_text())
    return None


# Given the batches accepted since the checks began, the record and report to store instead.
Recheck = Callable[[list[Batch]], tuple[dict, dict]]
# Given the record and report stored, the batch's page (digits.checks.render.renderer).
Render = Callable[[dict, dict], str]
PAGE = "report.html"
CREDENTIALS = "credentials.npy"  # a feedback batch's audit record: who taught which image


def store_batch(store_dir: Path, source: Source, record: dict, report: dict,
                recheck: Recheck | None = None, compared: Collection[str] = (),
                render: Render | None = None) -> tuple[Path, bool]:
    """Write the batch into `batches/` (accepted) or `quarantine/` (anything else), kill-safe:
    built in a staging folder, renamed into place under `batches/.lock`. Returns the folder
    and whether it was written here (False: an equal batch was stored first).

    An accepted batch is rechecked, under the lock, against the accepted batches that its
    checks did not compare it with (`compared`: their ids): two adds at once would otherwise
    each miss the other's held-out images.

    `render` writes the batch's page (report.html) into the staging folder, so it lands with
    the batch, re-rendered if the recheck changed the report. A page that fails to render
    does not stop the batch: it is stored without one, with a warning and the error in
    batch.json's `report_error`.
    """
    from filelock import FileLock

    from digits.files import staging_folder, sweep_staging

    parent = Path(store_dir) / (BATCHES if record["status"] == "accepted" else QUARANTINE)
    lock_dir = Path(store_dir) / BATCHES
    lock_dir.mkdir(parents=True, exist_ok=True)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(parent, STAGING_PREFIX)  # what a killed `digits add` left
    with staging_folder(parent, STAGING_PREFIX) as staging:
        labels = source.labels.astype(np.uint8 if record["status"] == "accepted" else np.int64)
        np.save(staging / "images.npy", source.images, allow_pickle=False)
        np.save(staging / "labels.npy", labels, allow_pickle=False)
        if source.credentials is not None:
            np.save(staging / CREDENTIALS, source.credentials.astype(str), allow_pickle=False)
        write_records(staging, record, report, render)
        with FileLock(lock_dir / STORE_LOCK):
            if find_batch(store_dir, record["id"]) is not None:
                return parent / record["id"], False
            rechecked = recheck is not None and record["status"] == "accepted"
            since = accepted_batches(store_dir, exclude=compared) if rechecked else []
            if since:
                record, report = recheck(since)
                write_records(staging, record, report, render)
            if record["status"] != "accepted":
                parent = Path(store_dir) / QUARANTINE
                parent.mkdir(exist_ok=True)
            staging.rename(parent / record["id"])
    return parent / record["id"], True


def write_records(folder: Path, record: dict, report: dict,
                  render: Render | None = None) -> None:
    record = stamped(folder, record)  # the arrays are in `folder` already
    if render is not None:
        record = write_page(folder, record, report, render)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (folder / "batch.json").write_text(json.dumps(record, indent=2))


def write_page(folder: Path, record: dict, report: dict, render: Render) -> dict:
    """report.html in `folder`; the record to store (with `report_error` if it failed)."""
    page = folder / PAGE
    page.unlink(missing_ok=True)  # a recheck's page replaces the first
    try:
        text = render(record, report)
    # The page is a view of the checks: whatever breaks drawing it must not lose the
    # batch (its arrays and verdict are stored either way), so say why and go on.
    except Exception as error:  # noqa: BLE001
        reason = f"{type(error).__name__}: {error}"
        log.warning("batch %s: %s not written (%s); the batch is stored without it",
                    record["id"][:12], PAGE, reason)
        return {**record, "report_error": reason}
    page.write_text(text, encoding="utf-8")
    return {key: value for key, value in record.items() if key != "report_error"}


def list_batches(store_dir: Path) -> list[dict]:
    """The record of every stored batch, accepted and quarantined, oldest first; a folder
    that does not read back (as training would read it) is listed as status "unreadable"
    with the reason, and warned about."""
    records = [record_of(folder) for store in (BATCHES, QUARANTINE)
               for folder in batch_folders(Path(store_dir) / store)]
    return sorted(records, key=lambda r: (r.get("added_at") or "", r["id"]))


def record_of(folder: Path) -> dict:
    """A stored batch's record; "unreadable" (warned about) or, in `batches/`, "unverified"
    (what a run refuses: digits.data.check_record) with the reason."""
    try:
        record = read_batch(folder).record
    except DataError as error:
        log.warning("%s", error)
        return {"id": folder.name, "name": None, "status": "unreadable", "reason": str(error)}
    reason = why_untrusted(folder, record) if folder.parent.name == BATCHES else None
    return {**record, "status": "unverified", "reason": reason} if reason else record


def folders_matching(store_dir: Path, prefix: str) -> list[Path]:
    """The folders of stored batches (accepted, then quarantined) whose id starts with
    `prefix`; names are compared, never joined to a path, so no prefix reaches outside."""
    return [folder for store in (BATCHES, QUARANTINE)
            for folder in sorted(batch_folders(Path(store_dir) / store))
            if folder.name.startswith(prefix)]


def remove_batch(store_dir: Path, folder: Path, out: Path | None = None) -> None:
    """Take a stored batch out of the store, under the store's lock; with `out`, its images
    and labels are first written there as an .npz, for `digits add` to judge it again."""
    from filelock import FileLock

    from digits.files import staging_folder, write_npz

    lock_dir = Path(store_dir) / BATCHES
    lock_dir.mkdir(exist_ok=True)  # a store with quarantined batches only has none yet
    with FileLock(lock_dir / STORE_LOCK):
        if out is not None:  # images and labels as `digits add` reads them
            batch = read_batch(folder)  # DataError for a folder that no longer reads back
            write_npz(out, {"images": batch.images, "labels": batch.labels},
                      compressed=False, replace=True)
        # Renamed into a staging folder, removed with it: a kill leaves no half batch.
        with staging_folder(folder.parent, STAGING_PREFIX) as staging:
            folder.rename(staging / folder.name)

