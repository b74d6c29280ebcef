"""The writer of the prediction log (`digits serve --log-dir DIR`): every image answered,
and what people said it really was (the format: digits.monitoring.records).

Crash safety: each `record` is one `os.write` of whole lines on an O_APPEND descriptor, so
a killed process leaves at most a torn last line in its own segment, which readers skip.
No fsync per answer (that would cost more than the answer): a killed process loses only
the request in flight; a machine crash may lose what the OS had not flushed yet.

Bounds: a writer starts a new segment past `LogLimits.segment_bytes`; whenever one does, it
deletes the oldest closed segments (of every process) while the folder holds more than
`LogLimits.max_bytes`. A segment in use is locked (flock, released by the kernel when its
process dies) and never deleted, so the folder holds at most `max_bytes` plus one open
segment per writing process.

Corrections are records too: `correct` looks the id up in the folder's index
(digits.monitoring.index), so it finds ids another process wrote.

numpy and the standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from digits.config import NUM_CLASSES
from digits.errors import DataError, UsageError
from digits.monitoring.index import Index
from digits.monitoring.records import (
    FORMAT,
    ID_RE,
    MARKER,
    Correction,
    UnknownPrediction,
    check_rows,
    correction_line,
    new_id,
    now,
    prediction_lines,
    segment_files,
    stamp_now,
)


@dataclass(frozen=True)
class LogLimits:
    """Bounds of the prediction log (`digits serve --log-dir`): what PredictionLog keeps.

    A logged image takes about 1.4 KB (the 28x28 pixels, ten probabilities, ids and time),
    so the defaults keep the last ~190,000 answers in at most 256 MiB plus one open segment
    per writing process.
    """

    segment_bytes: int = 8 * 2**20  # a writer starts a new segment file past this size
    max_bytes: int = 256 * 2**20  # closed segments beyond this total go, the oldest first

    def __post_init__(self) -> None:
        if self.segment_bytes < 1:
            raise UsageError(f"segment_bytes {self.segment_bytes} must be at least 1")
        if self.max_bytes < self.segment_bytes:
            raise UsageError(
                f"max_bytes {self.max_bytes} must be at least segment_bytes {self.segment_bytes}"
            )


# --- writing ------------------------------------------------------------------------


class PredictionLog:
    """The writer: one per process; several processes (uvicorn workers) may share a folder.

    Thread-safe: the service records from its thread pool. A process forked after the log
    was made writes to a segment of its own (the first record after the fork opens it).
    """

    def __init__(self, folder: Path, limits: LogLimits = LogLimits()) -> None:
        self.folder = Path(folder)
        self.limits = limits
        make_log_folder(self.folder)
        self._lock = threading.Lock()  # the segment: held for an append, never for a read
        self._index_lock = threading.Lock()  # the index: a correction's catch-up reads files
        self._fd: int | None = None
        self._pid = 0  # the process that opened self._fd
        self._size = 0
        self._index = Index(self.folder)

    def record(
        self, version: str, ref: str, images: np.ndarray, probabilities: np.ndarray
    ) -> list[str]:
        """Log each image with its answer; the N new ids, in order. `images` (N, 28, 28)
        pixels 0..255 (stored rounded to uint8), `probabilities` (N, 10)."""
        pixels, scores = check_rows(images, probabilities)
        ids = [new_id() for _ in range(len(pixels))]
        self._append(prediction_lines(ids, stamp_now(), version, ref, pixels, scores))
        return ids

    def correct(self, id: str, label: int) -> Correction:
        """Record that prediction `id` was really `label`. UnknownPrediction for an id the
        folder does not hold; a repeat of the latest (id, label) writes nothing and returns
        the earlier Correction; a new label is recorded and the latest counts."""
        if type(label) is not int or not 0 <= label < NUM_CLASSES:  # bool is no label
            raise ValueError(f"label {label!r} must be an integer 0..{NUM_CLASSES - 1}")
        if not isinstance(id, str) or not ID_RE.fullmatch(id):
            raise UnknownPrediction(id)
        with self._index_lock:  # one correction at a time; answers go on being recorded
            digit, earlier = self._index.find(id)
            if earlier is not None and earlier.label == label:
                return earlier
            correction = Correction(id, label, digit, now())
            self._append(correction_line(correction).encode())
            self._index.remember(correction)
            return correction

    def close(self) -> None:
        with self._lock:
            self._close_segment()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- segments

    def _append(self, data: bytes) -> None:
        with self._lock:
            self._append_locked(data)

    def _append_locked(self, data: bytes) -> None:
        if self._fd is None or self._pid != os.getpid():
            self._open_segment()
        elif (os.fstat(self._fd).st_nlink == 0  # deleted by hand: bytes there would be lost
              or self._size and self._size + len(data) > self.limits.segment_bytes):
            self._close_segment()
            self._open_segment()
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._close_segment()  # a partial write may have torn a line: start afresh
            raise
        self._size += written
        if written != len(data):
            self._close_segment()
            raise OSError(f"short write to the prediction log in {self.folder}")

    def _open_segment(self) -> None:
        """A new segment of this process's own, locked while in use; then prune the folder."""
        self._fd, self._pid, self._size = None, os.getpid(), 0
        name = f"segment-{time.time_ns():020d}-{self._pid}-{os.urandom(4).hex()}.jsonl"
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._fd = fd
        prune(self.folder, self.limits.max_bytes)

    def _close_segment(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)  # releases the flock: the segment may now be pruned
        self._fd = None  # a forked child never closes its parent's descriptor's segment


def make_log_folder(folder: Path) -> None:
    """Create the log folder, or check that an existing one is a log or empty (rotation
    deletes files in it: it must not be a folder of other things)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MARKER).is_file():
        return
    if any(entry.name != MARKER and not entry.name.startswith(".") for entry in folder.iterdir()):
        raise DataError(
            f"{folder} is not a prediction log (no {MARKER}) and not empty: choose a new or "
            "empty folder for --log-dir"
        )
    temporary = folder / f".{MARKER}.{os.getpid()}.{os.urandom(4).hex()}"
    temporary.write_text(json.dumps(FORMAT) + "\n")
    os.replace(temporary, folder / MARKER)  # two processes starting at once write the same


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

