"""The record of its checks that every stored batch carries, and what a run verifies of it.

`store_batch` (digits.data.batches) adds to batch.json, beside the verdict (`status`,
`reason`, `checks`): `checks_version` (digits.checks.version) and `files_sha256`, the
SHA-256 of images.npy and labels.npy as the checks saw them. A run trains on a folder of
`batches/` only when that record says accepted, by a version of the checks still trusted,
and the files hash as recorded. Anything else (a folder copied in by hand from
`quarantine/`, a batch changed since, one stored before batches had this record) is named
and the run stops (exit 4) rather than skip it: skipping would change what the model
learns without anyone looking, and the operator must decide (re-add it to have it judged).

The record is no signature: whoever can write the store can write a record. It keeps
mistakes and stale verdicts out of training; the store's permissions keep people out.
"""

from __future__ import annotations

from pathlib import Path

from digits.checks.version import CHECKS_VERSION, TRUSTED_SINCE
from digits.files import sha256_file

ARRAYS = ("images.npy", "labels.npy")


def stamped(folder: Path, record: dict) -> dict:
    """`record` with the version of the checks and the hashes of `folder`'s arrays."""
    return {**record, "checks_version": CHECKS_VERSION,
            "files_sha256": {name: sha256_file(folder / name) for name in ARRAYS}}


def why_untrusted(folder: Path, record: dict) -> str | None:
    """Why a run may not train on the batch in `folder` (with its batch.json `record`), or
    None when the record says the checks accepted exactly these files."""
    if record.get("status") != "accepted":
        return f"its record says {record.get('status')!r}, not accepted (copied in by hand?)"
    version, hashes = record.get("checks_version"), record.get("files_sha256")
    if version is None or not isinstance(hashes, dict):
        return "no record of its checks (stored before runs verified batches)"
    if not isinstance(version, int) or not TRUSTED_SINCE <= version <= CHECKS_VERSION:
        return (f"checked by checks version {version}, runs train only on batches checked "
                f"by versions {TRUSTED_SINCE} to {CHECKS_VERSION}")
    changed = [name for name in ARRAYS if hashes.get(name) != sha256_file(folder / name)]
    if changed:
        return f"{changed[0]} differs from what the checks saw (changed since it was stored)"
    return None
