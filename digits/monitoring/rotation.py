"""What leaves the prediction log folder, and when (the format: digits.monitoring.records).

Segments rotate: whenever a writer starts a new one, the oldest closed segments (of every
process) are deleted while the segments hold more than `LogLimits.max_bytes`. Label files do
not: a label leaves the log only after `digits feedback export` exported it, which renames
each closed label file whose every label it exported to a segment name, and from then on it
rotates, oldest first, as the answers do. A file in use is locked (flock, released by the
kernel when its process dies) and is neither deleted nor renamed.

The standard library only.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Collection
from pathlib import Path

from digits.monitoring.records import HEAD_RE, LABELS, SEGMENT, label_files, segment_files


def prune(folder: Path, max_bytes: int) -> None:
    """Delete the oldest segments not in use while the folder holds more than `max_bytes`."""
    segments = sorted(segment_files(folder))
    sizes = {path: size_of(path) for path in segments}
    total = sum(sizes.values())
    for path in segments:
        if total <= max_bytes:
            return
        if delete_unless_in_use(path):
            total -= sizes[path]


def delete_unless_in_use(path: Path) -> bool:
    """Delete a segment unless its writer still holds it; True if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True  # another writer pruned it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def release_labels(folder: Path, exported: Collection[str]) -> int:
    """Let each closed label file whose every label is in `exported` (ids) rotate from now
    on, renamed a segment; how many were. One still written to, or holding a label not in
    `exported`, stays for a later export."""
    exported = set(exported)
    released = 0
    for path in sorted(label_files(folder)):
        try:
            with open(path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = {match.group(2).decode() for match in HEAD_RE.finditer(handle.read())}
                if held and held <= exported:  # an empty one may be a writer's, just made
                    path.rename(path.with_name(path.name.replace(LABELS, SEGMENT, 1)))
                    released += 1
        except (FileNotFoundError, BlockingIOError):  # released meanwhile, or in use
            continue
    return released
