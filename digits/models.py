"""Architectures by name. Each takes 0..1 images (N, 28, 28) and returns class probabilities."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.preprocess import PIXEL_SCALE


def build_mlp(augment: bool = False, seed: int = 0) -> keras.Model:
    """The original script's model, kept as the baseline: 784-128(ReLU)-10(softmax)."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            *augmentation(augment, seed),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mlp",
    )


def conv_block(filters: int, kernel: int, strides: int = 1) -> list[layers.Layer]:
    # No conv bias: BatchNormalization's shift makes it redundant.
    return [
        layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9),  # statistics keep up with short runs
        layers.ReLU(),
    ]


def build_cnn(augment: bool = True, seed: int = 0) -> keras.Model:
    """A compact conv net: strided convolutions instead of pooling keep it cheap on CPU."""
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            *augmentation(augment, seed),
            layers.Reshape((*IMAGE_SHAPE, 1)),
            *conv_block(32, 3),
            *conv_block(32, 5, strides=2),  # 14x14
            layers.Dropout(0.1),
            *conv_block(64, 3),
            *conv_block(64, 5, strides=2),  # 7x7
            layers.Dropout(0.1),
            *conv_block(128, 3),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="cnn",
    )


def augmentation(enabled: bool, seed: int) -> list[layers.Layer]:
    """Small rotations, shifts and zooms; active only in training, identity at inference."""
    if not enabled:
        return []
    return [
        layers.Reshape((*IMAGE_SHAPE, 1)),
        layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # about +-11 degrees
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        layers.Reshape(IMAGE_SHAPE),
    ]


BUILDERS: dict[str, Callable[..., keras.Model]] = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(name: str, augment: bool, seed: int) -> keras.Model:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](augment=augment, seed=seed)


def export_model(core: keras.Model) -> keras.Model:
    """Wrap a trained model so it takes raw 0..255 pixels, as registry models must."""
    return keras.Sequential(
        [keras.Input(IMAGE_SHAPE), layers.Rescaling(PIXEL_SCALE), core], name=core.name
    )
