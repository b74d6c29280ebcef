"""Real processes that die (or live on) in the middle of staging, for the sweep tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fake_npm(folder: Path, body: str) -> Path:
    """A folder holding an executable `npm` shell script with `body`; put it first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "npm"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return folder


def start(code: str, env: dict | None = None) -> subprocess.Popen:
    """Run Python `code` from the repository in its own session (so its children die with it)."""
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.1)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process and its children: no finally block or atexit handler runs."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    if process.stderr:
        process.stderr.close()
