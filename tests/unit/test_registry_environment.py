"""The file system failing under the registry (read-only, permission denied, disk full):
an environment error, exit 7, one line naming the path, and the registry as it was.

Root ignores chmod, so each failure is injected in-process where the OS would raise it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from digits.registry.store import Registry
from tests.helpers.manifests import make_manifest
from tests.helpers.synth import snapshot_tree


@pytest.fixture
def registry(tmp_path: Path, source: Path) -> Registry:
    """v1 and v2 published in turn: production is v2."""
    registry = Registry(tmp_path / "registry")
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    return registry


def failing_os_call(monkeypatch, name: str, code: int, when) -> None:
    """Make `os.<name>` raise OSError(code), naming its paths as the OS does, for the
    calls `when(*args)` picks."""
    real = getattr(os, name)

    def call(*args, **kwargs):
        if when(*args):
            paths = [str(arg) for arg in args if isinstance(arg, (str, os.PathLike))]
            named = [*paths[:1], *([None, paths[1]] if len(paths) > 1 else [])]
            raise OSError(code, os.strerror(code), *named)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, call)


def assert_environment_error(result: tuple[int, str, str], path: Path, reason: str) -> None:
    code, out, err = result
    assert (code, out) == (7, ""), err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(path) in err and reason in err and "unexpected" not in err


def test_a_full_disk_while_promoting_is_an_environment_error(registry, cli, monkeypatch, source):
    before = snapshot_tree(registry.root)
    aliases = registry.root / "aliases.json"
    failing_os_call(monkeypatch, "replace", errno.ENOSPC, lambda src, dst: Path(dst) == aliases)
    result = cli("promote", "v1", "--registry", registry.root)
    assert_environment_error(result, aliases, "No space left on device")
    monkeypatch.undo()
    assert snapshot_tree(registry.root) == before  # history line undone, temp file gone
    assert registry.publish(source, make_manifest(), alias=None) == "v3"
    assert registry.aliases() == {"production": "v2"}


def test_a_read_only_registry_refuses_writes_and_serves_reads(registry, cli, monkeypatch, tmp_path):
    lock = registry.root / ".lock"
    failing_os_call(monkeypatch, "open", errno.EROFS, lambda path, *_: Path(path) == lock)
    for command in (["promote", "v1"], ["rollback"]):
        result = cli(*command, "--registry", registry.root)
        assert_environment_error(result, lock, "Read-only file system")
    assert cli("verify", "--registry", registry.root)[:2] == (0, "ok: v1, v2\n")
    code, out, _ = cli("fetch", "--dest", tmp_path / "model", "--registry", registry.root)
    assert (code, out) == (0, f"{tmp_path / 'model' / 'model.keras'}\n")


def test_permission_denied_at_the_fetch_dest_is_an_environment_error(
    registry, cli, monkeypatch, tmp_path
):
    locked = tmp_path / "locked"
    failing_os_call(monkeypatch, "mkdir", errno.EACCES, lambda path, *_: Path(path) == locked)
    result = cli("fetch", "--dest", locked / "model", "--registry", registry.root)
    assert_environment_error(result, locked, "Permission denied")
    assert not locked.exists()


def test_a_move_that_cannot_be_undone_is_reported_committed_and_pending(
    registry, cli, monkeypatch, source
):
    # The file system turns read-only after the history line: aliases.json cannot be
    # replaced, and the line cannot be taken back either.
    aliases, read_only = registry.root / "aliases.json", []

    def turns_read_only(src, dst) -> bool:
        if Path(dst) == aliases:
            read_only.append(True)
        return bool(read_only)

    failing_os_call(monkeypatch, "replace", errno.EROFS, turns_read_only)
    failing_os_call(monkeypatch, "truncate", errno.EROFS, lambda *_: bool(read_only))
    code, out, err = cli("promote", "v1", "--registry", registry.root)
    assert (code, out) == (7, "") and len(err.strip().splitlines()) == 1
    assert "Read-only file system" in err and "production -> v1 is committed" in err
    monkeypatch.undo()

    assert registry.aliases() == {"production": "v2"}  # readers still see v2 ...
    code, _, err = cli("verify", "--registry", registry.root)
    assert code == 5 and "'production' is v2 but history.jsonl moved it to v1" in err
    registry.publish(source, make_manifest(), alias=None)  # ... until the next write
    assert registry.aliases() == {"production": "v1"}
    assert cli("verify", "--registry", registry.root)[:2] == (0, "ok: v1, v2, v3\n")
