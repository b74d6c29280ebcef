"""The registry's write lock (`<root>/.lock`) and the record of who holds it.

Every write (publish, promote, rollback) holds `.lock`; `.lock.holder` beside it says who
(pid, host, command, since), so a writer waiting for it can say whom it waits on. Waiting
ends after the lock timeout (`$DIGITS_LOCK_TIMEOUT`) with RegistryBusy: busy, not corrupt.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from digits.errors import RegistryBusy
from digits.registry.layout import HOLDER_FILE, LOCK_FILE
from digits.registry.manifest import dump_json, utc_now

LOCK_REPORT_EVERY_S = 30.0  # how often a writer waiting for the registry lock says so

log = logging.getLogger(__name__)


@contextmanager
def hold_lock(root: Path, timeout: float, on_step: Callable[[str], None]) -> Iterator[None]:
    """Hold the registry-wide write lock, with a record of who holds it beside it."""
    lock = FileLock(root / LOCK_FILE)
    acquire(lock, root / HOLDER_FILE, timeout, on_step)
    holder = root / HOLDER_FILE
    try:
        write_holder(holder)
        on_step("locked")
        yield
    finally:
        # Removed while still held, so a waiter never reads a finished holder's record
        # as the current one (a killed holder's stale record is overwritten by the next).
        holder.unlink(missing_ok=True)
        lock.release()


def acquire(
    lock: FileLock, holder: Path, timeout: float, on_step: Callable[[str], None]
) -> None:
    """Wait for the write lock, saying who holds it and for how long; a busy registry
    is not a corrupt one, so giving up raises RegistryBusy (exit 6), not RegistryError."""
    try:
        lock.acquire(blocking=False)
        return
    except Timeout:
        on_step("lock-busy")
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        held_by = describe_holder(holder)
        if waited >= timeout:
            raise RegistryBusy(
                f"{lock.lock_file}: registry busy, {held_by}; gave up after {timeout:g} s "
                "(set DIGITS_LOCK_TIMEOUT to wait longer)"
            )
        log.warning(
            "%s: waiting for the registry lock, %s; waited %.0f s of %g s",
            lock.lock_file, held_by, waited, timeout,
        )  # fmt: skip
        try:
            lock.acquire(timeout=min(LOCK_REPORT_EVERY_S, timeout - waited))
            return
        except Timeout:
            continue


def write_holder(path: Path) -> None:
    """Record who holds the registry lock (pid, host, command, since) for waiters to show."""
    temp = path.with_name(f"{path.name}.tmp")  # only ever written under the lock
    temp.write_bytes(dump_json(holder_record()))
    os.replace(temp, path)


def holder_record() -> dict:
    """This process as a writer names itself: pid, host, command, since."""
    command = " ".join(sys.argv).replace("\n", " ")[:200]
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": utc_now()}


def describe_holder(path: Path) -> str:
    """`held by pid P on HOST (COMMAND) since T`, or why we cannot tell."""
    try:
        record = json.loads(path.read_bytes())
        return (
            f"held by pid {int(record['pid'])} on {record['host']} "
            f"({record['command']}) since {record['since']}"
        )
    except (OSError, ValueError, TypeError, KeyError):
        # No record yet (the holder is between taking the lock and writing it) or an old writer.
        return "held by a process that left no holder record"
