"""`--since`: the one reading of the window of the prediction log a command reads
(`digits feedback`, `digits drift`), and the window `digits drift` judges by default.

The standard library only: the command line imports it for its defaults.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from digits.errors import UsageError

DEFAULT_DRIFT_SINCE = "7d"  # `digits drift` and the daily deployment judge the last week

# A duration back from now: `m` is minutes (months have no fixed length).
DURATION_RE = re.compile(r"(\d{1,9})([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The moment `text` names, in UTC: a duration back from `now` (`90s`, `30m`, `12h`,
    `7d`, `2w`), or an ISO 8601 date or time (`2025-01-31`, `2025-01-31T12:00`, with `Z` or
    an offset; without one it is UTC). Anything else is a UsageError naming it."""
    now = now or datetime.now(UTC)
    duration = DURATION_RE.fullmatch(text.strip())
    if duration:
        amount, unit = duration.groups()
        try:
            return now - timedelta(**{UNITS[unit]: int(amount)})
        except OverflowError:
            raise UsageError(f"--since {text!r} reaches back before year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a duration (30m, 12h, 7d, 2w) nor an "
                         "ISO date or time (2025-01-31, 2025-01-31T12:00Z)") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
