"""`fetch` stages beside --dest; what a killed fetch staged is swept by the next one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from filelock import FileLock

from digits.errors import UsageError
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


# --- what --dest may be ---------------------------------------------------------------


def publish_with(registry: Registry, tmp_path: Path, name: str, files: dict[str, bytes]) -> str:
    source = tmp_path / name
    for file, data in files.items():
        (source / file).parent.mkdir(parents=True, exist_ok=True)
        (source / file).write_bytes(data)
    return registry.publish(source, MANIFEST)


def test_fetch_refuses_a_non_empty_dest_and_leaves_it_as_it_was(registry, tmp_path, cli):
    # v2 has no model.onnx: copied over v1's files, v1's export would stay beside v2's manifest.
    publish_with(registry, tmp_path, "v2-run", {"model.keras": b"v2 weights"})
    dest = tmp_path / "model"
    (dest / "model.onnx").parent.mkdir()
    (dest / "model.onnx").write_bytes(b"v1 export")
    before = snapshot_tree(dest)

    with pytest.raises(UsageError, match=f"{dest}: not empty"):
        registry.fetch("v2", dest)
    code, out, err = cli("fetch", "v2", "--dest", dest, "--registry", registry.root)
    assert (code, out) == (2, "") and err.startswith(f"error: {dest}: not empty")
    assert len(err.strip().splitlines()) == 1
    assert snapshot_tree(dest) == before
    assert dot_entries(tmp_path) == []


def test_fetch_fills_an_empty_dest_folder(registry, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    assert registry.fetch("v1", dest) == dest / "model.keras"
    assert snapshot_tree(dest) == snapshot_tree(registry.root / "v1")


def test_a_file_dest_is_a_usage_error(registry, tmp_path, cli):
    dest = tmp_path / "model"
    dest.write_bytes(b"mine")
    code, out, err = cli("fetch", "v1", "--dest", dest, "--registry", registry.root)
    assert (code, out) == (2, "") and err.startswith(f"error: {dest}: not a folder")
    assert dest.read_bytes() == b"mine"
    code, _, err = cli("fetch", "v1", "--dest", dest / "inner", "--registry", registry.root)
    assert code == 2 and f"{dest}: not a folder" in err


def test_a_fetch_killed_before_its_rename_leaves_an_empty_dest_empty(registry, tmp_path):
    dest, reached = tmp_path / "model", tmp_path / "reached"
    dest.mkdir()
    worker = start_worker(
        registry.root, "fetch", "--dest", dest, "--pause", "fetch-staged", reached
    )
    wait_for(reached, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert dest.is_dir() and list(dest.iterdir()) == []


def test_a_users_fetch_named_folders_beside_dest_are_kept(registry, tmp_path):
    out = tmp_path / "out"
    # Named like fetch's staging, but with no `.lock` beside them: fetch never made them.
    for name in (".fetch-abcdefgh", f".fetch-{'b' * 32}"):
        (out / name).mkdir(parents=True)
        (out / name / "notes.txt").write_text("mine")
    registry.fetch("v1", out / "model")
    assert dot_entries(out) == [".fetch-abcdefgh", f".fetch-{'b' * 32}"]
    assert (out / ".fetch-abcdefgh" / "notes.txt").read_text() == "mine"
