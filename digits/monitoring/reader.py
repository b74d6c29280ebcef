"""Reading the prediction log (digits.monitoring.records) as arrays: every prediction,
oldest first, with where its label stands (trusted, a suggestion, dismissed), from the
segments and the label and suggestion files.

numpy and the standard library only.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.errors import DataError
from digits.monitoring.records import (
    CORRECTION,
    MARKER,
    PIXELS,
    PREDICTION,
    SOURCES,
    TRUSTED,
    Logged,
    complete_lines,
    format_time,
    label_files,
    label_states,
    segment_files,
    source_of,
)

log = logging.getLogger(__name__)


def read_log(folder: Path, since: datetime | None = None) -> Logged:
    """Every prediction in the log at `folder` (at or after `since`, UTC if naive), oldest
    first, with where its label stands (`label_states`). DataError if the folder does not exist or is not a
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
    seen: set[str] = set()  # a labelled answer's prediction is in a label file too
    # Segments first: an answer's own record keeps its place among those of its request
    # (they share a time); a label file's copy stands in only for one rotated away.
    for path in sorted(segment_files(folder)) + sorted(label_files(folder)):
        for record in read_segment(path):
            if record["kind"] == CORRECTION:
                corrections.append(record)
            elif record["time"] >= cut and record["id"] not in seen:  # ISO UTC sorts as text
                seen.add(record["id"])
                predictions.append(compact(record))
    return to_rows(predictions, label_states(corrections))


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
            check_correction(record)
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
    if not isinstance(record.get("not_a_digit", False), bool):
        raise ValueError(f"not_a_digit {record['not_a_digit']!r} is not true or false")


def check_correction(record: dict) -> None:
    int(record["label"]), str(record["id"]), str(record["time"])
    if source_of(record) not in SOURCES:
        raise ValueError(f"unknown source {record['source']!r}")
    if source_of(record) == TRUSTED and not isinstance(record.get("credential"), str):
        raise ValueError("a trusted label without its credential")


def compact(record: dict) -> tuple:
    """A prediction as (time, id, version, ref, digit, probabilities, pixels, not_a_digit),
    its dict and base64 text dropped as it is read: a full log is 190,000 of them. Records
    written before the not-a-digit rule have no flag: nothing was flagged then."""
    return (record["time"], record["id"], record["version"], record["ref"], record["digit"],
            record["probabilities"], base64.b64decode(record["image"]),
            record.get("not_a_digit", False))


def to_rows(predictions: list[tuple], states: dict[str, dict]) -> Logged:
    predictions.sort(key=lambda row: row[0])  # by time; stable, so a process's order is kept
    n = len(predictions)
    times, ids, versions, refs, digits, scores, pixels, flags = (
        zip(*predictions) if n else ([] for _ in range(8)))
    return Logged(
        ids=np.array(ids, dtype=str),
        times=np.array([stamp.rstrip("Z") for stamp in times], dtype="datetime64[ms]"),
        versions=np.array(versions, dtype=str),
        refs=np.array(refs, dtype=str),
        digits=np.array(digits, dtype=np.int64),
        not_a_digit=np.array(flags, dtype=bool).reshape(n),
        probabilities=np.array(scores, dtype=np.float32).reshape(n, NUM_CLASSES),
        images=np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(n, *IMAGE_SHAPE).copy(),
        labels=np.array([int(states[id_]["label"]) if id_ in states else -1 for id_ in ids],
                        dtype=np.int64),
        sources=np.array([source_of(states[id_]) if id_ in states else "" for id_ in ids],
                         dtype=str).reshape(n),
        credentials=np.array([states.get(id_, {}).get("credential") or "" for id_ in ids],
                             dtype=str).reshape(n),
    )
