"""The orchestration overhead: `digits run --model mlp` against the original script.

Runs the two commands alternately (A B A B ...) on the cached real MNIST, same model and
epochs, and prints each pair, the medians and their ratio, then where one `digits run`
spends its fixed cost (from its own log timestamps). With `--server` it first starts a
`prefect server` (as `make ui` does) and points the runs at it.

Usage: python benchmarks/overhead.py [--pairs 3] [--server]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

from digits.environment import ENV_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \| \w+ +\| (.*)$")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(start, end, seconds, output) of one command; stops the benchmark if it fails."""
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return start, end, end - start, result.stdout + result.stderr


def breakdown(start: float, end: float, output: str) -> list[tuple[str, float]]:
    """Seconds per phase of one run, from the wall-clock times on Prefect's log lines."""
    day = datetime.fromtimestamp(start).date()
    marks = [("process start", start)]
    for line in output.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        at = datetime.combine(day, datetime.strptime(match[1], "%H:%M:%S.%f").time()).timestamp()
        message = match[2]
        if "Beginning flow run" in message:
            marks.append(("imports, API start, flow run created", at))
        elif found := re.search(r"Task run '([\w-]+)' - Finished", message):
            marks.append((found[1], at))
        elif "Flow run" in message and "Finished in state" in message:
            marks.append(("hooks, final state", at))
    marks.append(("exit after the flow run", end))
    return [(name, at - marks[i - 1][1]) for i, (name, at) in enumerate(marks) if i]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def prefect_server(env: dict[str, str]):
    """A real `prefect server` on 127.0.0.1, as `make ui` runs it."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--server", action="store_true", help="against a running server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **ENV_DEFAULTS,  # the original script and the server too run as `digits` would
            **os.environ,
            "DIGITS_REGISTRY": str(Path(tmp) / "registry"),
            "DIGITS_ARTIFACTS": str(Path(tmp) / "artifacts"),
            "PREFECT_HOME": str(Path(tmp) / "prefect"),
        }
        env.pop("PREFECT_API_URL", None)
        script = [sys.executable, "benchmarks/original_mlp.py"]
        # --force: every run trains, though the data and settings equal the last one's.
        digits = [str(BIN / "digits"), "run", "--model", "mlp", "--no-regression-check", "--force"]
        timed(digits, env)  # warm: the MNIST cache, the first database migration
        with prefect_server(env) if args.server else nullcontext() as url:
            if url:
                env["PREFECT_API_URL"] = url
            pairs = []
            for _ in range(args.pairs):
                original = timed(script, env)[2]
                last = timed(digits, env)
                pairs.append((original, last[2]))
                print(f"pair: original {original:.1f} s, digits run {last[2]:.1f} s, "
                      f"ratio {last[2] / original:.2f}", flush=True)
    original = statistics.median(a for a, _ in pairs)
    pipeline = statistics.median(b for _, b in pairs)
    where = "a running prefect server" if args.server else "the embedded default"
    print(f"medians on {where}: original {original:.1f} s, digits run {pipeline:.1f} s, "
          f"ratio {pipeline / original:.2f}x ({len(pairs)} pairs, {os.cpu_count()} cores)")
    print("breakdown of the last digits run:")
    for name, seconds in breakdown(last[0], last[1], last[3]):
        print(f"  {name:<40} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
