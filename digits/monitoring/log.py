"""The writer of the prediction log (`digits serve --log-dir DIR`): every image answered,
and what people said it really was (the format: digits.monitoring.records).

Crash safety: each `record` is one `os.write` of whole lines on an O_APPEND descriptor, so
a killed process leaves at most a torn last line in its own file, which readers skip.
No fsync per answer (that would cost more than the answer): a killed process loses only
the request in flight; a machine crash may lose what the OS had not flushed yet.

Bounds (digits.monitoring.rotation): a writer starts a new segment past
`LogLimits.segment_bytes`, and then deletes the oldest closed segments while they hold more
than `LogLimits.max_bytes`. Labels are kept apart, trusted ones in label files and
suggestions in suggestion files, which rotate only once nothing in them is awaited: the
folder holds at most `max_bytes` of answers plus `label_bytes` of trusted labels awaiting
export and `suggestion_bytes` of suggestions awaiting review (two rooms, so that anonymous
clients cannot fill the trusted labellers'), plus one open file of each kind per writing
process.

Corrections are records too: `correct` looks the id up in the folder's index
(digits.monitoring.index), so it finds ids another process wrote, and writes the answer's
prediction line again beside the label, so that the label keeps its image whatever rotates.
Who gave a label is its credential (a token's name, or "review:NAME"); a label without one
is a suggestion (digits.monitoring.records).

numpy and the standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from digits.config import NUM_CLASSES
from digits.errors import DataError, UsageError
from digits.monitoring.index import Index
from digits.monitoring.records import (
    DISMISSED,
    FORMAT,
    ID_RE,
    LABELS,
    LABELS_RE,
    MARKER,
    SEGMENT,
    SUGGESTION,
    SUGGESTIONS,
    SUGGESTIONS_RE,
    TRUSTED,
    Correction,
    LabelsFull,
    UnknownPrediction,
    check_rows,
    correction_line,
    file_name,
    new_id,
    now,
    prediction_lines,
    stamp_now,
)
from digits.monitoring.rotation import prune


@dataclass(frozen=True)
class LogLimits:
    """Bounds of the prediction log (`digits serve --log-dir`): what PredictionLog keeps.

    A logged image takes about 1.4 KB (the 28x28 pixels, ten probabilities, ids and time),
    so the defaults keep the last ~190,000 answers in at most 256 MiB plus one open segment
    per writing process. A label takes about 1.5 KB (its answer's copy): `label_bytes` holds
    ~45,000 trusted labels awaiting export, more than people label between exports, and
    `suggestion_bytes` ~11,000 suggestions awaiting review, more than a person reviews at a
    sitting; past either a new label of its kind is refused (LabelsFull), never an older one
    dropped.
    """

    segment_bytes: int = 8 * 2**20  # a writer starts a new segment file past this size
    max_bytes: int = 256 * 2**20  # closed segments beyond this total go, the oldest first
    label_bytes: int = 64 * 2**20  # label files awaiting export hold at most this
    suggestion_bytes: int = 16 * 2**20  # suggestion files awaiting review hold at most this

    def __post_init__(self) -> None:
        if self.segment_bytes < 1:
            raise UsageError(f"segment_bytes {self.segment_bytes} must be at least 1")
        if self.max_bytes < self.segment_bytes:
            raise UsageError(
                f"max_bytes {self.max_bytes} must be at least segment_bytes {self.segment_bytes}"
            )
        for name in ("label_bytes", "suggestion_bytes"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} {getattr(self, name)} must be at least 1")


# --- writing ------------------------------------------------------------------------


class PredictionLog:
    """The writer: one per process; several processes (uvicorn workers) may share a folder.

    Thread-safe: the service records from its thread pool. A process forked after the log
    was made writes to files of its own (the first record after the fork opens them).
    """

    def __init__(self, folder: Path, limits: LogLimits = LogLimits()) -> None:
        self.folder = Path(folder)
        self.limits = limits
        make_log_folder(self.folder)
        self._lock = threading.Lock()  # the files: held for an append, never for a read
        self._index_lock = threading.Lock()  # the index: a correction's catch-up reads files
        self._segment = OwnFile(self.folder, SEGMENT)
        self._labels = OwnFile(self.folder, LABELS)
        self._suggestions = OwnFile(self.folder, SUGGESTIONS)
        self._index = Index(self.folder)

    def record(
        self, version: str, ref: str, images: np.ndarray, probabilities: np.ndarray,
        not_a_digit: np.ndarray | None = None,
    ) -> list[str]:
        """Log each image with its answer; the N new ids, in order. `images` (N, 28, 28)
        pixels 0..255 (stored rounded to uint8), `probabilities` (N, 10), `not_a_digit` (N,)
        the version's flags (Predictor.not_a_digit; None: none flagged)."""
        pixels, scores = check_rows(images, probabilities)
        flagged = np.zeros(len(pixels), bool) if not_a_digit is None else np.asarray(not_a_digit)
        if flagged.shape != (len(pixels),):
            raise ValueError(f"not_a_digit must be ({len(pixels)},), got {flagged.shape}")
        ids = [new_id() for _ in range(len(pixels))]
        data = prediction_lines(ids, stamp_now(), version, ref, pixels, scores, flagged)
        with self._lock:
            if self._segment.append(data, self.limits.segment_bytes):
                self._labels.close()  # closed, they can be released once settled
                self._suggestions.close()
                prune(self.folder, self.limits.max_bytes)
        return ids

    def correct(self, id: str, label: int, credential: str | None = None) -> Correction:
        """Record that prediction `id` was really `label`: a trusted label given by
        `credential` (a token's name, "review:NAME"), or without one a suggestion.
        UnknownPrediction for an id the folder does not hold. A repeat writes nothing and
        returns the earlier Correction: the same trusted label by the same credential, or a
        suggestion of the label last suggested (dismissed, it stays dismissed); otherwise
        the label is recorded and the latest counts. LabelsFull when the trusted labels
        awaiting export fill `label_bytes`, or the suggestions awaiting review
        `suggestion_bytes`."""
        if type(label) is not int or not 0 <= label < NUM_CLASSES:  # bool is no label
            raise ValueError(f"label {label!r} must be an integer 0..{NUM_CLASSES - 1}")
        check_id(id)
        if credential is not None and (not isinstance(credential, str) or not credential):
            raise ValueError(f"credential {credential!r} must be a name")
        with self._index_lock:  # one correction at a time; answers go on being recorded
            digit, trusted, suggested = self._index.find(id)
            earlier = suggested if credential is None else trusted
            if (earlier is not None and earlier.label == label
                    and (credential is None or earlier.credential == credential)):
                return earlier
            source = SUGGESTION if credential is None else TRUSTED
            correction = Correction(id, label, digit, now(), source, credential)
            data = self._index.prediction_line(id) + correction_line(correction).encode()
            own, files, limit = ((self._labels, LABELS_RE, self.limits.label_bytes)
                                 if credential is not None else
                                 (self._suggestions, SUGGESTIONS_RE, self.limits.suggestion_bytes))
            if self._index.bytes_of(files) + len(data) > limit:
                raise LabelsFull(limit, suggestions=credential is None)
            with self._lock:
                own.append(data, self.limits.segment_bytes)
            self._index.take(correction)
            return correction

    def dismiss(self, id: str, label: int, credential: str) -> Correction:
        """Record that `credential` (a reviewer) refused the suggestion that prediction `id`
        was `label`; a later suggestion of another digit stays pending. UnknownPrediction for
        an id the folder does not hold. No room is checked: a dismissal (~150 bytes, no copy
        of the answer) lets its suggestion leave the log."""
        check_id(id)
        with self._index_lock:
            digit, _, _ = self._index.find(id)
            dismissal = Correction(id, label, digit, now(), DISMISSED, credential)
            with self._lock:
                self._suggestions.append(correction_line(dismissal).encode(),
                                         self.limits.segment_bytes)
            self._index.take(dismissal)
            return dismissal

    def close(self) -> None:
        with self._lock:
            self._segment.close()
            self._labels.close()
            self._suggestions.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_id(id: str) -> None:
    if not isinstance(id, str) or not ID_RE.fullmatch(id):
        raise UnknownPrediction(id)


class OwnFile:
    """The segment, label or suggestion file this process appends to, locked while open (flock, shared)
    so that no other process deletes or releases it; a new one past `limit` bytes."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix
        self.fd: int | None = None
        self.pid = 0  # the process that opened self.fd
        self.size = 0

    def append(self, data: bytes, limit: int) -> bool:
        """Write `data` whole; True if it went to a new file."""
        opened = False
        if (self.fd is None or self.pid != os.getpid()
                or os.fstat(self.fd).st_nlink == 0  # deleted by hand: bytes there would be lost
                or self.size and self.size + len(data) > limit):
            self.close()
            self.open()
            opened = True
        try:
            written = os.write(self.fd, data)
        except OSError:
            self.close()  # a partial write may have torn a line: start afresh
            raise
        self.size += written
        if written != len(data):
            self.close()
            raise OSError(f"short write to the prediction log in {self.folder}")
        return opened

    def open(self) -> None:
        path = self.folder / file_name(self.prefix)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self.fd, self.pid, self.size = fd, os.getpid(), 0

    def close(self) -> None:
        if self.fd is not None and self.pid == os.getpid():
            os.close(self.fd)  # releases the flock: the file may now be pruned or released
        self.fd = None  # a forked child never closes its parent's descriptor's file


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
