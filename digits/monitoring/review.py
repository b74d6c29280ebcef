"""`digits feedback review`: a person decides the suggestions awaiting review (labels sent
without a credential: the page's, anonymous clients'), one at a time, each image shown as
text art beside the model's answer. Accepted or relabelled, a suggestion becomes a trusted
label with the credential "review:NAME"; rejected, it is dismissed; skipped, it waits. Each
decision is written to the log as it is made (digits.monitoring.log), so quitting keeps them.

numpy and the standard library only.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.errors import DataError, UsageError
from digits.monitoring.log import PredictionLog
from digits.monitoring.reader import read_log
from digits.monitoring.records import SUGGESTION, LabelsFull
from digits.monitoring.tokens import check_name

SHADES = " ░▒▓█"  # no ink to full ink
REVIEW = "review"  # a reviewer's credential is "review:NAME"
KEYS = ("y", "n", "s", "q", *"0123456789")
PROMPT = "accept (y), reject (n), another digit (0-9), skip (s), quit (q)"
OUTCOMES = ("accepted", "relabelled", "rejected", "skipped")


@dataclass(frozen=True)
class Suggestion:
    """A suggestion awaiting review, with what the reviewer needs to judge it."""

    id: str
    image: np.ndarray  # (28, 28) uint8, as the model saw it
    answer: int  # the digit the model answered
    label: int  # the digit suggested
    probabilities: np.ndarray  # (10,) the model's
    time: str  # when it was answered, ISO 8601 UTC
    version: str  # the version that answered
    not_a_digit: bool  # the version flagged the answer: `answer` is only the closest digit

    def lines(self, number: int, total: int) -> list[str]:
        """What the reviewer sees: which one, the image, the answer and the suggestion."""
        heading = (f"suggestion {number} of {total}: answer {self.id[:12]} by {self.version} "
                   f"at {self.time}")
        scores = self.probabilities
        answered = (f"not a digit (closest: {self.answer}, {scores[self.answer]:.0%})"
                    if self.not_a_digit else f"{self.answer} ({scores[self.answer]:.0%})")
        verdicts = (f"the model answered {answered}; suggested: {self.label} (the model gave "
                    f"it {scores[self.label]:.0%})")
        return [heading, *image_art(self.image), verdicts]


def pending_suggestions(log_dir: Path, since: datetime | None = None) -> list[Suggestion]:
    """The suggestions of the log at `log_dir` that await review, for answers given since
    `since`, oldest first. DataError if the folder is not a log."""
    logged = read_log(log_dir, since)
    return [Suggestion(str(logged.ids[row]), logged.images[row], int(logged.digits[row]),
                       int(logged.labels[row]), logged.probabilities[row],
                       f"{np.datetime_as_string(logged.times[row], unit='ms')}Z",
                       str(logged.versions[row]), bool(logged.not_a_digit[row]))
            for row in np.flatnonzero(logged.sources == SUGGESTION)]


def image_art(image: np.ndarray) -> list[str]:
    """A 28x28 image as text in a frame: a shade of `SHADES` a pixel, two characters wide
    (a terminal's cell is about twice as tall as wide)."""
    levels = np.asarray(image, np.uint16) * len(SHADES) // 256
    width = 2 * levels.shape[1]
    rows = ["│" + "".join(SHADES[level] * 2 for level in row) + "│" for row in levels.tolist()]
    return ["┌" + "─" * width + "┐", *rows, "└" + "─" * width + "┘"]


def reviewer_credential(name: str | None) -> str:
    """"review:NAME" for the reviewer `name`, else $USER's; UsageError without either."""
    name = name or os.environ.get("USER")
    if not name:
        raise UsageError("who reviews? pass --reviewer NAME (or set USER)")
    return f"{REVIEW}:{check_name(name)}"


def decide(log: PredictionLog, suggestion: Suggestion, key: str, credential: str) -> str:
    """Record the reviewer's `key` (of KEYS, but q) for `suggestion`; its outcome (of
    OUTCOMES). DataError when the trusted labels awaiting export fill their room."""
    if key == "s":
        return "skipped"
    if key == "n":
        log.dismiss(suggestion.id, suggestion.label, credential)
        return "rejected"
    label = suggestion.label if key == "y" else int(key)
    try:
        log.correct(suggestion.id, label, credential)
    except LabelsFull as error:
        raise DataError(str(error)) from None
    return "accepted" if label == suggestion.label else "relabelled"


def summary_line(outcomes: Counter, total: int, credential: str) -> str:
    decided = sum(outcomes[name] for name in OUTCOMES if name != "skipped")
    counts = ", ".join(f"{name} {outcomes[name]}" for name in OUTCOMES)
    return (f"reviewed {sum(outcomes.values())} of {total} suggestions as {credential}: "
            f"{counts}; {total - decided} still pending")
