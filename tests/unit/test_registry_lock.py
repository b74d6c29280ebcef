"""A busy registry is not a corrupt one: waiting names the holder, then gives up with exit 6."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from digits.environment import lock_timeout
from digits.errors import RegistryBusy, UsageError
from digits.registry.store import Registry
from tests.helpers.registry_worker import start_worker, wait_for
from tests.helpers.synth import snapshot_tree

MANIFEST = {"model": "dummy", "metrics": {"accuracy": 0.98}}


@pytest.fixture
def held(tmp_path, source):
    """A registry with v1, and a second process stopped while it holds the write lock."""
    registry = Registry(tmp_path / "registry")
    registry.publish(source, MANIFEST)
    signal_file = tmp_path / "held"
    # Stopped after renaming its version into place: inside the lock, for good.
    holder = start_worker(
        registry.root, "publish", "--source", source, "--pause", "renamed", signal_file
    )
    try:
        wait_for(signal_file, holder)
        yield registry, holder
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.slow  # waits out a lock
def test_waiting_names_the_holder_then_gives_up_with_registry_busy(held, caplog):
    registry, holder = held
    before = snapshot_tree(registry.root / "v1")
    aliases = registry.aliases()
    waiter = Registry(registry.root, lock_timeout=1.5)
    started = time.monotonic()
    level = caplog.at_level(logging.INFO, logger="digits.registry.lock")
    with level, pytest.raises(RegistryBusy) as caught:
        waiter.set_alias("staging", "v1")
    waited = time.monotonic() - started

    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 6
    assert str(registry.root / ".lock") in message and "busy" in message
    assert f"pid {holder.pid}" in message and socket.gethostname() in message
    assert "registry_worker.py" in message  # the holder's command
    assert "gave up after 1.5 s" in message and "DIGITS_LOCK_TIMEOUT" in message
    assert 1.5 <= waited < 10
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting and f"pid {holder.pid}" in waiting[0] and "since" in waiting[0]
    assert registry.aliases() == aliases and snapshot_tree(registry.root / "v1") == before


def test_the_cli_exits_6_with_one_line_when_the_registry_stays_busy(held, cli, monkeypatch):
    registry, holder = held
    monkeypatch.setenv("DIGITS_LOCK_TIMEOUT", "0.5")
    code, out, err = cli("promote", "v1", "--registry", registry.root)
    assert code == 6 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"pid {holder.pid}" in last and "busy" in last


def test_the_holder_record_goes_with_the_lock(tmp_path, source):
    registry = Registry(tmp_path / "registry")
    registry.publish(source, MANIFEST)
    assert sorted(p.name for p in registry.root.iterdir() if p.name.startswith(".")) == [".lock"]


def test_lock_timeout_setting(monkeypatch):
    monkeypatch.delenv("DIGITS_LOCK_TIMEOUT", raising=False)
    assert lock_timeout() == 600.0
    monkeypatch.setenv("DIGITS_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("DIGITS_LOCK_TIMEOUT", bad)
        with pytest.raises(UsageError, match="DIGITS_LOCK_TIMEOUT"):
            lock_timeout()
