"""digits' own Keras layers, registered with Keras when this module is imported.

Loading a `model.keras` that holds one needs that import (the loaders do it; the model
card tells users): `Temperature` ends every calibrated model, `RandomStrokeWidth` sits in
the augmentation of models trained with `--stroke-width`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# Added before the log: a probability that underflowed to 0 in float32 stays finite.
TINY = 1e-12


@keras.saving.register_keras_serializable(package="digits")
class Temperature(keras.layers.Layer):
    """Probabilities in, probabilities out: softmax(log(p + TINY) / temperature)."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        logits = ops.log(probabilities + TINY)
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="digits")
class RandomStrokeWidth(keras.layers.Layer):
    """Each training image's strokes made thicker or thinner by a random amount; the
    identity at inference. Images (N, 28, 28, 1), ink bright on dark.

    MNIST's pen draws strokes 2-3 pixels wide; typefaces and other pens run from
    hairlines to bold blobs, and most of the fonts benchmark's errors are those two
    (benchmarks/results.md). A `share` of the images is changed, each by an amount drawn
    from [-thinner, thicker]: k + f thicker is k grey dilations (3x3 maximum) and a
    fraction f of the next; -f is that fraction of the way to a grey erosion (3x3
    minimum). Keep `thinner` under 1: a whole erosion wipes out MNIST's thinnest strokes,
    label and all.
    """

    def __init__(self, thicker: float = 1.0, thinner: float = 0.5, share: float = 1.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.thicker, self.thinner, self.share = float(thicker), float(thinner), float(share)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        shape = (ops.shape(images)[0], 1, 1, 1)
        amount = keras.random.uniform(shape, -self.thinner, self.thicker, seed=self.seed_generator)
        if self.share < 1:  # the other images keep their strokes as drawn
            chosen = keras.random.uniform(shape, seed=self.seed_generator) < self.share
            amount = ops.where(chosen, amount, 0.0)
        eroded = -ops.max_pool(-images, 3, strides=1, padding="same")
        result = images + ops.relu(-amount) * (eroded - images)
        level = images
        for step in range(math.ceil(self.thicker)):  # a dilation for each unit begun
            dilated = ops.max_pool(level, 3, strides=1, padding="same")
            result = result + ops.clip(amount - step, 0.0, 1.0) * (dilated - level)
            level = dilated
        return result

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "thicker": self.thicker, "thinner": self.thinner,
                "share": self.share, "seed": self.seed}
