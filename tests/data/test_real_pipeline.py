"""The real thing, as a user meets it: `digits run` on the real MNIST, then fetch and predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from digits.data.ingest import load_mnist
from digits.model import layers  # noqa: F401  registers our layers: the model ends with Temperature

pytestmark = pytest.mark.data

DIGITS = str(Path(sys.executable).parent / "digits")


def digits(*args, env):
    return subprocess.run([DIGITS, *map(str, args)], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    return {
        **os.environ,
        "PREFECT_HOME": str(home),  # an ephemeral API of its own, as on a fresh machine
        "PREFECT_API_URL": "",
        "DIGITS_REGISTRY": str(home / "registry"),
        "DIGITS_ARTIFACTS": str(home / "artifacts"),
        "DIGITS_DATA": str(Path("data").resolve()),
    }


def test_run_fetch_load_and_predict_real_mnist(env, tmp_path):
    run = digits("run", "--model", "mlp", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("promoted v1 (accuracy 0.9")

    fetched = digits("fetch", "--dest", tmp_path / "model", env=env)
    assert fetched.returncode == 0, fetched.stderr
    model = keras.saving.load_model(fetched.stdout.strip(), safe_mode=True)
    test = load_mnist(None, Path(env["DIGITS_DATA"]))
    raw = model.predict(test.test_images, verbose=0)  # raw 0..255 pixels, no preprocessing
    accuracy = (raw.argmax(axis=1) == test.test_labels).mean()
    assert accuracy >= 0.97
    assert f"{accuracy:.4f}" in last

    # MNIST test digits as PNGs: light-on-dark at 28x28 and dark-on-light at 112x112.
    files, expected = [], test.test_labels[:20]
    for i, image in enumerate(test.test_images[:20]):
        Image.fromarray(image).save(tmp_path / f"light-{i}.png")
        Image.fromarray(255 - image).resize((112, 112)).save(tmp_path / f"dark-{i}.png")
        files += [tmp_path / f"light-{i}.png", tmp_path / f"dark-{i}.png"]
    predicted = digits("predict", "--json", *files, env=env)  # text says "not a digit"
    assert predicted.returncode == 0, predicted.stderr
    answers = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert len(answers) == 40
    got = np.array([answer["digit"] for answer in answers])
    assert (got == np.repeat(expected, 2)).mean() >= 0.9

    verify = digits("verify", env=env)
    assert verify.returncode == 0 and "v1" in verify.stdout
