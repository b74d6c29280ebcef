"""`--since` (digits.monitoring.since): durations back from now and ISO dates, in UTC."""

from datetime import UTC, datetime, timedelta

import pytest

from digits.errors import UsageError
from digits.monitoring.since import parse_since

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("7d", NOW - timedelta(days=7)),
    ("12h", NOW - timedelta(hours=12)),
    ("30m", NOW - timedelta(minutes=30)),  # minutes, not months
    ("90s", NOW - timedelta(seconds=90)),
    ("2w", NOW - timedelta(weeks=2)),
    ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
    ("2025-01-31T08:30", datetime(2025, 1, 31, 8, 30, tzinfo=UTC)),  # naive: UTC
    ("2025-01-31T08:30Z", datetime(2025, 1, 31, 8, 30, tzinfo=UTC)),
    ("2025-01-31T10:30+02:00", datetime(2025, 1, 31, 8, 30, tzinfo=UTC)),
])
def test_since_reads_durations_and_iso_dates_as_utc(text, expected):
    moment = parse_since(text, now=NOW)
    assert moment == expected
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["7", "7 days", "-7d", "7y", "1.5h", "yesterday", "",
                                  "2025-13-01", "999999999w"])
def test_since_refuses_anything_else_as_a_usage_error(text):
    with pytest.raises(UsageError, match="--since") as error:
        parse_since(text, now=NOW)
    assert error.value.exit_code == 2
