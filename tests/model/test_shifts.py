"""`test_shifts`: the exported model averages its answers over moved copies of each image,
inside its own graph, so the registry's files, the exports and the server all get it."""

import keras
import numpy as np
import pytest

from digits.checks.drift import penultimate_features
from digits.config import train_config
from digits.model.architectures import SHIFTS, average_shifts, build_model, ensemble_members
from digits.model.calibration import Temperature, uncalibrated
from digits.model.export import check_exports, export_candidate, load_candidate
from digits.model.train import fit_model
from digits.registry.layout import MODEL_FILE
from tests.model.test_training_levers import small_splits


def moved(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """`images` moved down `rows` and right `cols` pixels, zeros filling in."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    return padded[:, 1 - rows:29 - rows, 1 - cols:29 - cols]


def test_the_average_is_the_mean_over_the_moved_images():
    model = build_model("cnn", augment=False, seed=0, width=4, stem="strided")
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28)).astype(np.float32)
    expected = np.mean([model.predict(moved(images, *s), verbose=0) for s in SHIFTS["cross5"]],
                       axis=0)
    averaged = average_shifts(model, "cross5")
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, atol=1e-6)
    assert ensemble_members(averaged) == [model]
    assert average_shifts(model, "none") is model


def test_a_model_that_averages_shifts_is_not_wrapped_again():
    # Wrapped twice, it would average over moves of up to two pixels: not what was asked for,
    # and a benchmark scoring a saved default that way scored a model nobody exports.
    averaged = average_shifts(build_model("cnn", augment=False, seed=0, width=4), "cross5")
    with pytest.raises(ValueError, match="already averages"):
        average_shifts(averaged, "cross5")
    # calibrated, as training returns it, the shifts are one level down: still refused
    calibrated = keras.Sequential([keras.Input((28, 28)), averaged, Temperature(2.0)])
    with pytest.raises(ValueError, match="already averages"):
        average_shifts(calibrated, "cross5")


def test_moving_one_pixel_down_moves_the_ink_down():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 5, 7] = 1
    assert moved(image, 1, 0)[0, 6, 7] == 1 and moved(image, 0, -1)[0, 5, 6] == 1


@pytest.fixture(scope="module")
def shifted():
    splits = small_splits()
    config = train_config("cnn", epochs=1, width=8, seed=3, stem="strided")
    plain = fit_model(splits, config, log=print)
    averaged = fit_model(splits, train_config("cnn", epochs=1, width=8, seed=3, stem="strided",
                                              test_shifts="cross5"), log=print)
    return splits, plain, averaged


def test_a_trained_model_with_shifts_is_the_same_model_averaged(shifted):
    splits, plain, averaged = shifted
    (core,) = ensemble_members(averaged.model)
    # the same training: the shifts only wrap the model it trains
    for trained, wrapped in zip(plain.model.get_weights(), core.get_weights(), strict=True):
        np.testing.assert_array_equal(trained, wrapped)
    # Against the wrapped model itself: with oneDNN on (as `make test` runs), two models of
    # identical weights predicted up to 9e-4 apart on this one-epoch model.
    pixels = splits.x_test * 255
    expected = np.mean([core.predict(moved(pixels, *s), verbose=0) for s in SHIFTS["cross5"]],
                       axis=0)
    np.testing.assert_allclose(uncalibrated(averaged.model).predict(pixels, verbose=0), expected,
                               atol=1e-5)
    assert averaged.epochs_run == plain.epochs_run == 1


def test_a_shifted_model_saves_loads_and_exports_with_parity(shifted, tmp_path):
    splits, _, averaged = shifted
    averaged.model.save(tmp_path / MODEL_FILE)
    loaded = load_candidate(tmp_path)
    records = export_candidate(tmp_path, splits.x_test * 255)
    assert set(records) == {"saved_model", "onnx"}
    assert check_exports(loaded, tmp_path, splits.x_test * 255)["onnx"]["max_abs_diff"] <= 1e-4
    # no augmentation left to export as random ops
    assert not any("Random" in type(layer).__name__ for layer in flat(loaded))


def test_drift_reads_the_unmoved_image_and_the_averaged_answer(shifted):
    splits, plain, averaged = shifted
    pixels = splits.x_test * 255
    features, probabilities = penultimate_features(averaged.model)(pixels)
    alone, _ = penultimate_features(plain.model)(pixels)
    np.testing.assert_allclose(features, alone, atol=1e-5)
    # The checks' probabilities are the model's before its temperature (penultimate_features).
    raw = uncalibrated(averaged.model).predict(pixels, verbose=0)
    np.testing.assert_allclose(probabilities, raw, atol=1e-5)


def test_shifts_over_members_keep_the_members_for_drift():
    splits = small_splits()
    config = train_config("cnn", epochs=1, width=8, seed=3, stem="strided", members=2,
                          test_shifts="cross5")
    assert len(ensemble_members(fit_model(splits, config, log=print).model)) == 2


def flat(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from flat(layer)
