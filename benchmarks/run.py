"""Measure, in one run on one machine, the figures kept in benchmarks/results.md.

(a) the original single-script MLP against `digits run --model mlp` (same 5 epochs):
    the orchestration overhead as a ratio; (b) `digits run` (cnn) training time and test
    accuracy; (c) batch inference throughput and single-image `digits predict` latency;
(d) Great Expectations validation of all of MNIST.
Usage: python benchmarks/run.py [--skip-cnn]; prints markdown rows to paste into results.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from digits.environment import ENV_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 3):
        sys.exit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, result.stdout


def manifest(registry: Path, ref: str = "production") -> dict:
    sys.path.insert(0, str(ROOT))
    from digits.registry.store import Registry

    return Registry(registry).manifest(ref)


def measure_inference(registry: Path) -> float:

    from digits.data.ingest import load_mnist
    from digits.registry.load import load_model

    model = load_model("production", registry)
    images = load_mnist(None, ROOT / "data").test_images
    model.predict(images[:1024], batch_size=1024, verbose=0)  # warm up
    started = time.perf_counter()
    model.predict(images, batch_size=1024, verbose=0)
    return len(images) / (time.perf_counter() - started)


def measure_validation() -> float:
    from digits.checks.suites import validate_raw_data
    from digits.config import MNIST_ROWS, ValidationConfig
    from digits.data.ingest import load_mnist

    data = load_mnist(None, ROOT / "data")
    with tempfile.TemporaryDirectory() as docs:
        validate_raw_data(data, ValidationConfig(exact_rows=MNIST_ROWS), Path(docs))  # warm up
        started = time.perf_counter()
        validate_raw_data(data, ValidationConfig(exact_rows=MNIST_ROWS), Path(docs))
        return time.perf_counter() - started


def main() -> None:
    env = {**ENV_DEFAULTS, **os.environ}  # the original script too runs as `digits` would
    rows = [f"machine: {platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}; date: {date.today()}"]
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry"
        env["DIGITS_REGISTRY"] = str(registry)
        timed([str(BIN / "digits"), "models"], env)  # import caches warm for both sides
        script, out = timed([sys.executable, "benchmarks/original_mlp.py"], env)
        rows.append(f"original script (mlp, 5 epochs): {script:.1f} s; {out.strip().splitlines()[-1]}")
        pipeline, out = timed([str(BIN / "digits"), "run", "--model", "mlp", "--force"], env)
        rows.append(f"digits run --model mlp (5 epochs): {pipeline:.1f} s; {out.strip().splitlines()[-1]}")
        rows.append(f"overhead ratio: {pipeline / script:.2f}x")
        if "--skip-cnn" not in sys.argv:
            total, out = timed([str(BIN / "digits"), "run", "--no-regression-check", "--force"], env)
            cnn = manifest(registry)
            rows.append(
                f"digits run (cnn): {total:.0f} s in all, training {cnn['training']['seconds']:.0f} s "
                f"for {cnn['training']['epochs_run']} epochs, test accuracy {cnn['metrics']['accuracy']:.4f}"
            )
        rows.append(f"batch inference: {measure_inference(registry):.0f} images/s (batch 1024)")
        image = Path(tmp) / "digit.npy"
        import numpy as np

        np.save(image, np.zeros((28, 28), np.uint8))
        latency, _ = timed([str(BIN / "digits"), "predict", str(image)], env)
        rows.append(f"digits predict, one image, whole command: {latency:.1f} s")
    rows.append(f"GX validation of all MNIST (raw suite, 70000 rows): {measure_validation():.2f} s")
    print("\n".join(f"- {row}" for row in rows))
    print(json.dumps({"argv": sys.argv}))


if __name__ == "__main__":
    main()
