"""The index behind `PredictionLog.correct`: which ids a log folder holds, caught up on
the files' new bytes when asked, so a correction finds ids another process wrote.

The standard library only.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path

from digits.monitoring.records import (
    ANSWER_RE,
    HEAD_RE,
    PREDICTION,
    Correction,
    UnknownPrediction,
    complete_lines,
    log_files,
    parse_time,
    replaces,
    source_of,
)


class Index:
    """Which ids the folder holds (with the digit answered) and where their labels stand
    (digits.monitoring.records), caught up on the files' new bytes when asked, so it sees
    other processes' records. An id may be in several files: its segment, and the copies in
    label and suggestion files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[str, int] = {}  # file name -> bytes indexed
        self._ids: dict[str, list[str]] = {}  # file name -> prediction ids in it
        self._digits: dict[str, int] = {}  # id -> the digit answered
        self._trusted: dict[str, Correction] = {}  # id -> its latest trusted label
        self._suggested: dict[str, Correction] = {}  # id -> its suggestion, or its dismissal

    def find(self, id_: str) -> tuple[int, Correction | None, Correction | None]:
        """The digit answered for `id_`, its latest trusted label and its latest suggestion
        (or that suggestion's dismissal); UnknownPrediction."""
        self.catch_up()  # always: another process may have labelled it since
        if id_ not in self._digits:
            raise UnknownPrediction(id_)
        return self._digits[id_], self._trusted.get(id_), self._suggested.get(id_)

    def prediction_line(self, id_: str) -> bytes:
        """The prediction record of `id_`, as written (found by `find` just before);
        UnknownPrediction if its files rotated away meanwhile. Reads one file."""
        for name in sorted(self._ids, reverse=True):  # label files, the copies, go last
            if id_ in self._ids[name]:
                try:
                    data = (self.folder / name).read_bytes()
                except FileNotFoundError:
                    continue
                start = data.find(b'{"kind": "%s", "id": "%s"' % (PREDICTION.encode(),
                                                                  id_.encode()))
                if start >= 0:
                    return data[start:data.index(b"\n", start) + 1]
        raise UnknownPrediction(id_)

    def bytes_of(self, files: re.Pattern) -> int:
        """The bytes of the files named by `files` (label or suggestion files: what awaits
        export or review), as of the last catch-up."""
        return sum(size for name, size in self._offsets.items() if files.fullmatch(name))

    def take(self, correction: Correction) -> None:
        """Count `correction` if it says where its answer stands now: the latest trusted
        label, or a suggestion or dismissal that `replaces` the answer's current one."""
        kept = self._trusted if correction.trusted else self._suggested
        earlier = kept.get(correction.id)
        if earlier is not None and correction.time < earlier.time:
            return  # a file read again may be older
        if correction.trusted or replaces(
                None if earlier is None else (earlier.source, earlier.label),
                correction.source, correction.label):
            kept[correction.id] = correction

    def catch_up(self) -> None:
        names = {path.name for path in log_files(self.folder)}
        for name in sorted(names):
            self._read_new(name)
        gone = set(self._offsets) - names
        if gone:
            self._forget(gone)

    def _forget(self, gone: set[str]) -> None:
        """Rotated away (or a label file renamed a segment, read again under its new name):
        its ids are unknown now, unless another file holds them."""
        dropped = set(chain.from_iterable(self._ids.pop(name, []) for name in gone))
        for name in gone:
            del self._offsets[name]
        dropped -= set(chain.from_iterable(self._ids.values()))
        for id_ in dropped:
            self._digits.pop(id_, None)
            self._trusted.pop(id_, None)
            self._suggested.pop(id_, None)

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

    def _index_line(self, name: str, line: bytes) -> None:
        head, answer = HEAD_RE.match(line), ANSWER_RE.search(line)
        if head is None or answer is None:
            return  # not a record of ours; read_log names it
        kind, id_, stamp = (part.decode() for part in head.groups())
        value = int(answer.group(2))
        if kind == PREDICTION:
            self._digits[id_] = value
            self._ids.setdefault(name, []).append(id_)
        elif id_ in self._digits:
            try:  # a short line: parsed whole for its source and credential
                record = json.loads(line)
            except ValueError:
                return
            self.take(Correction(id_, value, self._digits[id_], parse_time(stamp),
                                 source_of(record), record.get("credential")))
