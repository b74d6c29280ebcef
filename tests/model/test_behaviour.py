"""Behavioural tests of the architectures: capacity, outputs, invariances, export."""

from pathlib import Path

import keras
import numpy as np
import pytest

from digits.config import train_config
from digits.data.splits import Splits
from digits.model.architectures import build_model, export_model
from digits.model.train import fit_model
from tests.helpers.synth import make_digits, make_prototypes


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_overfits_64_images(name):
    # Digit-like images with shuffled labels: only memorisation can fit them.
    images, _ = make_digits(64, seed=5, prototypes=make_prototypes())
    x = images.astype(np.float32) / 255
    y = np.random.default_rng(0).permutation(np.resize(np.arange(10), 64)).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = build_model(name, augment=False, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=100, batch_size=64, verbose=0, callbacks=[StopWhenMemorised(x, y)])
    predictions = model.predict(x, verbose=0).argmax(axis=1)
    assert (predictions == y).mean() == 1.0


class StopWhenMemorised(keras.callbacks.Callback):
    """End the fit at the first epoch after which the model, in inference mode, gets every
    image right: the test asks whether it can memorise, not how long it takes."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("accuracy", 0) == 1.0:  # cheap first test, in training mode
            predictions = self.model.predict(self.x, verbose=0).argmax(axis=1)
            self.model.stop_training = bool((predictions == self.y).all())


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_exported_model_takes_raw_pixels_and_returns_probabilities(name, tmp_path):
    exported = export_model(build_model(name, augment=True, seed=0))
    raw = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    probabilities = exported.predict(raw, verbose=0)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    exported.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(raw, verbose=0), probabilities, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_augmentation_is_inactive_at_inference(name):
    augmented = build_model(name, augment=True, seed=0, stroke_width=1.0)
    plain = build_model(name, augment=False, seed=1)  # other initial weights, replaced below
    # The augmentation layers come first; the rest of the two models is the same network.
    extra = len(augmented.layers) - len(plain.layers)
    assert extra > 0 and all(
        type(a) is type(b) for a, b in zip(augmented.layers[extra:], plain.layers)
    )
    for source, target in zip(augmented.layers[extra:], plain.layers):
        target.set_weights(source.get_weights())
    raw = np.random.default_rng(1).integers(0, 256, (8, 28, 28)).astype(np.uint8)
    exported, reference = export_model(augmented), export_model(plain)

    first = exported.predict(raw, verbose=0)
    np.testing.assert_allclose(exported.predict(raw, verbose=0), first, atol=1e-6)
    np.testing.assert_allclose(first, reference.predict(raw, verbose=0), atol=1e-5)
    # ...while in training the same layers do change the output, so the checks above bite.
    training = np.asarray(exported(raw.astype(np.float32), training=True))
    assert np.abs(training - first).max() > 1e-3


def test_mlp_is_the_original_784_128_10():
    model = build_model("mlp", augment=False, seed=0)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [128, 10]
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10


def test_same_seed_same_model():
    rng = np.random.default_rng(2)
    x = rng.random((200, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 200).astype(np.int64)
    splits = Splits(x[:160], y[:160], x[160:], y[160:], x[160:], y[160:])
    config = train_config("cnn", epochs=1, batch_size=32)
    first = fit_model(splits, config, log=lambda _: None).model.predict(x[:8], verbose=0)
    second = fit_model(splits, config, log=lambda _: None).model.predict(x[:8], verbose=0)
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.data
def test_cnn_predictions_stable_under_one_pixel_shifts():
    from digits.data.ingest import load_mnist
    from digits.data.splits import preprocess_data

    data = load_mnist(None, Path("data"))
    splits = preprocess_data(data, validation_size=1000, seed=0)
    small = Splits(splits.x_train[:12000], splits.y_train[:12000], splits.x_val,
                   splits.y_val, splits.x_test, splits.y_test)
    # Without outlier exposure's negatives: the moves' stability is the network's (and
    # 3,600 negatives drawn would double the test's cost).
    config = train_config("cnn", epochs=1, outlier_exposure=0.0)
    model = fit_model(small, config, log=lambda _: None).model
    images = data.test_images[:1000]
    base = model.predict(images, verbose=0).argmax(axis=1)
    assert (base == data.test_labels[:1000]).mean() > 0.9  # the model learned something
    # The bar sits between the two kinds of network, clear of both: one epoch of this cnn
    # keeps 0.969-0.987 of its answers per move (2-core AVX2 EPYC, where the 0.97 bar before
    # failed by one image), a dense network of the same accuracy (mlp, 3 epochs, 0.934)
    # 0.884-0.923 (benchmarks/results.md, seventh session).
    for axis in (1, 2):
        for step in (-1, 1):
            shifted = model.predict(np.roll(images, step, axis=axis), verbose=0).argmax(axis=1)
            assert (shifted == base).mean() >= 0.95, (axis, step)
