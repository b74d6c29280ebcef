"""Many writers and killed writers: the registry stays whole (separate processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from digits.registry.aliases import alias_targets
from digits.registry.store import Registry
from tests.helpers.registry_worker import start_worker, wait_for


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


# Where publish stops, and what a reader must see afterwards: (versions, aliases.json's
# production, production per history.jsonl, the commit record).
KILL_POINTS = {
    "tmp-created": (["v1"], "v1", "v1"),
    "files-copied": (["v1"], "v1", "v1"),
    "manifest-written": (["v1"], "v1", "v1"),  # complete build, not yet renamed
    "renamed": (["v1", "v2"], "v1", "v1"),  # a whole version nobody points at yet
    "history-appended": (["v1", "v2"], "v1", "v2"),  # committed, aliases.json not yet told
    "alias-written": (["v1", "v2"], "v1", "v2"),  # new aliases.json written but not swapped in
    "alias-replaced": (["v1", "v2"], "v2", "v2"),  # done, but for releasing the lock
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

    versions, seen, production = KILL_POINTS[step]
    assert registry.verify() == versions
    assert [v["version"] for v in registry.versions()] == versions
    assert registry.aliases() == {"production": seen}
    assert committed(registry) == production
    assert [e["version"] for e in registry.history()] == ["v1", *(["v2"] * (production == "v2"))]

    following = registry.publish(source, MANIFEST)
    assert following == f"v{len(versions) + 1}"
    assert registry.verify() == [*versions, following]
    assert_consistent(registry)
    # Back to the production before `following`: v2 only if its promotion was committed.
    assert registry.rollback() == production


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


# --- promote and rollback killed at each step -------------------------------------

# Steps of set_alias and rollback, in order; from "history-appended" on, the move is
# committed (history.jsonl is the commit record) even if aliases.json was not yet replaced.
ALIAS_STEPS = ["locked", "history-appended", "alias-written", "alias-replaced"]


def committed(registry: Registry, alias: str = "production") -> str:
    """The target history.jsonl, the commit record, gives `alias`."""
    return alias_targets(registry.history(), alias)[-1]


def kill_at(registry: Registry, step: str, tmp_path: Path, *operation: object) -> None:
    reached = tmp_path / f"reached-{step}"
    worker = start_worker(registry.root, *operation, "--pause", step, reached)
    wait_for(reached, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)


@pytest.fixture
def three(tmp_path, source) -> Registry:
    """v1, v2, v3 promoted in turn: production is v3."""
    registry = Registry(tmp_path / "registry")
    for _ in range(3):
        registry.publish(source, MANIFEST)
    return registry


def assert_consistent(registry: Registry) -> None:
    assert registry.aliases() == {"production": committed(registry)}
    assert dot_entries(registry.root) == [".lock"]


@pytest.mark.parametrize("step", ALIAS_STEPS)
def test_a_rollback_killed_at_any_step_never_makes_the_next_one_move_forward(
    tmp_path, three, step
):
    kill_at(three, step, tmp_path, "rollback")
    done = step != "locked"
    assert three.aliases()["production"] in {"v2", "v3"}  # readers see one or the other
    assert committed(three) == ("v2" if done else "v3")
    # The next writer first brings aliases.json up to the history, then rolls back again.
    assert three.rollback() == ("v1" if done else "v2")
    assert_consistent(three)
    assert three.verify() == ["v1", "v2", "v3"]


@pytest.mark.parametrize("step", ALIAS_STEPS)
def test_a_promote_killed_at_any_step_leaves_aliases_and_history_agreeing(tmp_path, three, step):
    kill_at(three, step, tmp_path, "set-alias", "--ref", "v1")
    done = step != "locked"
    assert committed(three) == ("v1" if done else "v3")
    # Rolling back undoes the promotion if it was committed, else the one before it.
    assert three.rollback() == ("v3" if done else "v2")
    assert_consistent(three)


@pytest.mark.parametrize("step", ["history-appended", "alias-written"])
def test_the_next_writer_repairs_aliases_from_history(tmp_path, three, source, step):
    kill_at(three, step, tmp_path, "publish", "--source", source)
    assert three.aliases() == {"production": "v3"} and committed(three) == "v4"
    assert three.publish(source, MANIFEST, alias=None) == "v5"
    assert three.aliases() == {"production": "v4"}
    assert_consistent(three)


@pytest.mark.parametrize("step", ["history-appended", "alias-written"])
def test_verify_reports_a_move_a_killed_writer_left_pending(tmp_path, three, step, cli):
    kill_at(three, step, tmp_path, "set-alias", "--ref", "v1")
    code, out, err = cli("verify", "--registry", three.root)
    assert (code, out) == (5, "") and len(err.strip().splitlines()) == 1
    aliases = three.root / "aliases.json"
    assert f"{aliases}: 'production' is v3 but history.jsonl moved it to v1" in err
    assert cli("verify", "v3", "--registry", three.root)[0] == 0  # v3 itself is whole
    three.rollback()  # any writer first applies the pending move
    assert cli("verify", "--registry", three.root)[:2] == (0, "ok: v1, v2, v3\n")
