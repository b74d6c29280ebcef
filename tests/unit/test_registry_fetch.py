"""`fetch` stages beside --dest; what a killed fetch staged is swept by the next one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from filelock import FileLock

from digits.registry.store import Registry
from tests.helpers.registry_worker import start_worker, wait_for
from tests.helpers.synth import snapshot_tree

MANIFEST = {"model": "dummy", "metrics": {"accuracy": 0.98}}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    source = tmp_path / "run"
    (source / "plots").mkdir(parents=True)
    (source / "model.keras").write_bytes(os.urandom(64 * 1024))
    (source / "plots" / "loss.png").write_bytes(os.urandom(1024))
    registry = Registry(tmp_path / "registry")
    registry.publish(source, MANIFEST)
    return registry


def dot_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_fetch_leaves_staging_that_the_next_fetch_sweeps(registry, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not ours")
    dest, reached = out / "model", tmp_path / "reached"
    worker = start_worker(
        registry.root, "fetch", "--dest", dest, "--pause", "fetch-staged", reached
    )
    wait_for(reached, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert [n for n in dot_entries(out) if not n.endswith(".lock")]  # the staging it left
    assert not dest.exists()  # nothing reached dest before the kill

    assert registry.fetch("v1", dest) == dest / "model.keras"
    assert dot_entries(out) == []
    assert snapshot_tree(dest) == snapshot_tree(registry.root / "v1")
    assert (out / "mine.txt").read_text() == "not ours"


def test_a_live_fetchs_staging_is_left_alone(registry, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live = out / f".fetch-{'a' * 32}"
    with FileLock(f"{live}.lock"):  # its owner is alive: holds the lock, as fetch does
        live.mkdir()
        (live / "model.keras").write_bytes(b"half")
        registry.fetch("v1", out / "model")
        assert (live / "model.keras").read_bytes() == b"half"
    assert registry.fetch("v1", out / "again") == out / "again" / "model.keras"
    assert dot_entries(out) == []  # swept once its owner let go


def test_other_dot_folders_beside_dest_are_not_ours(registry, tmp_path):
    out = tmp_path / "out"
    (out / ".fetched-by-me").mkdir(parents=True)
    (out / ".fetch-notes.txt").write_text("mine")
    registry.fetch("v1", out / "model")
    assert dot_entries(out) == [".fetch-notes.txt", ".fetched-by-me"]
