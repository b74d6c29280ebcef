"""Many writers and killed writers: the registry stays whole (separate processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from digits.registry import Registry, alias_targets
from tests.unit.registry_worker import start_worker, wait_for


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    (folder / "plots").mkdir(parents=True)
    (folder / "model.keras").write_bytes(os.urandom(64 * 1024))
    (folder / "plots" / "confusion.png").write_bytes(os.urandom(1024))
    return folder


MANIFEST = {"model": "dummy", "metrics": {"accuracy": 0.9}}


def dot_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_concurrent_publishes_get_distinct_complete_versions(tmp_path, source):
    root, n = tmp_path / "registry", 6
    go = tmp_path / "go"
    # Every worker copies its files, then waits at the barrier, so all six builds are
    # in flight at once and then race for the lock (and sweep each other's folders).
    workers = [
        start_worker(
            root, "publish", "--source", source, "--run-id", i,
            "--pause", "files-copied", tmp_path / f"ready{i}", go,
        )
        for i in range(n)
    ]
    for i, worker in enumerate(workers):
        wait_for(tmp_path / f"ready{i}", worker)
    go.touch()
    results = [worker.communicate(timeout=60) for worker in workers]

    assert [w.returncode for w in workers] == [0] * n, [err for _, err in results]
    registry = Registry(root)
    expected = [f"v{i}" for i in range(1, n + 1)]
    assert sorted(out.strip() for out, _ in results) == sorted(expected)
    assert registry.verify() == expected
    assert sorted(v["flow_run_id"] for v in registry.versions()) == [str(i) for i in range(n)]
    history = registry.history()
    assert sorted(e["version"] for e in history) == sorted(expected)
    assert registry.aliases() == {"production": history[-1]["version"]}
    assert dot_entries(root) == [".lock"]


# Where publish stops, and what a reader must see afterwards: (versions, production).
KILL_POINTS = {
    "tmp-created": (["v1"], "v1"),
    "files-copied": (["v1"], "v1"),
    "manifest-written": (["v1"], "v1"),  # complete build, not yet renamed
    "renamed": (["v1", "v2"], "v1"),  # a whole version nobody points at yet
    "alias-written": (["v1", "v2"], "v1"),  # new aliases.json written but not swapped in
    "alias-replaced": (["v1", "v2"], "v2"),  # promoted, history line not yet appended
}


@pytest.mark.parametrize("step", KILL_POINTS)
def test_a_writer_killed_mid_publish_leaves_a_whole_registry(tmp_path, source, step):
    registry = Registry(tmp_path / "registry")
    registry.publish(source, MANIFEST)
    reached = tmp_path / "reached"
    worker = start_worker(registry.root, "publish", "--source", source, "--pause", step, reached)
    wait_for(reached, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)

    versions, production = KILL_POINTS[step]
    assert registry.verify() == versions
    assert [v["version"] for v in registry.versions()] == versions
    assert registry.aliases() == {"production": production}
    assert [e["version"] for e in registry.history()] == ["v1"]

    following = registry.publish(source, MANIFEST)
    assert following == f"v{len(versions) + 1}"
    assert registry.verify() == [*versions, following]
    assert dot_entries(registry.root) == [".lock"]
    if step == "alias-replaced":
        assert registry.rollback() == "v2"  # the unlogged promotion still counts as current


def test_a_live_build_survives_another_writers_sweep(tmp_path, source):
    registry = Registry(tmp_path / "registry")
    registry.publish(source, MANIFEST)
    reached, go = tmp_path / "reached", tmp_path / "go"
    worker = start_worker(
        registry.root, "publish", "--source", source, "--pause", "files-copied", reached, go
    )
    wait_for(reached, worker)

    assert registry.publish(source, MANIFEST) == "v2"  # sweeps leftovers under the lock
    go.touch()
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert out.strip() == "v3"
    assert registry.verify() == ["v1", "v2", "v3"]
