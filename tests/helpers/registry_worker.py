"""A separate process that runs one registry operation, for the concurrency and crash tests.

    python registry_worker.py ROOT OP [--source DIR] [--run-id ID] [--accuracy A]
        [--tolerance T] [--ref REF] [--dest DIR] [--pause STEP SIGNAL_FILE [GO_FILE]]

OP is publish, promote-if, decide-outside (the old gate: decide on production read
without the lock, then publish), set-alias, rollback or fetch (--dest DIR). With
--pause, the worker touches SIGNAL_FILE when the operation reaches STEP (a
`Registry._on_step` name), then waits: until GO_FILE exists when given (a barrier),
else forever (to be SIGKILLed there).

The tests import `start_worker` and `wait_for` from here to drive it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from digits.registry.gate import GateRule
from digits.registry.location import open_registry

REPO = Path(__file__).resolve().parents[2]


def pause_at(step: str, signal_file: Path, go_file: Path | None):
    def on_step(reached: str) -> None:
        if reached != step:
            return
        signal_file.touch()
        while go_file is None or not go_file.exists():
            time.sleep(0.01)

    return on_step


def run(args: argparse.Namespace) -> str:
    registry = open_registry(args.root)  # a folder or s3://BUCKET/PREFIX
    if args.pause:
        step, signal_file, *go_file = args.pause
        registry._on_step = pause_at(step, Path(signal_file), Path(go_file[0]) if go_file else None)
    manifest = {"model": "dummy", "metrics": {"accuracy": args.accuracy}}
    manifest["flow_run_id"] = args.run_id
    rule = GateRule(args.accuracy, threshold=0.5, regression_tolerance=args.tolerance)
    if args.op == "publish":
        return registry.publish(Path(args.source), manifest)
    if args.op == "promote-if":
        _, version = registry.promote_if(Path(args.source), manifest, rule)
        return f"promoted {version}" if version else "rejected"
    if args.op == "decide-outside":
        # What the gate did before promote_if: read production without the lock, decide,
        # then publish (which moves production without looking again).
        current = registry.aliases().get("production")
        if not rule(registry.manifest(current) if current else None).promote:
            return "rejected"
        return f"promoted {registry.publish(Path(args.source), manifest)}"
    if args.op == "set-alias":
        return registry.set_alias("production", args.ref)
    if args.op == "rollback":
        return registry.rollback()
    if args.op == "fetch":
        return str(registry.fetch(args.ref or "production", Path(args.dest)))
    raise SystemExit(f"unknown op {args.op!r}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("op")
    parser.add_argument("--source")
    parser.add_argument("--run-id", default="worker")
    parser.add_argument("--accuracy", type=float, default=0.9)
    parser.add_argument("--tolerance", type=float, default=None)
    parser.add_argument("--ref")
    parser.add_argument("--dest")
    parser.add_argument("--pause", nargs="+", metavar="STEP SIGNAL_FILE [GO_FILE]")
    return parser.parse_args(argv)


# --- driving it from a test ---------------------------------------------------------


def start_worker(
    root: Path, op: str, *options: object, env: dict[str, str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), str(root), op, *map(str, options)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(signal_file: Path, worker: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not signal_file.exists():
        assert worker.poll() is None, f"worker exited early: {worker.communicate()[1]}"
        assert time.monotonic() < deadline, f"worker never reached {signal_file.name}"
        time.sleep(0.01)


if __name__ == "__main__":
    print(run(parse(sys.argv[1:])))
