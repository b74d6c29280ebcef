"""CPU-seconds per test file, for deciding what to cut from `make test` (issue 27).

On two cores `make test` is CPU-bound: its wall time is about its CPU-seconds over two,
so what a file costs is its CPU time, which the load beside it barely changes (its wall
time does). Opt in with the plugin and a file to write:

    DIGITS_CPU_COST=/tmp/cost.jsonl make test ARGS="-p tests.helpers.cpu_cost"
    python -m tests.helpers.cpu_cost /tmp/cost.jsonl     # the files, costliest first

Each test's cost is the user + system time of its worker and of the children the worker
waited for (subprocesses, servers a fixture stopped) between the test's start and finish;
a module fixture's setup and teardown fall to the tests that ran them, and a child no one
waited for falls to the test during which Python's subprocess module reaps it (a later
one): trust the files' sums over single tests. The start-up of each process (imports,
collection) is its own line. Each line also names the worker and when the test ended, so
the report says how long each worker sat idle before the last one finished.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

SETTING = "DIGITS_CPU_COST"


def cpu_seconds() -> float:
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


OUTSIDE = "(start-up, collection, session fixtures)"
counted = [0.0]  # this process's CPU-seconds written so far, for what no test was charged


def record(test: str, cpu: float) -> None:
    """One line per test: its CPU-seconds, and the worker and time it ended on (when each
    worker fell idle: the wall time a suite's last file adds alone)."""
    path = os.environ.get(SETTING)
    if path:
        line = {"test": test, "cpu": round(cpu, 2),
                "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                "ended": round(time.time(), 1)}
        with open(path, "a", encoding="utf-8") as out:  # one short line: appends interleave whole
            out.write(json.dumps(line) + "\n")
        counted[0] += cpu


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    start = cpu_seconds()
    yield
    record(item.nodeid, cpu_seconds() - start)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if getattr(session.config.option, "numprocesses", None) and not os.environ.get(
            "PYTEST_XDIST_WORKER"):
        # xdist's controller: its children are the workers, whose tests are counted already
        own = resource.getrusage(resource.RUSAGE_SELF)
        record(OUTSIDE, own.ru_utime + own.ru_stime)
        return
    record(OUTSIDE, cpu_seconds() - counted[0])


def by_file(lines: list[str]) -> list[tuple[str, float, int]]:
    """(file, CPU-seconds, tests) for each file, costliest first, ties by name."""
    seconds, tests = defaultdict(float), defaultdict(int)
    for line in lines:
        record = json.loads(line)
        name = record["test"].split("::")[0]
        seconds[name] += record["cpu"]
        tests[name] += 1
    return sorted(((n, seconds[n], tests[n]) for n in seconds), key=lambda r: (-r[1], r[0]))


def idle_at_the_end(lines: list[str]) -> dict[str, float]:
    """Worker -> seconds between its last test's end and the last end of any test."""
    ends: dict[str, float] = {}
    for line in lines:
        record = json.loads(line)
        if "ended" in record and record["test"] != OUTSIDE:
            ends[record["worker"]] = max(ends.get(record["worker"], 0.0), record["ended"])
    last = max(ends.values(), default=0.0)
    return {worker: round(last - end, 1) for worker, end in sorted(ends.items())}


def main(path: str) -> None:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = by_file(lines)
    total = sum(cpu for _, cpu, _ in rows)
    print(f"{total:.0f} CPU-seconds in {sum(n for *_, n in rows)} tests")
    print("idle at the end (s):", idle_at_the_end(lines))
    for name, cpu, count in rows:
        print(f"{cpu:8.1f}  {cpu / total:6.1%}  {count:4d}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
