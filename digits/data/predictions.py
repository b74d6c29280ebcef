"""The prediction log of `digits serve --log-dir DIR`: every image answered, and what people
said it really was.

Layout: DIR holds `prediction-log.json` (the marker that makes it a log) and segment files
`segment-<start ns>-<pid>-<hex>.jsonl`, each written by one process only (a uvicorn worker,
a thread pool of the service). A segment is JSON Lines, one record a line:

    {"kind": "prediction", "id", "time", "version", "ref", "digit", "probabilities": [10],
     "image": base64 of the 28x28 uint8 pixels}
    {"kind": "correction", "id", "time", "label"}

Crash safety: each `record` is one `os.write` of whole lines on an O_APPEND descriptor, so
a killed process leaves at most a torn last line in its own segment, which readers skip.
No fsync per answer (that would cost more than the answer): a killed process loses only
the request in flight; a machine crash may lose what the OS had not flushed yet.

Bounds: a writer starts a new segment past `LogLimits.segment_bytes`; whenever one does, it
deletes the oldest closed segments (of every process) while the folder holds more than
`LogLimits.max_bytes`. A segment in use is locked (flock, released by the kernel when its
process dies) and never deleted, so the folder holds at most `max_bytes` plus one open
segment per writing process.

Corrections are records too: `correct` looks the id up in an index of the folder's records
that catches up on the segments' new bytes, so it finds ids another process wrote.

numpy and the standard library only: the service, the CLI and the flows all read it.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np

from digits.config import IMAGE_SHAPE, NUM_CLASSES, LogLimits
from digits.errors import DataError

MARKER = "prediction-log.json"
FORMAT = {"format": "digits prediction log", "version": 1}
SEGMENT_RE = re.compile(r"segment-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
ID_RE = re.compile(r"[0-9a-f]{32}")
PREDICTION, CORRECTION = "prediction", "correction"
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# What the index needs of a line, read without parsing its ~1.4 KB of JSON (records are
# written with their keys in this order).
HEAD_RE = re.compile(
    rb'\{"kind": "(prediction|correction)", "id": "([0-9a-f]{32})", "time": "([^"]+)"'
)
ANSWER_RE = re.compile(rb'"(digit|label)": (\d)')
# Nine significant digits bring back the same float32 (finite: they are probabilities).
FLOATS = ", ".join(["%.9g"] * NUM_CLASSES)

log = logging.getLogger(__name__)


class UnknownPrediction(KeyError):
    """Feedback for an id the log does not hold (never written, or rotated away)."""

    def __str__(self) -> str:
        shown = repr(self.args[0])
        shown = shown if len(shown) <= 40 else f"{shown[:36]}...'"  # an echo, not a dump
        return f"no logged prediction has id {shown}"


@dataclass(frozen=True)
class Correction:
    """A person's label for a logged prediction."""

    id: str
    label: int  # what the digit really is, 0..9
    digit: int  # what the model answered
    time: datetime  # UTC, to the millisecond

    @property
    def confirmed(self) -> bool:
        """The person agreed with the model (a confirmation, not a correction)."""
        return self.label == self.digit


@dataclass(frozen=True)
class Logged:
    """One row per logged prediction, oldest first."""

    ids: np.ndarray  # (N,) str
    times: np.ndarray  # (N,) datetime64[ms], UTC
    versions: np.ndarray  # (N,) str, e.g. "v3"
    refs: np.ndarray  # (N,) str, e.g. "production"
    digits: np.ndarray  # (N,) int64, the answer given
    probabilities: np.ndarray  # (N, 10) float32
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64, the person's latest label, -1 where none

    def __len__(self) -> int:
        return len(self.ids)


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


def segment_files(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if SEGMENT_RE.fullmatch(entry.name)]


# --- records ------------------------------------------------------------------------


def check_rows(images: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, probabilities = np.asarray(images), np.asarray(probabilities, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images must be (N, 28, 28), got {images.shape}")
    if probabilities.shape != (len(images), NUM_CLASSES):
        raise ValueError(f"probabilities must be ({len(images)}, 10), got {probabilities.shape}")
    if images.dtype != np.uint8:  # ufuncs in place: np.clip's wrapper costs more than the work
        rounded = np.rint(images)
        np.maximum(rounded, 0, out=rounded)
        images = np.minimum(rounded, 255, out=rounded).astype(np.uint8)
    return np.ascontiguousarray(images), probabilities


def new_id() -> str:
    """32 random hex digits (as a uuid4's, without its bookkeeping): unique across processes."""
    return os.urandom(16).hex()


def prediction_lines(
    ids: list[str], stamp: str, version: str, ref: str, images: np.ndarray, scores: np.ndarray
) -> bytes:
    """The records' JSON lines, written by hand (json.dumps of the dict costs twice as much,
    in the answer's time): keys in HEAD_RE's order, strings escaped by json. The
    probabilities go with 9 significant digits, which read back as the same float32; the pixels
    as base64 (1 KB instead of ~3 KB of numbers)."""
    head = f'"time": "{stamp}", "version": {json.dumps(version)}, "ref": {json.dumps(ref)}'
    digits, rows = scores.argmax(axis=1).tolist(), scores.tolist()
    return b"".join(
        f'{{"kind": "{PREDICTION}", "id": "{id_}", {head}, "digit": {digit}, '
        f'"probabilities": [{FLOATS % tuple(row)}], "image": "'.encode()
        + base64.b64encode(image.tobytes()) + b'"}\n'
        for id_, digit, row, image in zip(ids, digits, rows, images)
    )


def correction_line(correction: Correction) -> str:
    return json.dumps({
        "kind": CORRECTION, "id": correction.id, "time": format_time(correction.time),
        "label": correction.label,
    }) + "\n"


def now() -> datetime:
    """UTC now, to the millisecond (what the log stores, so a read-back compares equal)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def stamp_now() -> str:
    """format_time(now()) at a fraction of the cost: it is in every answer's time."""
    milliseconds = time.time_ns() // 1_000_000
    seconds, fraction = divmod(milliseconds, 1000)
    return f"{second_text(seconds)}.{fraction:03d}Z"


@functools.lru_cache(maxsize=4)
def second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC to the millisecond, e.g. 2025-01-31T12:00:00.123Z (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The whole lines of `data` and how many bytes they take; a last line without its
    newline (torn by a kill, or still being written) is left for later."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


# --- the index behind `correct` -------------------------------------------------------


class Index:
    """Which ids the folder holds (with the digit answered) and their latest labels, caught
    up on the segments' new bytes when asked, so it sees other processes' records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[str, int] = {}  # segment name -> bytes indexed
        self._ids: dict[str, list[str]] = {}  # segment name -> prediction ids in it
        self._digits: dict[str, int] = {}  # id -> the digit answered
        self._labels: dict[str, Correction] = {}  # id -> its latest correction

    def find(self, id_: str) -> tuple[int, Correction | None]:
        """The digit answered for `id_` and its latest correction; UnknownPrediction."""
        self.catch_up()  # always: another process may have corrected it since
        if id_ not in self._digits:
            raise UnknownPrediction(id_)
        return self._digits[id_], self._labels.get(id_)

    def remember(self, correction: Correction) -> None:
        self._labels[correction.id] = correction

    def catch_up(self) -> None:
        names = {path.name for path in segment_files(self.folder)}
        for gone in set(self._offsets) - names:  # rotated away: its ids are unknown now
            for id_ in self._ids.pop(gone, []):
                self._digits.pop(id_, None)
                self._labels.pop(id_, None)
            del self._offsets[gone]
        for name in sorted(names):
            self._read_new(name)

    def _read_new(self, name: str) -> None:
        offset = self._offsets.setdefault(name, 0)
        try:
            with open(self.folder / name, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return
        lines, used = complete_lines(data)
        self._offsets[name] = offset + used
        for line in lines:
            self._index_line(name, line)

    def _index_line(self, segment: str, line: bytes) -> None:
        head, answer = HEAD_RE.match(line), ANSWER_RE.search(line)
        if head is None or answer is None:
            return  # not a record of ours; read_log names it
        kind, id_, stamp = (part.decode() for part in head.groups())
        value = int(answer.group(2))
        if kind == PREDICTION:
            self._digits[id_] = value
            self._ids.setdefault(segment, []).append(id_)
        elif id_ in self._digits:
            self._labels[id_] = Correction(id_, value, self._digits[id_], parse_time(stamp))


# --- reading --------------------------------------------------------------------------


def read_log(folder: Path, since: datetime | None = None) -> Logged:
    """Every prediction in the log at `folder` (at or after `since`, UTC if naive), oldest
    first, with each one's latest label. DataError if the folder does not exist or is not a
    prediction log, or a record in it is corrupt; a torn last line is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"prediction log {folder} does not exist")
    if not (folder / MARKER).is_file():
        raise DataError(f"{folder} is not a prediction log (no {MARKER})")
    cut = "" if since is None else format_time(
        since if since.tzinfo else since.replace(tzinfo=UTC))
    predictions: list[tuple] = []
    corrections: list[dict] = []
    for path in sorted(segment_files(folder)):
        for record in read_segment(path):
            if record["kind"] == CORRECTION:
                corrections.append(record)
            elif record["time"] >= cut:  # ISO UTC to the millisecond sorts as text
                predictions.append(compact(record))
    return to_rows(predictions, latest_labels(corrections))


def read_segment(path: Path) -> list[dict]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []  # pruned while we listed
    lines, used = complete_lines(data)
    if used < len(data):
        log.warning("%s: skipped a torn last line (%d bytes)", path, len(data) - used)
    return [parse_record(line, path, number) for number, line in enumerate(lines, 1)]


def parse_record(line: bytes, path: Path, number: int) -> dict:
    try:
        record = json.loads(line)
        if record["kind"] == PREDICTION:
            check_prediction(record)
        elif record["kind"] == CORRECTION:
            int(record["label"]), str(record["id"]), str(record["time"])
        else:
            raise ValueError(f"unknown kind {record['kind']!r}")
        return record
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}, line {number}: not a prediction log record ({error})") from None


def check_prediction(record: dict) -> None:
    if len(record["probabilities"]) != NUM_CLASSES:
        raise ValueError(f"{len(record['probabilities'])} probabilities, not {NUM_CLASSES}")
    if len(base64.b64decode(record["image"], validate=True)) != PIXELS:
        raise ValueError(f"the image is not {PIXELS} pixels")


def latest_labels(corrections: list[dict]) -> dict[str, int]:
    """id -> its latest label (by time; a tie goes to the later segment)."""
    ordered = sorted(corrections, key=lambda record: record["time"])  # ISO UTC sorts as text
    return {record["id"]: int(record["label"]) for record in ordered}


def compact(record: dict) -> tuple:
    """A prediction as (time, id, version, ref, digit, probabilities, pixels), its dict and
    base64 text dropped as it is read: a full log is 190,000 of them."""
    return (record["time"], record["id"], record["version"], record["ref"], record["digit"],
            record["probabilities"], base64.b64decode(record["image"]))


def to_rows(predictions: list[tuple], labels: dict[str, int]) -> Logged:
    predictions.sort(key=lambda row: row[0])  # by time; stable, so a process's order is kept
    n = len(predictions)
    times, ids, versions, refs, digits, scores, pixels = (
        zip(*predictions) if n else ([] for _ in range(7)))
    return Logged(
        ids=np.array(ids, dtype=str),
        times=np.array([stamp.rstrip("Z") for stamp in times], dtype="datetime64[ms]"),
        versions=np.array(versions, dtype=str),
        refs=np.array(refs, dtype=str),
        digits=np.array(digits, dtype=np.int64),
        probabilities=np.array(scores, dtype=np.float32).reshape(n, NUM_CLASSES),
        images=np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(n, *IMAGE_SHAPE).copy(),
        labels=np.array([labels.get(id_, -1) for id_ in ids], dtype=np.int64),
    )
