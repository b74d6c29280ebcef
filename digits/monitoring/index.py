"""The index behind `PredictionLog.correct`: which ids a log folder holds, caught up on
the segments' new bytes when asked, so a correction finds ids another process wrote.

The standard library only.
"""

from __future__ import annotations

from pathlib import Path

from digits.monitoring.records import (
    ANSWER_RE,
    HEAD_RE,
    PREDICTION,
    Correction,
    UnknownPrediction,
    complete_lines,
    parse_time,
    segment_files,
)


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
