"""The checks that need the production model, with a small model trained on generated digits:
digits from another domain drift in feature space, shuffled labels disagree with the model."""

import numpy as np
import pytest

from digits.checks.batch import check_batch, reference_of, report_of
from digits.config import BatchChecks
from digits.data.intake import Source
from tests.helpers.synth import make_digits, make_prototypes

pytestmark = pytest.mark.slow  # each test trains a Keras model

CONFIG = BatchChecks()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import keras

    from digits.registry.load import load_model
    from digits.registry.store import Registry

    prototypes = make_prototypes()
    train_x, train_y = make_digits(1200, 1, prototypes)
    test_x, _ = make_digits(300, 2, prototypes)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train_x, train_y.astype("int64"), epochs=5, batch_size=64, verbose=0)
    source = tmp_path_factory.mktemp("model")
    model.save(source / "model.keras")
    root = tmp_path_factory.mktemp("registry")
    Registry(root).publish(source, {"model": "mlp", "metrics": {"accuracy": 0.99}})
    return reference_of(train_x, train_y, test_x, [], CONFIG), load_model("production", root)


def verdict(setup, images, labels, tmp_path):
    reference, model = setup
    checks = check_batch(Source("b", images, np.asarray(labels, np.int64), []), reference,
                         model, CONFIG, tmp_path)
    return report_of(checks), {check.name: check for check in checks}


def test_new_digits_of_the_same_domain_are_accepted(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    report, checks = verdict(setup, images, labels, tmp_path)
    assert report["status"] == "accepted", report["reason"]
    assert checks["label-agreement"].observed >= 0.9
    assert checks["feature-drift"].observed < CONFIG.max_domain_auc


def test_shuffled_labels_fail_label_agreement(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    report, checks = verdict(setup, images, np.random.default_rng(0).permutation(labels),
                             tmp_path)
    assert report["reason"].startswith("label-agreement: observed "), report["reason"]
    assert checks["feature-drift"].passed  # the images themselves are fine


def test_another_domain_fails_feature_drift(setup, tmp_path):
    # Other stroke patterns with the same ink statistics: only the features tell.
    images, labels = make_digits(60, 5, make_prototypes(seed=7))
    report, checks = verdict(setup, images, labels, tmp_path)
    assert checks["ink-stroke"].passed
    assert report["reason"].startswith("feature-drift: observed "), report["reason"]
