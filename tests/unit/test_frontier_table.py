"""benchmarks/frontier.py's table: issue 30's columns (ECE, not-a-digit rates, the other
writers' sets) as means over the seeds that recorded them, blank for older rows."""

from __future__ import annotations

from benchmarks.frontier import table

OLD = {"candidate": "default", "overrides": {}, "seed": 1, "accuracy": 0.9958,
       "train_seconds": 600.0, "load": [1.0, 2.0], "cpu": "AMD EPYC"}
NEW = {**OLD, "seed": 2, "accuracy": 0.9950, "ece": 0.0012, "test_flagged": 0.006,
       "not_digits_flagged": 0.9, "not_digits_at_1pct": 0.92,
       "other_writers": {"fonts": 0.97, "mouse": 1.0}}


def cells(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in markdown.splitlines()[2:]]


def test_new_columns_average_the_runs_that_have_them():
    later = {**NEW, "seed": 3, "ece": 0.0014, "other_writers": {"fonts": 0.96}}
    [row] = cells(table([OLD, NEW, later]))
    assert row[:3] == ["default", "1, 2, 3", "0.9953 (0.9950-0.9958)"]
    assert row[3:9] == ["0.0013", "0.0060", "0.9000", "0.9200", "0.9650", "1.0000"]
    assert row[-1] == "AMD EPYC"


def test_rows_from_before_them_leave_the_columns_blank():
    [row] = cells(table([OLD]))
    assert row[3:9] == [""] * 6 and row[9] == "10.0 (10.0-10.0)"
