"""The suite's CPU-cost report (tests/helpers/cpu_cost.py): summed per file, costliest first."""

import json

from tests.helpers.cpu_cost import OUTSIDE, by_file, idle_at_the_end


def test_costs_are_summed_per_file_costliest_first_ties_by_name():
    lines = [json.dumps({"test": test, "cpu": cpu}) for test, cpu in [
        ("tests/a.py::one", 1.0), ("tests/b.py::one", 2.5), ("tests/a.py::two[x]", 0.5),
        ("tests/c.py::one", 1.5)]]
    assert by_file(lines) == [("tests/b.py", 2.5, 1), ("tests/a.py", 1.5, 2),
                              ("tests/c.py", 1.5, 1)]


def test_idle_time_is_counted_from_each_workers_last_test():
    lines = [json.dumps(record) for record in [
        {"test": "tests/a.py::one", "cpu": 1.0, "worker": "gw0", "ended": 100.0},
        {"test": "tests/b.py::one", "cpu": 1.0, "worker": "gw1", "ended": 130.5},
        {"test": "tests/a.py::two", "cpu": 1.0, "worker": "gw0", "ended": 110.0},
        {"test": OUTSIDE, "cpu": 9.0, "worker": "gw0", "ended": 140.0},  # session's end
        {"test": "tests/c.py::one", "cpu": 1.0}]]  # a line of an older plugin
    assert idle_at_the_end(lines) == {"gw0": 20.5, "gw1": 0.0}
