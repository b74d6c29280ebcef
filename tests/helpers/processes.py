"""Subprocesses for the integration tests, always stopped, and polling with a deadline.

Subprocesses run in their own session, so stopping one also stops what it started (a
worker's flow-run processes): SIGTERM first, SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUILT_FROM = ("pyproject.toml", "README.md", "digits", "flows", "tasks")  # what pip builds

T = TypeVar("T")


def copy_sources(dest: Path) -> Path:
    """A copy of what `pip install` builds the package from (the build writes build/ and
    *.egg-info beside its sources, so never the checkout itself)."""
    dest.mkdir(parents=True)
    for name in BUILT_FROM:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, dest / name)
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path} is missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    check: Callable[[], T], timeout: float, what: str, every: float = 1.0, log: Path | None = None
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            logged = tail(log) if log else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logged}")
        time.sleep(every)


def answers(probe: str, process: subprocess.Popen, log: Path) -> bool:
    """True once `probe` answers 200; fails the test at once if `process` has exited."""
    if process.poll() is not None:
        pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{tail(log)}")
    try:
        return httpx.get(probe, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    process.wait()


@contextmanager
def background(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Start `command` (stdout and stderr to `log`) and always stop it on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


# What TensorFlow's C++ runtime and Prefect's temporary server print outside Python's reach
# (file descriptor 2, the interpreter's exit), which a person must not see from `digits run`.
NOISE = ("use_unbounded_threadpool", "oneDNN", "absl::InitializeLog", "cpu_feature_guard",
         "Stopping temporary server")


def noise_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]
