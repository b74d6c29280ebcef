"""Two runs gating and promoting at once (separate processes): production ends on the better.

The interleaving is forced, not hoped for: the first run stops while it holds the
registry lock, the second is started and runs until it finds the lock busy, then the
first is let go. So the second always decides while the first's promotion is in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digits.registry.store import Registry
from tests.helpers.registry_worker import start_worker, wait_for

START_ACCURACY = 0.95  # production before the race; both runs beat it


def race(tmp_path: Path, source: Path, op: str, first: float, second: float) -> Registry:
    """Run `op` in two processes, the first holding the lock while the second arrives."""
    registry = Registry(tmp_path / "registry")
    registry.publish(source, {"model": "dummy", "metrics": {"accuracy": START_ACCURACY}})
    held, busy, go = tmp_path / "held", tmp_path / "busy", tmp_path / "go"
    common = ("--source", source, "--tolerance", 0)
    one = start_worker(
        registry.root, op, *common, "--accuracy", first, "--pause", "locked", held, go
    )
    wait_for(held, one)
    # The second signals when it finds the lock taken, and goes on waiting for it.
    (tmp_path / "no-pause").touch()
    two = start_worker(
        registry.root, op, *common, "--accuracy", second,
        "--pause", "lock-busy", busy, tmp_path / "no-pause",
    )  # fmt: skip
    wait_for(busy, two)
    go.touch()
    for worker in (one, two):
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    return registry


def production_accuracy(registry: Registry) -> float:
    return registry.manifest("production")["metrics"]["accuracy"]


@pytest.mark.parametrize("first, second", [(0.97, 0.99), (0.99, 0.97)])
def test_concurrent_promotions_end_on_the_better_model(tmp_path, source, first, second):
    registry = race(tmp_path, source, "promote-if", first, second)
    assert production_accuracy(registry) == max(first, second)
    registry.verify()  # every version whole, aliases pointing at real ones
    history = registry.history()
    assert history[-1]["to"] == registry.aliases()["production"]
    # Promoted versions only: a rejected run leaves no version behind.
    promoted = [v["metrics"]["accuracy"] for v in registry.versions()]
    assert promoted == [START_ACCURACY, first, second][: len(promoted)]
    assert len(promoted) == (3 if second > first else 2)


def test_the_race_is_real_when_deciding_outside_the_lock(tmp_path, source):
    """The same interleaving with the old gate (read production, decide, then publish):
    the worse run decides against the production it saw before the better one landed,
    and replaces it. This is the defect the test above guards against."""
    registry = race(tmp_path, source, "decide-outside", 0.99, 0.97)
    assert production_accuracy(registry) == 0.97
