"""What a person sees from `digits run` in a terminal: no runtime noise, the error last.

A real process (not the in-process `cli` fixture), because the noise comes from outside
Python's reach: TensorFlow's C++ runtime writes to file descriptor 2, and Prefect's
temporary server logs its shutdown at interpreter exit.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digits.config import IDX_FILES
from tests.helpers.synth import write_dataset

REPO = Path(__file__).resolve().parents[2]
FAST = ["--model", "mlp", "--epochs", "1", "--min-train-rows", "1000"]
NOISE = ("use_unbounded_threadpool", "oneDNN", "absl::InitializeLog", "cpu_feature_guard",
         "Stopping temporary server")


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for the module: the temporary server migrates its database once."""
    return tmp_path_factory.mktemp("prefect-home")


def digits_run(prefect_home: Path, *args) -> subprocess.CompletedProcess:
    """`digits run ARGS` as a user types it, with none of our test-only quieting settings."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    for name in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "digits", "run", *FAST, *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def noise_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]


def test_successful_run_shows_no_runtime_noise(tmp_path, prefect_home):
    data = write_dataset(tmp_path / "data")
    result = digits_run(prefect_home, "--data-dir", data, "--registry", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("promoted v1 (accuracy ")
    assert noise_in(result.stdout + result.stderr) == []
    assert "Task run 'train' - epoch 1/1" in result.stderr  # Prefect's own logs still show


def test_error_is_the_last_line_of_stderr(tmp_path, prefect_home):
    data = write_dataset(tmp_path / "data")
    (data / IDX_FILES["train_images"]).write_bytes(b"\x00\x00\x08\x01garbage")
    result = digits_run(prefect_home, "--data-dir", data, "--registry", tmp_path / "r")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and IDX_FILES["train_images"] in last
    assert noise_in(result.stderr) == []
