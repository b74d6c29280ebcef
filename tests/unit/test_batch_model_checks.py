"""The checks that need the production model, with a small model trained on generated digits:
digits from another domain drift in feature space, shuffled labels disagree with the model."""

import numpy as np
import pytest

from digits.checks.batch import check_batch, report_of
from digits.checks.measure import reference_of
from digits.checks.settings import BatchChecks
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


# --- feedback batches: agreement on the confirmed rows, corrections plausible -----------


def feedback_verdict(setup, images, labels, confirmed, tmp_path):
    reference, model = setup
    source = Source("fb", images, np.asarray(labels, np.int64), [], "feedback",
                    np.asarray(confirmed, bool))
    checks = check_batch(source, reference, model, CONFIG, tmp_path)
    return report_of(checks), {check.name: check for check in checks}


def second_choices(setup, images):
    """The digit the model finds second most probable: what a person corrects a
    confusable digit to."""
    from digits.checks import drift

    _, probabilities = drift.penultimate_features(setup[1])(images)
    return np.argsort(probabilities, axis=1)[:, -2]


def test_plausible_corrections_and_agreeing_confirmations_are_accepted(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    labels = labels.astype(np.int64)
    confirmed = np.arange(60) < 15
    labels[~confirmed] = second_choices(setup, images[~confirmed])  # the model disagrees
    report, checks = feedback_verdict(setup, images, labels, confirmed, tmp_path)
    assert report["status"] == "accepted", report["reason"]
    assert checks["label-agreement"].observed >= 0.9
    assert "on the 15 confirmed rows" in checks["label-agreement"].note
    assert checks["correction-plausibility"].observed == 1.0
    # As a plain file, the same labels are 75% disagreement.
    report, _ = verdict(setup, images, labels, tmp_path)
    assert report["reason"].startswith("label-agreement: observed "), report["reason"]


def test_shuffled_labels_claiming_to_be_corrections_fail_plausibility(setup, tmp_path):
    # A hostile file: origin feedback, nothing confirmed, so label agreement is skipped.
    images, labels = make_digits(60, 5, make_prototypes())
    shuffled = np.random.default_rng(0).permutation(labels)
    report, checks = feedback_verdict(setup, images, shuffled, np.zeros(60, bool), tmp_path)
    assert checks["label-agreement"].observed is None
    assert checks["label-agreement"].note == ("skipped: 0 confirmed rows, fewer than "
                                              "min_feedback_rows (10)")
    assert report["reason"].startswith("correction-plausibility: observed "), report["reason"]


def test_a_few_true_confirmations_do_not_carry_shuffled_corrections(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    labels = labels.astype(np.int64)
    confirmed = np.arange(60) < 12
    labels[12:] = np.random.default_rng(1).permutation(labels[12:])
    report, checks = feedback_verdict(setup, images, labels, confirmed, tmp_path)
    assert checks["label-agreement"].passed
    assert report["reason"].startswith("correction-plausibility: observed "), report["reason"]


def test_confirmations_the_model_disagrees_with_fail_label_agreement(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    shuffled = np.random.default_rng(0).permutation(labels)
    report, _ = feedback_verdict(setup, images, shuffled, np.ones(60, bool), tmp_path)
    assert report["reason"].startswith("label-agreement: observed "), report["reason"]


def test_too_few_corrections_skip_plausibility_with_a_note(setup, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    confirmed = np.arange(60) >= CONFIG.min_feedback_rows - 1
    report, checks = feedback_verdict(setup, images, labels, confirmed, tmp_path)
    assert report["status"] == "accepted", report["reason"]
    assert checks["correction-plausibility"].observed is None
    assert checks["correction-plausibility"].note == (
        "skipped: 9 corrected rows, fewer than min_feedback_rows (10)")


def test_a_smallest_batch_with_few_confirmations_is_judged_on_its_corrections(setup, tmp_path):
    images, labels = make_digits(CONFIG.min_rows, 5, make_prototypes())
    confirmed = np.arange(CONFIG.min_rows) < CONFIG.min_feedback_rows - 1
    _, checks = feedback_verdict(setup, images, labels, confirmed, tmp_path)
    assert checks["label-agreement"].observed is None
    assert checks["correction-plausibility"].observed is not None


def test_features_come_from_a_functional_model_too(tmp_path):
    """A functional Keras model lists its InputLayer among its layers (a Sequential one does
    not); the features walk must step over it."""
    import keras

    from digits.checks.drift import penultimate_features

    inputs = keras.Input((28, 28))
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    images = make_digits(8, 3, make_prototypes())[0]
    features, probabilities = penultimate_features(model)(images)
    assert features.shape == (8, 16)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-5)
