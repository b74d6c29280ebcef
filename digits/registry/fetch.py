"""`digits fetch` from a folder registry, and where it may write: a new or empty folder,
filled by one rename."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from digits.errors import RegistryError, UsageError
from digits.files import copy_hashed, fsync_dir, owned_folder, sha256_bytes, sweep_abandoned
from digits.registry.layout import FETCH_PREFIX, FETCH_RE, MANIFEST_FILE, MODEL_FILE
from digits.registry.manifest import dump_json


def fetch_version(
    folder: Path, manifest: dict, dest: Path, on_step: Callable[[str], None]
) -> Path:
    """Copy a verified version `folder` into `dest` (checked new or empty); `dest/model.keras`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a staging folder beside dest and check every checksum again while
    # copying, so dest never receives a byte that did not match the manifest.
    raw_manifest = dump_json(manifest)
    expected = {MANIFEST_FILE: (sha256_bytes(raw_manifest), len(raw_manifest))}
    expected |= {name: (meta["sha256"], meta["size"]) for name, meta in manifest["files"].items()}
    with staged_beside(dest) as staging:
        for name, digest_size in expected.items():
            if copy_hashed(folder / name, staging / name) != digest_size:
                raise RegistryError(f"{folder / name}: changed while being fetched")
        on_step("fetch-staged")
        place(staging, dest)
    return dest / MODEL_FILE


@contextmanager
def staged_beside(dest: Path) -> Iterator[Path]:
    """A new staging folder beside `dest`, owned (its `.lock` held) until the block ends and
    removed unless renamed; a killed fetch's staging is swept by the next one there."""
    sweep_abandoned(dest.parent, FETCH_RE, locked_only=True)
    staging = dest.parent / f"{FETCH_PREFIX}{uuid.uuid4().hex}"
    with owned_folder(staging):
        staging.mkdir()
        yield staging


def check_dest(dest: Path) -> None:
    """Refuse a fetch destination that is not a new or empty folder (a usage error): files
    copied over another version's would leave its extra files beside this manifest."""
    for folder in (dest, *dest.parents):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: not a folder; --dest must be a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError(
            f"{dest}: not empty; fetch into a new or empty folder (remove it to replace it)"
        )


def place(staging: Path, dest: Path) -> None:
    """Rename the staged copy to `dest` in one step: rename(2) replaces only an empty
    folder, so one filled since `check_dest` is refused, never merged into."""
    try:
        os.rename(staging, dest)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        check_dest(dest)  # says what dest became
        raise
    fsync_dir(dest.parent)
