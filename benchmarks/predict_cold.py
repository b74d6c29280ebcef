"""Cold `digits predict one.png`, whole process: the ONNX path against the Keras path.

Runs A (a version with model.onnx) and B (the same model without exports, as versions
published before issue 11) alternately, A B A B ..., so that load on this shared machine
hits both alike; prints the medians as a markdown table for benchmarks/results.md.

    python benchmarks/predict_cold.py [--runs 15] [--registry DIR --image PNG]

Without --registry it builds one in a temporary folder: today's cnn architecture (same
size and graph as the production model) trained one epoch on generated digits.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = Path(sys.executable).with_name("digits")


def build_registry(root: Path, image: Path) -> None:
    """v1: cnn with exports (the flow's export step); v2: the same model.keras alone."""
    from quick_cnn import train_quick_cnn

    core, images = train_quick_cnn()
    from PIL import Image

    from digits.model.architectures import export_model
    from digits.model.export import export_candidate
    from digits.registry.layout import MODEL_FILE
    from digits.registry.store import Registry

    registry, fields = Registry(root), {"model": "cnn", "metrics": {"accuracy": 0.99}}
    with tempfile.TemporaryDirectory() as work:
        with_exports, without = Path(work, "a"), Path(work, "b")
        with_exports.mkdir(), without.mkdir()
        export_model(core).save(with_exports / MODEL_FILE)
        shutil.copy(with_exports / MODEL_FILE, without / MODEL_FILE)
        started = time.perf_counter()
        exports = export_candidate(with_exports, images)
        print(f"export + parity on 1,000 digits: {time.perf_counter() - started:.2f} s; {exports}")
        registry.publish(with_exports, {**fields, "exports": exports})
        registry.publish(without, fields)
    Image.fromarray(images[0]).resize((200, 200)).save(image)


def time_once(ref: str, registry: Path, image: Path) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system): under load the wall time stretches
    while the CPU time stays about what the process needs on an idle machine."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(
        [str(DIGITS), "predict", str(image), "--ref", ref, "--registry", str(registry)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each path")
    parser.add_argument("--registry", type=Path, help="holds v1 (with ONNX) and v2 (without)")
    parser.add_argument("--image", type=Path, help="the image to predict (with --registry)")
    args = parser.parse_args()
    if (args.registry is None) != (args.image is None):
        parser.error("--registry and --image go together")
    with tempfile.TemporaryDirectory() as work:
        registry, image = args.registry, args.image
        if registry is None:
            registry, image = Path(work, "registry"), Path(work, "one.png")
            build_registry(registry, image)
        for ref in ("v1", "v2"):
            time_once(ref, registry, image)  # warm the page cache, not measured
        load_before = os.getloadavg()
        times: dict[str, list[tuple[float, float]]] = {"v1": [], "v2": []}
        for _ in range(args.runs):
            for ref in times:
                times[ref].append(time_once(ref, registry, image))
        load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print("| path | wall median | wall min | wall max | CPU median |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for label, ref in (("ONNX (onnxruntime)", "v1"), ("Keras fallback", "v2")):
        wall, cpu = [run[0] for run in times[ref]], [run[1] for run in times[ref]]
        medians[ref] = statistics.median(wall)
        print(
            f"| {label} | {medians[ref]:.3f} s | {min(wall):.3f} s | {max(wall):.3f} s "
            f"| {statistics.median(cpu):.3f} s |"
        )
    print(f"speed-up {medians['v2'] / medians['v1']:.1f}x over {args.runs} alternating pairs")


if __name__ == "__main__":
    main()
