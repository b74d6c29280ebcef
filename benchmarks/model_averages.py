"""MNIST test accuracy of saved models alone, averaged with each other, and averaged over
fixed one-pixel shifts (issue 19's evidence for ensembles and test-time shifts), without
retraining: the models are the `.keras` files benchmarks/frontier.py saves.

Usage: python -m benchmarks.model_averages data/frontier/reference-s1.keras [more.keras ...]
       [--shifts cross5|phase4|grid9]
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from digits.model import layers  # noqa: F401  registers our layers for load_model
from digits.model.architectures import SHIFTS, averages_shifts

ROOT = Path(__file__).resolve().parents[1]
# (rows, columns) moves averaged with the image. cross5: one pixel left, right, up and down;
# phase4: the four phases of a stride-2 grid; grid9: every move of at most one pixel.
SHIFT_SETS = {
    "cross5": SHIFTS["cross5"],  # the set `digits run --test-shifts cross5` exports
    "phase4": [(0, 0), (0, 1), (1, 0), (1, 1)],
    "grid9": [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)],
}


def shift(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Move the digits, filling with background (0), not wrapping round as np.roll does."""
    out = np.zeros_like(images)
    height, width = images.shape[1:]
    out[:, max(rows, 0):height + min(rows, 0), max(cols, 0):width + min(cols, 0)] = images[
        :, max(-rows, 0):height + min(-rows, 0), max(-cols, 0):width + min(-cols, 0)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--shifts", choices=SHIFT_SETS, default="cross5")
    args = parser.parse_args()
    shifts = SHIFT_SETS[args.shifts]

    import keras

    from digits.data.ingest import load_mnist

    data = load_mnist(None, ROOT / "data")
    images, labels = data.test_images.astype(np.float32), data.test_labels
    plain, shifted = {}, {}
    for path in args.models:
        model = keras.saving.load_model(path, safe_mode=True)
        if averages_shifts(model):  # its "alone" column would already be an average
            parser.error(f"{path} already averages over shifts (--test-shifts): pass plain models")
        runs = [model.predict(shift(images, *s), batch_size=1000, verbose=0) for s in shifts]
        # grid9 starts at (-1, -1): "alone" is the unmoved image's run, wherever it is
        plain[path.stem] = runs[shifts.index((0, 0))]
        shifted[path.stem] = np.mean(runs, axis=0)

    def accuracy(probs: np.ndarray) -> str:
        return f"{(probs.argmax(axis=1) == labels).mean():.4f}"

    print(f"| models | alone | {args.shifts} average |\n| --- | --- | --- |")
    for size in range(1, len(plain) + 1):
        for names in itertools.combinations(plain, size):
            alone = np.mean([plain[name] for name in names], axis=0)
            both = np.mean([shifted[name] for name in names], axis=0)
            print(f"| {' + '.join(names)} | {accuracy(alone)} | {accuracy(both)} |")


if __name__ == "__main__":
    main()
