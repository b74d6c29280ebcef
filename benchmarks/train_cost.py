"""Seconds per training epoch of candidate configs, alternated in one run (issue 19).

Each round trains every candidate for two epochs over the first --rows MNIST train images
(the first epoch traces the graph; the second is timed), in turn A B C ..., and repeats;
medians per candidate and their ratio to the first one are printed as a markdown table.
Every measurement runs in a fresh process, so `--onednn 0 1` can also alternate
TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS, read once when TensorFlow loads).
`--steps N` times N single training steps instead of an epoch and reports the median step:
on a busy shared host an epoch's wall time swings by a factor of two, a step's median less.

Usage: python -m benchmarks.train_cost reference strided ... [--rows 12000] [--rounds 2]
       [--onednn 0 1] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(name: str, rows: int) -> float:
    """Train `name` for two epochs on `rows` images in this process; the second epoch's time."""
    import keras

    from benchmarks.candidates import candidate_config
    from benchmarks.frontier import flow_splits
    from digits.data.splits import Splits
    from digits.model.train import fit_model

    splits = flow_splits()
    part = Splits(splits.x_train[:rows], splits.y_train[:rows], splits.x_val, splits.y_val,
                  splits.x_test, splits.y_test)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    # patience 2 so early stopping never ends the two epochs
    fit_model(part, candidate_config(name, epochs=2, patience=2), log=lambda line: None,
              callbacks=[Timer()])
    return times[-1]


def step_seconds(name: str, steps: int) -> float:
    """Median seconds of one training step (a batch of the candidate's size), in this process."""
    import numpy as np

    from benchmarks.candidates import candidate_config
    from digits.model.train import build_for, loss, optimizer, seed_everything

    config = candidate_config(name)
    seed_everything(config.seed)
    model = build_for(config)
    model.compile(optimizer=optimizer(config, steps), loss=loss(config))
    rng = np.random.default_rng(0)
    images = rng.random((config.batch_size, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, config.batch_size)
    times = []
    for _ in range(5 + steps):  # the first steps trace the graph and warm the caches
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - started)
    return statistics.median(times[5:])


def measure(name: str, rows: int, onednn: str | None, steps: int | None) -> float:
    """epoch_seconds (or step_seconds) in a fresh Python, with TF_ENABLE_ONEDNN_OPTS set
    when `onednn` is."""
    env = dict(os.environ, **({"TF_ENABLE_ONEDNN_OPTS": onednn} if onednn else {}))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_cost", "--one", name, "--rows", str(rows),
         *(["--steps", str(steps)] if steps else [])],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onednn", nargs="+", choices=["0", "1"], default=[None],
                        help="TF_ENABLE_ONEDNN_OPTS values to alternate (default: as inherited)")
    parser.add_argument("--steps", type=int, help="time this many steps instead of an epoch")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's candidate
    args = parser.parse_args()
    if args.one:
        print(step_seconds(args.one, args.steps) if args.steps else epoch_seconds(args.one, args.rows))
        return

    from benchmarks.candidates import CANDIDATES

    unknown = set(args.names) - set(CANDIDATES)
    if unknown or not args.names:
        parser.error(f"unknown candidates {sorted(unknown)}; known: {sorted(CANDIDATES)}")
    runs = [(name, flag) for name in args.names for flag in args.onednn]
    seconds: dict[tuple, list[float]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for name, flag in runs:
            seconds[name, flag].append(measure(name, args.rows, flag, args.steps))
            print(f"round {round_ + 1} {name} oneDNN={flag}: {seconds[name, flag][-1]:.3f} s",
                  flush=True)
    print(f"\nload average {os.getloadavg()}")
    unit, scale = ("ms / step", 1000) if args.steps else (f"s / {args.rows} images", 1)
    print(f"| candidate | oneDNN | {unit} (runs) | ratio |")
    print("| --- | --- | --- | --- |")
    first = statistics.median(seconds[runs[0]])
    for (name, flag), times in seconds.items():
        median = statistics.median(times)
        shown = ", ".join(f"{s * scale:.1f}" for s in times)
        print(f"| {name} | {flag or 'inherited'} | {median * scale:.1f} ({shown}) |"
              f" {median / first:.2f} |")


if __name__ == "__main__":
    main()
