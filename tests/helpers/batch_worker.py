"""Stores a batch, pausing after its first file so a test can SIGKILL it mid-write."""

import sys
import time
from pathlib import Path

import numpy as np

import digits.data.batches as batches
import digits.data.intake as intake

data_dir = Path(sys.argv[1])
images = np.zeros((3, 28, 28), np.uint8)
images[:, 10:20, 12:16] = [[[1]], [[2]], [[3]]]
source = intake.Source("x", images, np.arange(3), [])
real_save = np.save


def slow_save(path, array, **kwargs):
    real_save(path, array, **kwargs)
    print("written", flush=True)
    time.sleep(60)


batches.np.save = slow_save
record = {"id": intake.source_id(source), "name": "x", "status": "accepted"}
batches.store_batch(data_dir, source, record, {})
