"""Calibration: the expected calibration error, the temperature fitted to it, and the
Temperature layer that carries it in a saved model."""

import keras
import numpy as np
import pytest

from digits.model.calibration import (
    Temperature,
    calibrate,
    fit_temperature,
    scale,
    uncalibrated,
)
from digits.model.evaluate import expected_calibration_error


def answers(top: list[float], predicted: list[int]) -> np.ndarray:
    """Rows of 10 probabilities: `top` on the predicted digit, the rest shared evenly."""
    probs = np.repeat((1 - np.array(top))[:, None] / 9, 10, axis=1)
    probs[np.arange(len(top)), predicted] = top
    return probs


def test_ece_by_hand():
    # Bin (14/15, 1]: 0.95 twice, one right: |0.5 - 0.95| for half the rows.
    # Bin (8/15, 9/15]: 0.55 twice, both right: |1 - 0.55| for the other half.
    probs = answers([0.95, 0.95, 0.55, 0.55], [3, 3, 7, 7])
    labels = np.array([3, 4, 7, 7])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.45)
    # Right as often as it says: 0.75 in one bin, three of four right.
    assert expected_calibration_error(labels, answers([0.75] * 4, [3, 3, 7, 7])) == 0.0
    # A confidence on a bin's upper edge (0.6 = 9/15) falls in that bin, not the next: apart,
    # a right 0.6 and a wrong 0.61 are 0.4 and 0.61 off; together 0.5 against 0.605.
    edge = answers([0.6, 0.61], [3, 3])
    assert expected_calibration_error(np.array([3, 4]), edge) == pytest.approx((0.4 + 0.61) / 2)


def sampled(sharpness: float, rows: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits): those probabilities are calibrated; the ones
    returned are softmax(sharpness * logits), over-confident above 1, under below."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (rows, 10))
    true = scale(np.exp(logits), 1.0)
    labels = np.array([rng.choice(10, p=row) for row in true])
    return scale(true, 1 / sharpness), labels


@pytest.mark.parametrize("sharpness", [3.0, 1 / 3])
def test_the_fitted_temperature_undoes_over_and_under_confidence(sharpness):
    probs, labels = sampled(sharpness)
    temperature = fit_temperature(probs, labels)
    assert temperature == pytest.approx(sharpness, rel=0.1)  # > 1 over-confident, < 1 under
    calibrated = scale(probs, temperature)
    before = expected_calibration_error(labels, probs)
    assert expected_calibration_error(labels, calibrated) < min(0.03, before / 3)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probs.argmax(axis=1))


def test_the_temperature_layer_saves_loads_and_keeps_every_answer(tmp_path):
    keras.utils.set_random_seed(0)
    core = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")], name="mlp")
    images = np.random.default_rng(1).uniform(0, 255, (64, 28, 28)).astype(np.float32)
    labels = np.arange(64) % 10
    model, record = calibrate(core, core.predict(images, verbose=0), labels)
    assert record["temperature"] == model.layers[-1].temperature
    assert record["validation_nll_calibrated"] <= record["validation_nll"]
    assert uncalibrated(model) is core and uncalibrated(core) is core
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(loaded.layers[-1], Temperature)
    assert loaded.layers[-1].temperature == record["temperature"]
    raw = core.predict(images, verbose=0)
    calibrated = loaded.predict(images, verbose=0)
    np.testing.assert_allclose(calibrated, scale(raw, record["temperature"]), atol=1e-5)
    # A temperature keeps the order of every row's answers: the digit never changes.
    np.testing.assert_array_equal(calibrated.argmax(axis=1), raw.argmax(axis=1))


def test_the_batch_checks_judge_the_scores_before_the_temperature():
    """min_correction_probability was set on the model's own probabilities: a sharpening
    temperature (T < 1) pushed true corrections under it and quarantined a feedback batch
    the same loop passed before calibration (tests/integration/test_feedback_loop.py)."""
    from digits.checks.drift import penultimate_features

    keras.utils.set_random_seed(0)
    core = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")], name="mlp")
    sharpened = keras.Sequential([keras.Input((28, 28)), core, Temperature(0.25)])
    images = np.random.default_rng(2).uniform(0, 255, (16, 28, 28)).astype(np.float32)
    features, probabilities = penultimate_features(sharpened)(images)
    np.testing.assert_allclose(probabilities, core.predict(images, verbose=0), atol=1e-6)
    assert features.shape == (16, 784)
