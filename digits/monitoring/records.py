"""The prediction log's format: the folder, its segment files and their records (JSON
Lines), and the types the writer and the reader share.

Layout: a log folder holds `prediction-log.json` (the marker that makes it a log), segment
files `segment-<start ns>-<pid>-<hex>.jsonl`, label files `labels-<...>.jsonl` and
suggestion files `suggestions-<...>.jsonl` named alike, each written by one process only (a
uvicorn worker, a thread pool of the service), and the operator's `tokens.json`
(digits.monitoring.tokens). The record files are JSON Lines, one record a line:

    {"kind": "prediction", "id", "time", "version", "ref", "digit", "probabilities": [10],
     "image": base64 of the 28x28 uint8 pixels}
    {"kind": "correction", "id", "time", "label", "source", "credential"}

A correction is a person's label for an answer, and its `source` says how far it is trusted:
"trusted" (sent with an operator's token, `credential` its name, or accepted in `digits
feedback review`, `credential` "review:NAME"), "suggestion" (no credential: the page and
anonymous clients; no `credential`), or "dismissed" (a reviewer, `credential` "review:NAME",
refused the suggestion of that label). Records written before sources have none and read as
suggestions: no label trains a model unless someone trusted gave or reviewed it.

Segments hold the answers and rotate (digits.monitoring.rotation). Label files hold trusted
labels and suggestion files suggestions and dismissals, each label after a copy of its
answer's prediction line; neither rotates until nothing in it is awaited (exported or
dismissed): then it is renamed a segment and rotates as one. Logs written before label files
hold their corrections in the segments; readers take both.

numpy and the standard library only: the service, the CLI and the flows all read it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digits.config import IMAGE_SHAPE, NUM_CLASSES

MARKER = "prediction-log.json"
FORMAT = {"format": "digits prediction log", "version": 1}
SEGMENT, LABELS, SUGGESTIONS = "segment", "labels", "suggestions"  # the files' name prefixes
SEGMENT_RE = re.compile(r"segment-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
LABELS_RE = re.compile(r"labels-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
SUGGESTIONS_RE = re.compile(r"suggestions-\d{20}-\d+-[0-9a-f]{8}\.jsonl")
ID_RE = re.compile(r"[0-9a-f]{32}")
PREDICTION, CORRECTION = "prediction", "correction"
TRUSTED, SUGGESTION, DISMISSED = "trusted", "suggestion", "dismissed"  # a correction's source
SOURCES = (TRUSTED, SUGGESTION, DISMISSED)
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
    """A label the log has no room for: the trusted labels awaiting export fill
    LogLimits.label_bytes, or the suggestions awaiting review `suggestion_bytes`."""

    def __init__(self, limit: int, suggestions: bool = False) -> None:
        if suggestions:
            super().__init__(
                f"the suggestions awaiting review fill their room in the prediction log ({limit} "
                "bytes): run `digits feedback review` (and `digits feedback export --add` for "
                "those accepted), then suggestions are taken again")
        else:
            super().__init__(
                f"the labels awaiting export fill their room in the prediction log ({limit} "
                "bytes): run `digits feedback export --add` to store them, then labels are "
                "taken again")


@dataclass(frozen=True)
class Correction:
    """A person's label for a logged prediction."""

    id: str
    label: int  # what the digit really is, 0..9
    digit: int  # what the model answered
    time: datetime  # UTC, to the millisecond
    source: str = SUGGESTION  # TRUSTED, SUGGESTION, or DISMISSED (the suggestion of `label`)
    credential: str | None = None  # who: a token's name or "review:NAME"; None: a suggestion

    @property
    def confirmed(self) -> bool:
        """The person agreed with the model (a confirmation, not a correction)."""
        return self.label == self.digit

    @property
    def trusted(self) -> bool:
        return self.source == TRUSTED


@dataclass(frozen=True)
class Logged:
    """One row per logged prediction, oldest first."""

    ids: np.ndarray  # (N,) str
    times: np.ndarray  # (N,) datetime64[ms], UTC
    versions: np.ndarray  # (N,) str, e.g. "v3"
    refs: np.ndarray  # (N,) str, e.g. "production"
    digits: np.ndarray  # (N,) int64, the answer given
    not_a_digit: np.ndarray  # (N,) bool, the answer flagged by the version's rule
    probabilities: np.ndarray  # (N, 10) float32
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64, the label where it stands (label_states), -1 where none
    sources: np.ndarray  # (N,) str: TRUSTED, SUGGESTION (pending review), DISMISSED or ""
    credentials: np.ndarray  # (N,) str: who gave a trusted label (or dismissed), else ""

    def __len__(self) -> int:
        return len(self.ids)


def segment_files(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if SEGMENT_RE.fullmatch(entry.name)]


def label_files(folder: Path) -> list[Path]:
    """The label and suggestion files: those kept until nothing in them is awaited."""
    return [entry for entry in folder.iterdir()
            if LABELS_RE.fullmatch(entry.name) or SUGGESTIONS_RE.fullmatch(entry.name)]


def log_files(folder: Path) -> list[Path]:
    """The segments, label and suggestion files: every file that holds records."""
    return [entry for entry in folder.iterdir() if SEGMENT_RE.fullmatch(entry.name)
            or LABELS_RE.fullmatch(entry.name) or SUGGESTIONS_RE.fullmatch(entry.name)]


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
    ids: list[str], stamp: str, version: str, ref: str, images: np.ndarray, scores: np.ndarray,
    not_a_digit: np.ndarray,
) -> bytes:
    """The records' JSON lines, written by hand (json.dumps of the dict costs twice as much,
    in the answer's time): keys in HEAD_RE's order, strings escaped by json. The
    probabilities go with 9 significant digits, which read back as the same float32; the pixels
    as base64 (1 KB instead of ~3 KB of numbers)."""
    head = f'"time": "{stamp}", "version": {json.dumps(version)}, "ref": {json.dumps(ref)}'
    digits, rows = scores.argmax(axis=1).tolist(), scores.tolist()
    flags = ["true" if flag else "false" for flag in not_a_digit.tolist()]
    return b"".join(
        f'{{"kind": "{PREDICTION}", "id": "{id_}", {head}, "digit": {digit}, '
        f'"not_a_digit": {flag}, "probabilities": [{FLOATS % tuple(row)}], "image": "'.encode()
        + base64.b64encode(image.tobytes()) + b'"}\n'
        for id_, digit, flag, row, image in zip(ids, digits, flags, rows, images)
    )


def correction_line(correction: Correction) -> str:
    record = {"kind": CORRECTION, "id": correction.id, "time": format_time(correction.time),
              "label": correction.label, "source": correction.source}
    if correction.credential is not None:
        record["credential"] = correction.credential
    return json.dumps(record) + "\n"


# --- where a labelled answer stands -----------------------------------------------------


def source_of(record: dict) -> str:
    return record.get("source", SUGGESTION)  # written before sources: a suggestion


def replaces(current: tuple[str, int] | None, source: str, label: int) -> bool:
    """Whether a suggestion or a dismissal (`source`, of `label`), later than the answer's
    current suggestion or dismissal (`current`: its source and label, None if none), takes
    its place: a suggestion always does; a dismissal only that of the suggestion it dismisses,
    so a suggestion of another digit made meanwhile stays pending."""
    return source == SUGGESTION or current == (SUGGESTION, label)


def label_states(records: Iterable[dict]) -> dict[str, dict]:
    """id -> the correction record that says where its answer stands, from correction
    records in any order: its latest trusted label, else its latest suggestion or that
    suggestion's dismissal (`replaces`). The records themselves, not copies."""
    trusted: dict[str, dict] = {}
    suggested: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["time"]):  # ISO UTC sorts as text; stable
        id_, source = record["id"], source_of(record)
        if source == TRUSTED:
            trusted[id_] = record
            continue
        current = suggested.get(id_)
        now = None if current is None else (source_of(current), current["label"])
        if replaces(now, source, record["label"]):
            suggested[id_] = record
    return suggested | trusted


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
