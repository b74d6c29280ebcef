"""Outlier exposure (Hendrycks et al., 2019): training on things that are no digit.

A classifier trained on digits alone gives a letter or a smiley a digit with the
confidence it gives digits. Outlier exposure adds images that are no digit
(`digits.data.negatives`) to training, labelled NEGATIVE, with a flat target: the
cross-entropy to the uniform distribution, weighted by `exposure_weight` (the paper's 0.5;
the `cnn` preset's 1.0). The model then answers such things near flat, which
`digits.model.not_a_digit` flags.
"""

from __future__ import annotations

import keras
import numpy as np

from digits.config import NUM_CLASSES, TrainConfig
from digits.data.negatives import draw_negatives
from digits.data.splits import Splits, scale

NEGATIVE = NUM_CLASSES  # the training label of a negative: no digit is its right answer
TINY = 1e-7  # a probability's floor in the flat target's log


def exposure_loss(label_smoothing: float, weight: float):
    """Per-image loss for digit labels 0-9 and NEGATIVE: the (smoothed) cross-entropy for
    a digit, `weight` times the cross-entropy to a flat answer for a negative."""

    def digits_crossentropy(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        negative = labels >= NUM_CLASSES
        targets = keras.ops.one_hot(keras.ops.where(negative, 0, labels), NUM_CLASSES)
        digit = keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=label_smoothing
        )
        flat = -keras.ops.mean(keras.ops.log(keras.ops.clip(y_pred, TINY, 1.0)), axis=-1)
        return keras.ops.where(negative, weight * flat, digit)

    return digits_crossentropy


class DigitAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Accuracy over the digits of a batch: a negative has no right answer to count."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        digit = keras.ops.cast(keras.ops.reshape(y_true, (-1,)) < NUM_CLASSES, "float32")
        return super().update_state(y_true, y_pred, sample_weight=digit)


def with_negatives(splits: Splits, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels, and outlier exposure's negatives (label NEGATIVE),
    outlier_exposure of them per training image, drawn with the run's seed."""
    count = round(config.outlier_exposure * len(splits.y_train))
    if not count:
        return splits.x_train, splits.y_train
    negatives = scale(draw_negatives(count, config.seed))
    return (np.concatenate([splits.x_train, negatives]),
            np.concatenate([splits.y_train, np.full(count, NEGATIVE, splits.y_train.dtype)]))
