"""What the prediction log (`digits serve --log-dir`) costs an answer.

Two measurements, in one process, on one verified model (the default cnn, ONNX):

1. Paired requests: two apps on the same registry, one without a log (A) and one with (B),
   each asked in turn through FastAPI's TestClient with the page's request (a 280x280 canvas
   PNG as multipart `file`), A B, B A, A B, ... so drift in the machine's load hits both
   alike. Prints the medians, their ratio and the median paired difference.
2. The added work alone: `Scorer.predict` against `Scorer.predict_and_log` (what runs in the
   thread pool per request: the model, then the log's record) for 1 and 32 images, and
   `PredictionLog.record` by itself.

    python benchmarks/log_overhead.py [--pairs 1000] [--registry DIR] [--log-dir DIR]

Without --registry one is built in a temporary folder as benchmarks/serve_load.py builds it
(the cnn trained one epoch on generated digits, exported to ONNX); without --log-dir the
log goes to a temporary folder (its file system is printed: page cache, no fsync per write).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOCAL_URL = "http://127.0.0.1:8000"


def ready_client(stack: ExitStack, registry: Path, **kwargs):
    from fastapi.testclient import TestClient

    from digits.serving.app import create_app

    app = create_app(registry, **kwargs)
    client = stack.enter_context(TestClient(app, base_url=LOCAL_URL))
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            sys.exit(f"no model became ready: {client.get('/readyz').text}")
        time.sleep(0.1)
    return app, client


def timed_request(client, png: bytes) -> float:
    start = time.perf_counter()
    answer = client.post("/v1/predict", files={"file": ("canvas.png", png, "image/png")})
    seconds = time.perf_counter() - start
    if answer.status_code != 200:
        sys.exit(f"/v1/predict answered {answer.status_code}: {answer.text}")
    return seconds


def paired_requests(plain, logged, png: bytes, pairs: int) -> tuple[list[float], list[float]]:
    for _ in range(20):  # warm both: first requests pay for lazy imports and caches
        timed_request(plain, png), timed_request(logged, png)
    a, b = [], []
    for i in range(pairs):
        if i % 2:  # B first every other pair, so neither always follows the other
            b.append(timed_request(logged, png))
            a.append(timed_request(plain, png))
        else:
            a.append(timed_request(plain, png))
            b.append(timed_request(logged, png))
    return a, b


def paired_calls(first, second, rounds: int) -> tuple[float, float]:
    """Medians (s) of two callables timed alternately."""
    a, b = [], []
    for i in range(rounds):
        for call, times in ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a)):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def work_alone(app, images: np.ndarray, rounds: int) -> None:
    scorer = app.state.scorer
    loaded = scorer.loaded()
    for n in (1, 32):
        batch = images[:n]
        plain, logged = paired_calls(lambda batch=batch: scorer.predict(loaded, batch),
                                     lambda batch=batch: scorer.predict_and_log(loaded, batch),
                                     rounds)
        print(f"  {n:>2} image(s): predict {plain * 1e3:.3f} ms, predict and log "
              f"{logged * 1e3:.3f} ms, +{(logged - plain) * 1e6:.0f} us "
              f"({(logged - plain) / n * 1e6:.0f} us an image), ratio {logged / plain:.3f}")
    answer = scorer.predict(loaded, images[:1])
    start = time.perf_counter()
    for _ in range(rounds):
        scorer.log.record("v1", "production", images[:1], answer.probabilities,
                          not_a_digit=answer.not_a_digit)
    print(f"  PredictionLog.record alone: {(time.perf_counter() - start) / rounds * 1e6:.0f} us "
          "an image")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
                  if line.startswith("Model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"


def file_system(folder: Path) -> str:
    found = subprocess.run(["df", "--output=fstype", str(folder)], capture_output=True,
                           text=True, check=False).stdout.split()
    return found[-1] if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--registry", type=Path, help="an existing registry with production")
    parser.add_argument("--log-dir", type=Path, help="where the log goes (new or empty)")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from serve_load import build_registry, canvas_png  # the load benchmark's model and image

    from digits.environment import default_environment

    default_environment()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        registry = args.registry
        if registry is None:
            registry = Path(tmp, "registry")
            print("building the registry (the cnn, one epoch on generated digits)...", flush=True)
            build_registry(registry)
        log_dir = args.log_dir or Path(tmp, "predictions")
        print(f"machine: {machine()}; log on {file_system(log_dir.parent)}", flush=True)
        _, plain = ready_client(stack, registry)
        app, logged = ready_client(stack, registry, log_dir=log_dir)
        png = canvas_png()
        a, b = paired_requests(plain, logged, png, args.pairs)
        median_a, median_b = statistics.median(a), statistics.median(b)
        difference = statistics.median(y - x for x, y in zip(a, b))
        print(f"{args.pairs} pairs of one-image PNG requests (TestClient):")
        print(f"  without the log {median_a * 1e3:.3f} ms, with {median_b * 1e3:.3f} ms "
              f"(medians); ratio {median_b / median_a:.3f}; median paired difference "
              f"{difference * 1e6:+.0f} us")
        images = np.random.default_rng(0).integers(0, 256, (32, 28, 28)).astype(np.float32)
        print("the added work in the thread pool (medians, alternating):")
        work_alone(app, images, rounds=max(200, args.pairs))
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
