"""What a person sees from `digits run` in a terminal when it fails: the error last, and
no runtime noise.

A real process (not the in-process `cli` fixture), because the noise comes from outside
Python's reach: TensorFlow's C++ runtime writes to file descriptor 2, and Prefect's
temporary server logs its shutdown at interpreter exit. A successful run's console is
tests/integration/test_installs.py's: a fresh install's `digits run` on the real MNIST.
"""

import os
import subprocess
import sys
from pathlib import Path

from digits.config import IDX_FILES
from tests.helpers.prefect_db import migrated_database
from tests.helpers.processes import noise_in
from tests.helpers.synth import write_dataset

REPO = Path(__file__).resolve().parents[2]
FAST = ["--model", "mlp", "--epochs", "1", "--min-train-rows", "1000"]


def digits_run(prefect_home: Path, *args) -> subprocess.CompletedProcess:
    """`digits run ARGS` as a user types it, with none of our test-only quieting settings."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    for name in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "digits", "run", *FAST, *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_error_is_the_last_line_of_stderr(tmp_path, tmp_path_factory):
    data = write_dataset(tmp_path / "data")
    (data / IDX_FILES["train_images"]).write_bytes(b"\x00\x00\x08\x01garbage")
    home = tmp_path / "prefect-home"  # its own, migrated already (a fresh one: test_installs)
    migrated_database(tmp_path_factory, home / "prefect.db")
    result = digits_run(home, "--data-dir", data, "--registry", tmp_path / "r")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and IDX_FILES["train_images"] in last
    assert noise_in(result.stderr) == []
