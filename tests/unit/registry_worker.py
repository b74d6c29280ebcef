"""A separate process that publishes one version, for the concurrency and crash tests.

    python registry_worker.py ROOT SOURCE RUN_ID [STEP SIGNAL_FILE [GO_FILE]]

With STEP, the worker touches SIGNAL_FILE when publish reaches that step, then waits:
until GO_FILE exists when given (a start barrier), else forever (to be SIGKILLed there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from digits.registry import Registry


def pause_at(step: str, signal_file: Path, go_file: Path | None):
    def on_step(reached: str) -> None:
        if reached != step:
            return
        signal_file.touch()
        while go_file is None or not go_file.exists():
            time.sleep(0.01)

    return on_step


def main(root: str, source: str, run_id: str, *pause: str) -> None:
    registry = Registry(root)
    if pause:
        step, signal_file, *go_file = pause
        registry._on_step = pause_at(step, Path(signal_file), Path(go_file[0]) if go_file else None)
    manifest = {"model": "dummy", "metrics": {"accuracy": 0.9}, "flow_run_id": run_id}
    print(registry.publish(Path(source), manifest))


if __name__ == "__main__":
    main(*sys.argv[1:])
