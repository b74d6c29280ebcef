"""What people said about the service's answers (`digits feedback`): counts from the
prediction log, and the batch of their labels.

A logged prediction with a person's label is a correction (the label differs from the
answer given) or a confirmation (it is the answer). Only trusted labels make a batch: those
sent with an operator's token or accepted in `digits feedback review`; a suggestion (the
page, anonymous clients) waits for a reviewer (digits.monitoring.records). `feedback_source`
reads the trusted labels from the log as a feedback batch for the checks, with the answer
each image was given, so they can measure label agreement on the confirmed rows only: the
corrections are the model's mistakes by construction (digits.checks.batch), and with the
credential that gave each label, which the stored batch keeps. That is the only way a batch
gets origin "feedback" (`digits feedback export --add`): the log proves it, a file cannot.
`export_feedback` writes the same rows to an .npz to look at; its `origin`, `confirmed` and
`credentials` members make `digits add` refuse it (digits.data.intake).

Which labelled rows a batch takes is decided in one place, `feedback_rows`.

numpy and the standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.config import DIGITS, MAX_INPUT_ROWS
from digits.data.intake import FEEDBACK, Source
from digits.errors import DataError, UsageError
from digits.files import sha256_bytes, write_npz
from digits.monitoring.reader import read_log
from digits.monitoring.records import DISMISSED, SUGGESTION, TRUSTED, Logged

# --- the summary ----------------------------------------------------------------------


@dataclass(frozen=True)
class DigitFeedback:
    """One answered digit: how often it was given, labelled, and the label agreed."""

    digit: int
    answered: int
    labelled: int
    agreed: int

    @property
    def agreement(self) -> float | None:
        """Share of people's labels for this answer that agree with it; None if none."""
        return self.agreed / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Summary:
    """The answers, the trusted labels (corrected and confirmed: what an export takes), and
    the suggestions pending review or dismissed. An answer the version flagged "not a
    digit" counts apart from the digits answered, with how many of them people labelled."""

    answered: int
    corrected: int
    confirmed: int
    pending: int
    dismissed: int
    digits: list[DigitFeedback]  # of the trusted labels, answers flagged not a digit left out
    since: datetime | None
    not_a_digit: int  # answers flagged
    not_a_digit_labelled: int  # of them, with a trusted label

    def as_dict(self) -> dict:
        digits = [{**asdict(d), "agreement": d.agreement} for d in self.digits]
        return {"answered": self.answered, "corrected": self.corrected,
                "confirmed": self.confirmed, "labelled": self.corrected + self.confirmed,
                "suggestions": {"pending": self.pending, "dismissed": self.dismissed},
                "not_a_digit": {"answered": self.not_a_digit,
                                "labelled": self.not_a_digit_labelled},
                "since": self.since.isoformat() if self.since else None, "digits": digits}

    def lines(self) -> list[str]:
        """The table `digits feedback` prints."""
        since = f" since {self.since:%Y-%m-%dT%H:%M:%SZ}" if self.since else ""
        counts = (f"answered {self.answered} ({self.not_a_digit} not a digit), corrected "
                  f"{self.corrected}, confirmed {self.confirmed}{since}")
        suggestions = (f"trusted labels {self.corrected + self.confirmed}, suggestions pending "
                       f"review {self.pending}, dismissed {self.dismissed}")
        lines = [counts, suggestions, "digit  answered  labelled  agreement"]
        for d in self.digits:
            agreement = "-" if d.agreement is None else f"{d.agreement:.2f}"
            lines.append(f"{d.digit:>5}  {d.answered:>8}  {d.labelled:>8}  {agreement:>9}")
        # A label of a flagged answer says which digit it was: no answer to agree with.
        lines.append(f"not a digit {self.not_a_digit:>3}  {self.not_a_digit_labelled:>8}  "
                     f"{'-':>9}")
        return lines


def summarize(logged: Logged, since: datetime | None = None) -> Summary:
    labelled = logged.sources == TRUSTED
    agree = labelled & (logged.labels == logged.digits)
    # A flagged answer's digit is only the closest one: the service did not answer it.
    answered = [(logged.digits == digit) & ~logged.not_a_digit for digit in DIGITS]
    per_digit = [DigitFeedback(digit, int(np.sum(given)), int(np.sum(labelled & given)),
                               int(np.sum(agree & given)))
                 for digit, given in zip(DIGITS, answered)]
    return Summary(len(logged), int(np.sum(labelled & ~agree)), int(np.sum(agree)),
                   int(np.sum(logged.sources == SUGGESTION)),
                   int(np.sum(logged.sources == DISMISSED)), per_digit, since,
                   int(np.sum(logged.not_a_digit)), int(np.sum(labelled & logged.not_a_digit)))


def feedback_summary(log_dir: Path, since: datetime | None = None) -> Summary:
    """The counts of the log at `log_dir` (DataError if it is none), since `since`."""
    return summarize(read_log(log_dir, since), since)


# --- the export -----------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What `digits feedback export` wrote."""

    path: Path
    corrected: int
    confirmed: int
    repeats: int  # rows dropped as byte-identical to an earlier one with the same label

    def line(self) -> str:
        dropped = f" ({self.repeats} repeats dropped)" if self.repeats else ""
        return (f"wrote {self.path}: {self.corrected + self.confirmed} images "
                f"({self.corrected} corrected, {self.confirmed} confirmed){dropped}")


def feedback_rows(logged: Logged) -> tuple[np.ndarray, int]:
    """Indices of the rows a batch takes: those with a trusted label (never a suggestion),
    the first of each (image, label) only, and how many repeats were dropped: the same image
    sent twice is one digit, not a duplicate that the batch's duplicate check should hold
    against it."""
    trusted = np.flatnonzero(logged.sources == TRUSTED)
    seen: dict[str, int] = {}
    for row in trusted:
        key = sha256_bytes(logged.images[row].tobytes(), bytes([logged.labels[row]]))
        seen.setdefault(key, int(row))
    kept = np.array(sorted(seen.values()), dtype=np.int64)
    return kept, len(trusted) - len(kept)


@dataclass(frozen=True)
class Labelled:
    """The rows of the log a feedback batch is made of."""

    images: np.ndarray  # (N, 28, 28) uint8, as the model saw them
    labels: np.ndarray  # (N,) int64, the latest trusted label
    answers: np.ndarray  # (N,) int64, the digit the service answered
    credentials: np.ndarray  # (N,) str, who gave each label: a token's name, "review:NAME"
    repeats: int  # rows dropped as byte-identical to an earlier one with the same label
    ids: list[str]  # every trusted answer read, repeats too: what a stored batch releases


def read_labelled(log_dir: Path, since: datetime | None = None,
                  max_rows: int = MAX_INPUT_ROWS) -> Labelled:
    """The trusted rows of the log at `log_dir` since `since`. DataError for no log, no
    trusted label in it, or more than `max_rows` (what `digits add` reads)."""
    logged = read_log(log_dir, since)
    rows, repeats = feedback_rows(logged)
    if not len(rows):
        window = f" since {since:%Y-%m-%dT%H:%M:%SZ}" if since else ""
        pending = int(np.sum(logged.sources == SUGGESTION))
        raise DataError(f"prediction log {log_dir}: no trusted corrections or confirmations"
                        f"{window} ({len(logged)} answered, {pending} suggestions awaiting "
                        "`digits feedback review`); nothing written")
    if len(rows) > max_rows:
        raise DataError(f"prediction log {log_dir}: {len(rows)} labelled images, over the "
                        f"limit of {max_rows} that `digits add` reads; narrow --since")
    return Labelled(logged.images[rows], logged.labels[rows], logged.digits[rows],
                    logged.credentials[rows], repeats,
                    logged.ids[logged.sources == TRUSTED].tolist())


def feedback_source(log_dir: Path, since: datetime | None = None,
                    max_rows: int = MAX_INPUT_ROWS) -> tuple[Source, list[str]]:
    """The trusted rows of the log as a feedback batch for the checks (origin "feedback"
    because they were read from the log here, never because a file said so), with the
    credential of each label, and the ids of the labelled answers it holds, which the log
    may let go once the batch is stored."""
    rows = read_labelled(log_dir, since, max_rows)
    return Source(str(log_dir), rows.images, rows.labels, [], FEEDBACK, rows.answers,
                  rows.credentials), rows.ids



def export_feedback(log_dir: Path, out: Path, since: datetime | None = None,
                    force: bool = False) -> Exported:
    """Write the trusted corrected and confirmed images of the log since `since` to `out`,
    to look at. A file is no batch (`digits add` refuses it), so the log keeps the labels until
    `export --add` stores them. UsageError for an `out` that is not an .npz or exists
    (unless `force`); DataError as `read_labelled`."""
    out = Path(out)
    check_out(out, force)
    rows = read_labelled(log_dir, since)
    confirmed = rows.labels == rows.answers
    write_batch(out, rows, confirmed, force)
    return Exported(out, int(np.sum(~confirmed)), int(np.sum(confirmed)), rows.repeats)


def check_out(out: Path, force: bool) -> None:
    # An .npz, as numpy reads it; an existing file is someone's work (an earlier export,
    # perhaps not yet read): only --force replaces it, and never a folder.
    if out.suffix.lower() != ".npz":
        raise UsageError(f"--out {out}: must end in .npz")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder")
    if (out.exists() or out.is_symlink()) and not force:
        raise UsageError(f"--out {out}: exists (--force replaces it)")


def write_batch(out: Path, rows: Labelled, confirmed: np.ndarray, force: bool) -> None:
    """Written beside `out` and moved into place whole, so a kill leaves no half batch;
    without `force` the move refuses a file that appeared meanwhile. `origin`, `confirmed`
    and `credentials` say what the rows are to a reader, and make `digits add` refuse the
    file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": rows.images.astype(np.uint8), "labels": rows.labels.astype(np.int64),
              "origin": np.array(FEEDBACK), "confirmed": confirmed.astype(bool),
              "credentials": rows.credentials.astype(str)}
    try:
        write_npz(out, arrays, compressed=True, replace=force)
    except FileExistsError:
        raise UsageError(f"--out {out}: exists (--force replaces it)") from None
