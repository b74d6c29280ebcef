"""Seconds per training epoch of candidate configs, alternated in one run (issue 19).

Each round trains every candidate for two epochs over the first --rows MNIST train images
(the first epoch traces the graph; the second is timed), in turn A B C ..., and repeats;
medians per candidate and their ratio to the first one are printed as a markdown table.

Usage: python -m benchmarks.train_cost [--rows 12000] [--rounds 2] reference strided ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


class EpochTimes:
    """Keras callback factory: wall seconds of each epoch, validation included."""

    def __init__(self):
        import keras

        times = self.times = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.started)

        self.callback = Timer()


def epoch_seconds(name: str, splits, rows: int) -> float:
    from benchmarks.candidates import candidate_config
    from digits.data.splits import Splits
    from digits.model.train import fit_model

    part = Splits(splits.x_train[:rows], splits.y_train[:rows], splits.x_val, splits.y_val,
                  splits.x_test, splits.y_test)
    timer = EpochTimes()
    # patience 2 so early stopping never ends the two epochs
    config = candidate_config(name, epochs=2, patience=2)
    fit_model(part, config, log=lambda line: None, callbacks=[timer.callback])
    return timer.times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from benchmarks.candidates import CANDIDATES
    from digits.data.ingest import load_mnist
    from digits.data.splits import preprocess_data

    unknown = set(args.names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}; known: {sorted(CANDIDATES)}")
    splits = preprocess_data(load_mnist(None, ROOT / "data"), validation_size=5_000, seed=42)
    seconds = {name: [] for name in args.names}
    for round_ in range(args.rounds):
        for name in args.names:
            seconds[name].append(epoch_seconds(name, splits, args.rows))
            print(f"round {round_ + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
    print(f"\nload average {os.getloadavg()}")
    print(f"| candidate | s / {args.rows} images (runs) | s / 55,000-image epoch | ratio |")
    print("| --- | --- | --- | --- |")
    first = statistics.median(seconds[args.names[0]])
    for name, runs in seconds.items():
        median = statistics.median(runs)
        shown = ", ".join(f"{s:.1f}" for s in runs)
        print(f"| {name} | {median:.1f} ({shown}) | {median * 55_000 / args.rows:.0f} |"
              f" {median / first:.2f} |")


if __name__ == "__main__":
    main()
