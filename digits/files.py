"""Folders owned by a live process: staging for downloads, Data Docs builds, registry
builds and fetches, and the sweep that removes what a killed process left.

The owner holds `<folder>.lock` (an flock, which the kernel releases when the process
dies) from before the folder exists until after it is gone, so a sweeper that can take
the lock without waiting knows the owner is dead, however long a live owner's work takes.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

OWN_LOCK_TIMEOUT_S = 60.0  # a folder's own lock: only a sweeper touches it, briefly


@contextmanager
def owned_folder(folder: Path) -> Iterator[None]:
    """Hold `<folder>.lock` from before `folder` exists until after it is gone (renamed
    away or removed here), so `sweep_abandoned` knows a live owner from a dead one."""
    with FileLock(f"{folder}.lock", timeout=OWN_LOCK_TIMEOUT_S) as lock:
        try:
            yield
        finally:
            # After a rename the folder is gone; otherwise nothing of it may remain.
            if folder.exists():
                shutil.rmtree(folder)
            # Unlinked while still held, never after: see Registry._clean_leftovers.
            Path(lock.lock_file).unlink(missing_ok=True)


def sweep_abandoned(parent: Path, pattern: re.Pattern) -> None:
    """Remove `parent`'s entries named by `pattern` (and their `.lock`) whose owner died."""
    for entry in list(parent.iterdir()):
        if entry.name.endswith(".lock"):
            owned = entry.with_suffix("")
            if pattern.match(owned.name) and not owned.exists():
                remove_abandoned(owned)
        elif pattern.match(entry.name):
            remove_abandoned(entry)


def remove_abandoned(folder: Path) -> None:
    """Remove a folder and its lock file unless its owner is still alive."""
    lock = FileLock(f"{folder}.lock")
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return  # a live owner holds it
    try:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        elif folder.exists() or folder.is_symlink():
            folder.unlink()
        Path(lock.lock_file).unlink(missing_ok=True)
    finally:
        lock.release()


@contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder `<parent>/<prefix><hex>` for the life of the block, removed after it.

    Its owner holds `<folder>.lock` (an flock, which the kernel releases when the process
    dies) from before the folder exists until after it is gone, so `sweep_staging` can tell
    a dead owner's leftovers from a live owner's work, however long that work takes.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"{prefix}{uuid.uuid4().hex}"
    with owned_folder(folder):
        folder.mkdir()
        yield folder


def sweep_staging(parent: Path, prefix: str) -> None:
    """Remove the staging folders under `parent`, and their lock files, whose owner died."""
    # uuid hex, or the 8 characters of the `tempfile` folders used before staging took locks.
    sweep_abandoned(parent, re.compile(rf"^{re.escape(prefix)}([0-9a-f]{{32}}|[a-z0-9_]{{8}})$"))
