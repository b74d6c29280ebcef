"""A separate process writing to a prediction log, for the crash and sharing tests.

    python log_writer.py FOLDER COUNT [--forever]

Records COUNT single-image predictions (digit = i % 10), printing each id on its own line
once its record is written, then exits; with --forever it keeps recording until killed.
The tests import `start_writer` from here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from digits.monitoring.log import PredictionLog

REPO = Path(__file__).resolve().parents[2]


def one_hot_row(digit: int) -> np.ndarray:
    row = np.full((1, 10), 0.01, dtype=np.float32)
    row[0, digit] = 0.91
    return row


def write(folder: Path, count: int, forever: bool) -> None:
    log = PredictionLog(folder)
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    for i in itertools.count() if forever else range(count):
        image[0, 14, i % 28] = 255
        (id_,) = log.record("v1", "production", image, one_hot_row(i % 10))
        print(id_, flush=True)
    log.close()


def start_writer(folder: Path, count: int, forever: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), str(folder), str(count),
         *(["--forever"] if forever else [])],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--forever", action="store_true")
    arguments = parser.parse_args()
    write(arguments.folder, arguments.count, arguments.forever)
