"""benchmarks/frontier.py's issue-30 scores of a run (not-a-digit rates, the other writers'
sets, where built) and its table's columns: means over the seeds that recorded them,
blank for older rows."""

from __future__ import annotations

from benchmarks.frontier import table
from digits.model.not_a_digit import SPREAD

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


def test_a_run_is_scored_on_the_sets_that_have_been_built(tmp_path, monkeypatch):
    import numpy as np

    import benchmarks.frontier as frontier

    sets = tmp_path / "other-writers"
    sets.mkdir()
    np.savez(sets / "fonts.npz", images=np.full((4, 28, 28), 9, np.uint8), labels=[9, 9, 9, 1])
    np.savez(tmp_path / "not-a-digit.npz", images=np.zeros((4, 28, 28), np.uint8))
    monkeypatch.setattr(frontier, "OTHER_WRITERS", sets)
    monkeypatch.setattr(frontier, "NOT_DIGITS", tmp_path / "not-a-digit.npz")

    def answer(images):  # a 9 at 0.9 for inked images, a flat 0.1 for blank ones
        inked = images.reshape(len(images), -1).max(axis=1) > 0
        return np.where(inked[:, None], np.eye(10)[9] * 0.8 + 0.02, 0.1)

    test = np.tile(np.eye(10)[9] * 0.8 + 0.02, (100, 1))
    test[0] = 0.1  # one test digit under the rule
    rule = {"rule": SPREAD, "threshold": 1.0}  # a flat answer's spread is 0, the 9's 3.3
    rates = frontier.not_a_digit_rates(answer, test, rule)
    assert rates == {"test_flagged": 0.01, "not_digits_flagged": 1.0, "not_digits_at_1pct": 1.0}
    assert frontier.other_writers(answer) == {"fonts": 0.75}
    monkeypatch.setattr(frontier, "NOT_DIGITS", tmp_path / "missing.npz")
    assert set(frontier.not_a_digit_rates(answer, test, rule)) == {"test_flagged"}
