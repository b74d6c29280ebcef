"""The batch checks' defaults on real MNIST with a quickly trained production model: other
writers (train digits redrawn with small distortions and other pens) are accepted; noise,
shuffled labels and leaked test digits are refused, each by the check meant for it."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from digits.checks.batch import check_batch, report_of
from digits.checks.measure import reference_of
from digits.checks.settings import BatchChecks
from digits.config import default_data_dir, train_config
from digits.data.ingest import load_mnist
from digits.data.intake import Source
from tests.helpers.synth import distort, noise_images

pytestmark = [pytest.mark.data, pytest.mark.slow]
CONFIG = BatchChecks()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from digits.data.splits import preprocess_data
    from digits.model.train import fit_model
    from digits.registry.load import load_model
    from digits.registry.store import Registry

    data = load_mnist(None, default_data_dir())
    config = train_config("mlp", epochs=2, validation_size=2000)
    trained = fit_model(preprocess_data(data, config.validation_size, config.seed), config,
                        log=lambda line: None)
    source = Path(tempfile.mkdtemp(dir=tmp_path_factory.mktemp("model")))
    trained.model.save(source / "model.keras")
    root = tmp_path_factory.mktemp("registry")
    Registry(root).publish(source, {"model": "mlp", "metrics": {"accuracy": 0.97}})
    reference = reference_of(data.train_images, data.train_labels, data.test_images, [], CONFIG)
    return data, reference, load_model("production", root)


def verdict(setup, images, labels, tmp_path):
    _, reference, model = setup
    source = Source("b", images, np.asarray(labels, np.int64), [])
    return report_of(check_batch(source, reference, model, CONFIG, tmp_path))


@pytest.fixture(scope="module")
def picks():
    rng = np.random.default_rng(11)
    return rng.choice(60_000, 200, replace=False), rng.choice(10_000, 200, replace=False)


def test_other_writers_are_accepted(setup, picks, tmp_path):
    data = setup[0]
    images = distort(data.train_images[picks[0]], seed=3)
    report = verdict(setup, images, data.train_labels[picks[0]], tmp_path)
    assert report["status"] == "accepted", report["reason"]


def test_noise_is_refused(setup, picks, tmp_path):
    report = verdict(setup, noise_images(200, 1), setup[0].train_labels[picks[0]], tmp_path)
    assert report["reason"].startswith("ink-stroke: "), report["reason"]


def test_shuffled_labels_are_refused(setup, picks, tmp_path):
    data = setup[0]
    images = distort(data.train_images[picks[0]], seed=3)
    labels = np.random.default_rng(0).permutation(data.train_labels[picks[0]])
    assert verdict(setup, images, labels, tmp_path)["reason"].startswith("label-agreement: ")


def test_leaked_test_digits_are_refused(setup, picks, tmp_path):
    data = setup[0]
    images = distort(data.train_images[picks[0]], seed=3)
    images[:3] = data.test_images[picks[1][:3]]
    assert verdict(setup, images, data.train_labels[picks[0]], tmp_path)["reason"].startswith(
        "leakage: observed 3,")
