"""The prediction log's format: the folder, its segment files and their records (JSON
Lines), and the types the writer and the reader share.

Layout: a log folder holds `prediction-log.json` (the marker that makes it a log), segment
files `segment-<start ns>-<pid>-<hex>.jsonl` and label files `labels-<...>.jsonl` named
alike, each written by one process only (a uvicorn worker, a thread pool of the service).
Both are JSON Lines, one record a line:

    {"kind": "prediction", "id", "time", "version", "ref", "digit", "probabilities": [10],
     "image": base64 of the 28x28 uint8 pixels}
    {"kind": "correction", "id", "time", "label"}

Segments hold the answers and rotate (digits.monitoring.rotation). A label file holds
corrections, each after a copy of its answer's prediction line, and never rotates: once
every label in it is exported, it is renamed a segment and rotates as one. Logs written
before label files hold their corrections in the segments; readers take both.

numpy and the standard library only: the service, the CLI and the flows all read it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digits.config import IMAGE_SHAPE, NUM_CLASSES

MARKER = "prediction-log.json"
FORMAT = {"format": "digits prediction log", "version": 1}
SEGMENT, LABELS = "segment", "labels"  # the files' name prefixes
SEGMENT_RE = re.compile(r"segment-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
LABELS_RE = re.compile(r"labels-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
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


class UnknownPrediction(KeyError):
    """Feedback for an id the log does not hold (never written, or rotated away)."""

    def __str__(self) -> str:
        shown = repr(self.args[0])
        shown = shown if len(shown) <= 40 else f"{shown[:36]}...'"  # an echo, not a dump
        return f"no logged prediction has id {shown}"


class LabelsFull(Exception):
    """A label the log has no room for: those awaiting export fill LogLimits.label_bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the labels awaiting export fill their room in the prediction log ({limit} "
            "bytes): run `digits feedback export --add` to store them, then labels are taken again")


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


def segment_files(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if SEGMENT_RE.fullmatch(entry.name)]


def label_files(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if LABELS_RE.fullmatch(entry.name)]


def log_files(folder: Path) -> list[Path]:
    """The segments and label files: every file that holds records."""
    return [entry for entry in folder.iterdir()
            if SEGMENT_RE.fullmatch(entry.name) or LABELS_RE.fullmatch(entry.name)]


def file_name(prefix: str) -> str:
    """A new segment's or label file's name: unique across processes, oldest first by name."""
    return f"{prefix}-{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.jsonl"


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
