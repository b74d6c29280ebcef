"""What `fit_model` reports about a run matches the model it returns."""

import random

import numpy as np

from digits.config import train_config
from digits.data.splits import Splits
from digits.model.train import build_for, fit_model, seed_everything
from tests.helpers.synth import make_digits, make_prototypes


def noisy_validation() -> tuple[Splits, np.ndarray, np.ndarray]:
    """Learnable training digits, but noise images with random labels for validation: the
    validation accuracy drifts as training reshapes the model and does not peak last."""
    x, y = make_digits(600, seed=1, prototypes=make_prototypes())
    noise = np.random.default_rng(2).integers(0, 256, (200, 28, 28)).astype(np.uint8)
    random_labels = np.random.default_rng(3).integers(0, 10, 200)
    splits = Splits(x.astype(np.float32) / 255, y.astype(np.int64),
                    noise.astype(np.float32) / 255, random_labels,
                    noise.astype(np.float32) / 255, random_labels)
    return splits, noise, random_labels


def test_best_epoch_names_the_epoch_whose_weights_were_kept():
    splits, noise, random_labels = noisy_validation()
    # Patience covers every epoch, so training never stops early.
    config = train_config("mlp", epochs=6, patience=6, learning_rate=1e-4)

    trained = fit_model(splits, config, log=lambda _: None)

    accuracy = trained.history["val_accuracy"]
    assert trained.epochs_run == 6
    best = int(np.argmax(accuracy)) + 1  # first maximum: Keras counts only a strict gain
    assert best != trained.epochs_run, f"the case must peak before the end: {accuracy}"
    assert trained.best_epoch == best
    kept = (trained.model.predict(noise, verbose=0).argmax(axis=1) == random_labels).mean()
    assert abs(kept - accuracy[best - 1]) < 1e-6
    assert abs(kept - accuracy[-1]) > 1e-6  # so the check above tells the epochs apart


def test_patience_0_runs_every_epoch_and_keeps_the_last_weights():
    splits, noise, random_labels = noisy_validation()
    config = train_config("mlp", epochs=6, patience=0, learning_rate=1e-4)

    trained = fit_model(splits, config, log=lambda _: None)

    accuracy = trained.history["val_accuracy"]
    assert trained.epochs_run == trained.best_epoch == 6
    assert max(accuracy) > accuracy[-1], f"the case must peak before the end: {accuracy}"
    kept = (trained.model.predict(noise, verbose=0).argmax(axis=1) == random_labels).mean()
    assert abs(kept - accuracy[-1]) < 1e-6


def test_a_seed_builds_the_same_model_whatever_else_draws_from_pythons_generator():
    # Prefect's threads draw from Python's global generator while a flow trains (websocket
    # keep-alives, jittered intervals): a model must not take its initial weights from it.
    def weights(config, draw_between: bool):
        seed_everything(config.seed)
        if draw_between:
            random.random()
        # variables, not weights: with Dropout's and augmentation's generator states
        return [v.numpy() for v in build_for(config).variables]

    for config in (train_config("cnn", width=4), train_config("mlp", depth=2, dropout=0.1)):
        alone, disturbed = weights(config, False), weights(config, True)
        for a, b in zip(alone, disturbed, strict=True):
            np.testing.assert_array_equal(a, b)
