"""`digits add ARGS...` whose store step pauses after its first file (printing "written"), so
a test can signal the command while a batch is half written. Run it with `python -m`: beside
it, tests/helpers/flows.py would hide the flows package."""

import sys
import time

import numpy as np

from digits.cli import entry
from digits.data import batches

real_save = np.save


def slow_save(path, array, **kwargs):
    real_save(path, array, **kwargs)
    print("written", flush=True)
    time.sleep(120)


batches.np.save = slow_save
sys.argv = ["digits", "add", *sys.argv[1:]]
entry()
