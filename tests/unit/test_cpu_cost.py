"""The suite's CPU-cost report (tests/helpers/cpu_cost.py): summed per file, costliest first."""

import json

from tests.helpers.cpu_cost import by_file


def test_costs_are_summed_per_file_costliest_first_ties_by_name():
    lines = [json.dumps({"test": test, "cpu": cpu}) for test, cpu in [
        ("tests/a.py::one", 1.0), ("tests/b.py::one", 2.5), ("tests/a.py::two[x]", 0.5),
        ("tests/c.py::one", 1.5)]]
    assert by_file(lines) == [("tests/b.py", 2.5, 1), ("tests/a.py", 1.5, 2),
                              ("tests/c.py", 1.5, 1)]
