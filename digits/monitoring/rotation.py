"""What leaves the prediction log folder, and when (the format: digits.monitoring.records).

Segments rotate: whenever a writer starts a new one, the oldest closed segments (of every
process) are deleted while the segments hold more than `LogLimits.max_bytes`. Label and
suggestion files do not: a file leaves the log only once nothing in it is awaited, which
`release_labels` decides after `digits feedback export --add` stored a batch and after `digits
feedback review`: it renames each such closed file to a segment name, and from then on it
rotates, oldest first, as the answers do. A file in use is locked (flock, released by the
kernel when its process dies) and is neither deleted nor renamed.

The standard library and the format's helpers only.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from digits.monitoring.records import (
    CORRECTION,
    DISMISSED,
    HEAD_RE,
    SEGMENT,
    SUGGESTION,
    TRUSTED,
    complete_lines,
    label_files,
    label_states,
    segment_files,
    source_of,
)


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


# --- releasing labels -------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A label or suggestion file as read for release."""

    records: list[dict]  # its correction records
    closed: bool  # locked here: no writer appends to it, and it reads whole

    @property
    def ids(self) -> set[str]:
        return {record["id"] for record in self.records}


def release_labels(folder: Path, exported: Collection[str] = ()) -> int:
    """Let each closed label or suggestion file rotate from now on, renamed a segment, once
    nothing in it is awaited; how many were. A record is awaited while it says where its
    answer stands (records.label_states) and that answer waits for something: a trusted
    label whose id is not in `exported` (the ids of the labels a stored batch holds), or a
    pending suggestion. Dismissals and superseded records (an earlier label, a suggestion a
    reviewer accepted or relabelled) await nothing. A file also stays while its release would
    revive a record kept elsewhere (`without_revivals`)."""
    exported = set(exported)
    with ExitStack() as stack:
        files = read_held(folder, stack)
        now = label_states(chain.from_iterable(held.records for held in files.values()))
        free = {path for path, held in files.items() if held.closed and held.records
                and not any(awaited(record, now, exported) for record in held.records)}
        free = without_revivals(files, free, now)
        for path in sorted(free):  # under our lock: no writer has it open
            path.rename(path.with_name(f"{SEGMENT}-{path.name.split('-', 1)[1]}"))
    return len(free)


def read_held(folder: Path, stack: ExitStack) -> dict[Path, Held]:
    """Every label and suggestion file, the closed ones locked (for the life of `stack`)."""
    files = {}
    for path in sorted(label_files(folder)):
        try:
            handle = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (the stack closes it)
        except FileNotFoundError:
            continue  # released or pruned meanwhile
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            closed = True
        except BlockingIOError:
            closed = False  # its writer appends to it still
        lines, _ = complete_lines(handle.read())
        try:
            records = [json.loads(line) for line in lines
                       if (head := HEAD_RE.match(line)) and head.group(1).decode() == CORRECTION]
            if not all({"id", "time", "label"} <= record.keys() for record in records):
                raise ValueError("a correction without its id, time or label")
        except ValueError:  # not ours to judge (read_log names the line): kept for a person
            records, closed = [], False
        files[path] = Held(records, closed)
    return files


def awaited(record: dict, now: dict[str, dict], exported: set[str]) -> bool:
    if now[record["id"]] is not record:
        return False  # superseded: another record says where its answer stands
    source = source_of(record)
    return source == SUGGESTION or (source == TRUSTED and record["id"] not in exported)


def without_revivals(files: dict[Path, Held], free: set[Path],
                     now: dict[str, dict]) -> set[Path]:
    """`free` less each file whose release would let an older record kept in another file
    say where its answer stands again (a dismissed suggestion pending anew, an exported
    answer's earlier label exported again): it waits until that file can go with it."""
    while True:
        kept = label_states(chain.from_iterable(
            held.records for path, held in files.items() if path not in free))
        revived = {id_ for id_, record in kept.items()
                   if record is not now[id_] and source_of(record) != DISMISSED}
        still = {path for path in free if not revived & files[path].ids}
        if still == free:
            return free
        free = still
