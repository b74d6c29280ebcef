"""Files written to survive a crash, the library's one SHA-256 helper family, and folders
owned by a live process (staging for downloads, Data Docs builds, registry builds and
fetches) with the sweep that removes what a killed process left.

The owner of a folder holds `<folder>.lock` (an flock, which the kernel releases when the
process dies) from before the folder exists until after it is gone, so a sweeper that can
take the lock without waiting knows the owner is dead, however long a live owner's work takes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# --- hashing ---------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    with named_errors(path), path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_bytes(*parts: bytes | memoryview) -> str:
    """The SHA-256 of the parts one after another, as if joined (without copying them)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


# --- writing and walking ---------------------------------------------------------


@contextmanager
def named_errors(path: Path) -> Iterator[None]:
    """Name `path` in an OSError raised on an open file (a read, write or fsync names no
    file), so the one-line error says which file the disk refused."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy a file, fsync it, and return the SHA-256 and size of the bytes written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with named_errors(target), source.open("rb") as reader, target.open("xb") as writer:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest(), size


def write_synced(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Create `path` (never an existing file) holding `data`, on disk before this returns;
    `mode` as os.open's (the umask applies), e.g. 0o600 for a file only its owner reads."""

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, mode)

    with named_errors(path), open(path, "xb", opener=opener) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_synced(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace `path` with `data` whole (written beside it, fsynced, moved into place, the
    move made durable): a reader sees the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write_synced(temporary, data, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_npz(out: Path, arrays: dict, *, compressed: bool, replace: bool) -> None:
    """`arrays` as an .npz at `out`, written beside it and moved into place whole, so a kill
    leaves no half file; without `replace` the move refuses a file that appeared meanwhile
    (FileExistsError)."""
    import numpy as np

    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    save = np.savez_compressed if compressed else np.savez
    try:
        with named_errors(temporary), temporary.open("xb") as handle:
            save(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, out)
        else:  # a hard link fails where `out` exists, where a rename would replace it
            os.link(temporary, out)
        fsync_dir(out.parent)
    finally:
        temporary.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename or new entry in `folder` durable, not just the files' bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with named_errors(folder):
            os.fsync(fd)
    finally:
        os.close(fd)


def walk_files(folder: Path) -> Iterator[str]:
    """Relative posix names of every non-folder entry under `folder`, sorted."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for filename in sorted(filenames):
            yield Path(dirpath, filename).relative_to(folder).as_posix()


# --- owned folders ---------------------------------------------------------------

OWN_LOCK_TIMEOUT_S = 60.0  # a folder's own lock: only a sweeper touches it, briefly


@contextmanager
def owned_folder(folder: Path) -> Iterator[None]:
    """Hold `<folder>.lock` from before `folder` exists until after it is gone (renamed
    away or removed here), so `sweep_abandoned` knows a live owner from a dead one."""
    from filelock import FileLock  # here: its import (asyncio too) would slow `digits predict`

    with FileLock(f"{folder}.lock", timeout=OWN_LOCK_TIMEOUT_S) as lock:
        try:
            yield
        finally:
            # After a rename the folder is gone; otherwise nothing of it may remain.
            if folder.exists():
                shutil.rmtree(folder)
            # Unlinked while still held, never after: see Registry._clean_leftovers.
            Path(lock.lock_file).unlink(missing_ok=True)


def sweep_abandoned(parent: Path, pattern: re.Pattern, locked_only: bool = False) -> None:
    """Remove `parent`'s entries named wholly by `pattern` (and their `.lock`) whose owner
    died. `locked_only` for a folder the user shares (beside `fetch --dest`): there a name
    proves nothing, so only an entry with its `.lock` beside it, which `owned_folder` makes
    before the folder and removes after it, is ours."""
    for entry in list(parent.iterdir()):
        if entry.name.endswith(".lock"):
            owned = entry.with_suffix("")
            if pattern.fullmatch(owned.name) and not owned.exists():
                remove_abandoned(owned)
        elif pattern.fullmatch(entry.name) and (
            not locked_only or Path(f"{entry}.lock").exists()
        ):
            remove_abandoned(entry)


def remove_abandoned(folder: Path) -> None:
    """Remove a folder and its lock file unless its owner is still alive."""
    from filelock import FileLock, Timeout  # here, as in owned_folder

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
    sweep_abandoned(parent, re.compile(rf"{re.escape(prefix)}([0-9a-f]{{32}}|[a-z0-9_]{{8}})"))
