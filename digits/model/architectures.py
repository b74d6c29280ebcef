"""Architectures by name. Each takes 0..1 images (N, 28, 28) and returns class probabilities."""

from __future__ import annotations

import random
from collections.abc import Callable

import keras
from keras import layers

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.data.splits import PIXEL_SCALE
from digits.model.layers import RandomStrokeWidth


def seed_draws(seed: int) -> Callable[[], int]:
    """Seeds for each randomly initialised layer, drawn from `seed` in building order.

    Unseeded, Keras draws them from Python's global generator, which Prefect's threads also
    draw from while a flow trains, so a seed would not repeat its run. A generator of the
    model's own makes the same draws Keras makes right after set_random_seed(seed), so
    models built before this change are built again unchanged.
    """
    draws = random.Random(seed)
    return lambda: draws.randint(1, int(1e9))  # keras.random's make_default_seed


def glorot(draw: Callable[[], int]) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=draw())  # Dense's and Conv2D's default


def dropout_layer(rate: float, draw: Callable[[], int]) -> layers.Dropout:
    # Keras draws a seed only for a rate above 0: draw as it did, so the later layers' match.
    return layers.Dropout(rate, seed=draw() if rate > 0 else None)


def build_mlp(
    augment: bool = False,
    seed: int = 0,
    width: int = 128,
    depth: int = 1,
    dropout: float = 0.0,
    augment_strength: float = 1.0,
    stroke_width: float = 0.0,
) -> keras.Model:
    """The original script's model, kept as the baseline: 784-128(ReLU)-10(softmax).

    `width`, `depth` and `dropout` (tuning knobs) widen, deepen or regularise it; their
    defaults build the original layers exactly.
    """
    draw = seed_draws(seed)
    hidden = []
    for _ in range(depth):
        hidden.append(layers.Dense(width, activation="relu", kernel_initializer=glorot(draw)))
        if dropout:  # no layer at all at 0, so the original model is unchanged
            hidden.append(dropout_layer(dropout, draw))
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            *augmentation(augment, seed, augment_strength, stroke_width),
            layers.Flatten(),
            *hidden,
            layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=glorot(draw)),
        ],
        name="mlp",
    )


def conv_block(
    filters: int, kernel: int, draw: Callable[[], int], strides: int = 1
) -> list[layers.Layer]:
    # No conv bias: BatchNormalization's shift makes it redundant.
    return [
        layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_initializer=glorot(draw)),
        layers.BatchNormalization(momentum=0.9),  # statistics keep up with short runs
        layers.ReLU(),
    ]


def build_cnn(
    augment: bool = True,
    seed: int = 0,
    width: int = 32,
    depth: int = 2,
    dropout: float = 0.1,
    augment_strength: float = 1.0,
    stroke_width: float = 0.0,
    stem: str = "full",
) -> keras.Model:
    """A compact conv net: strided convolutions instead of pooling keep it cheap on CPU.

    Each of `depth` stages is a 3x3 and a strided 5x5 convolution (28 -> 14 -> 7 -> 4) with
    `width` filters doubled per stage; the defaults build 32-32 / 64-64 / 128 as before.
    `stem="strided"` makes the first 3x3 convolution stride too (28 -> 14 -> 7 -> 4 at depth
    2), so no layer works at 28x28: an epoch then costs 0.26-0.30 of the full stem's on a
    2-core CPU (benchmarks/results.md).
    """
    draw = seed_draws(seed)
    stages = []
    for stage in range(depth):
        filters = width * 2**stage
        first = 2 if stage == 0 and stem == "strided" else 1
        stages += [*conv_block(filters, 3, draw, strides=first),
                   *conv_block(filters, 5, draw, strides=2)]
        stages.append(dropout_layer(dropout, draw))
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            *augmentation(augment, seed, augment_strength, stroke_width),
            layers.Reshape((*IMAGE_SHAPE, 1)),
            *stages,
            *conv_block(width * 2**depth, 3, draw),
            layers.GlobalAveragePooling2D(),
            dropout_layer(2 * dropout, draw),
            layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=glorot(draw)),
        ],
        name="cnn",
    )


# The share of training images whose strokes change; the rest keep MNIST's own pen (all of
# them changed, at stroke width 2, cost 0.0016 of MNIST test accuracy: benchmarks/results.md).
STROKE_SHARE = 0.5


def augmentation(
    enabled: bool, seed: int, strength: float = 1.0, stroke_width: float = 0.0
) -> list[layers.Layer]:
    """Small rotations, shifts and zooms, and with `stroke_width` bolder or thinner strokes
    first; active only in training, identity at inference."""
    if not enabled or (strength == 0 and stroke_width == 0):
        return []
    shift = 0.1 * strength  # shifts and zooms of 10% at strength 1
    chosen = [layers.Reshape((*IMAGE_SHAPE, 1))]
    if stroke_width:  # half an erosion at most: MNIST's thinnest strokes survive that
        chosen.append(RandomStrokeWidth(stroke_width, min(stroke_width, 0.5), STROKE_SHARE,
                                        seed=seed + 3))
    if strength:
        chosen += [
            layers.RandomRotation(0.03 * strength, fill_mode="constant", seed=seed),  # +-11 deg
            layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom(shift, fill_mode="constant", seed=seed + 2),
        ]
    return [*chosen, layers.Reshape(IMAGE_SHAPE)]


BUILDERS: dict[str, Callable[..., keras.Model]] = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(name: str, augment: bool, seed: int, **shape: object) -> keras.Model:
    """`shape`: width, depth, dropout, augment_strength, stroke_width (and the cnn's stem);
    each left out keeps the default."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](augment=augment, seed=seed, **shape)


def average_models(members: list[keras.Model], name: str) -> keras.Model:
    """One model whose probabilities are the mean of `members`' (each takes what the
    ensemble takes). Plain layers only, so the exports stay one graph of standard ops."""
    inputs = keras.Input(members[0].input_shape[1:], name="pixels")
    # Each member in a wrapper of its own name: the ensemble's layer names must be unique.
    outputs = layers.Average()(
        [keras.Sequential([member], name=f"member_{i + 1}")(inputs) for i, member in enumerate(members)]
    )
    return keras.Model(inputs, outputs, name=name)


# (rows, columns) each copy of the image is moved by, background filling in, for each of
# digits.config.TEST_SHIFTS.
SHIFTS = {"none": [(0, 0)], "cross5": [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]}


def average_shifts(model: keras.Model, shifts: str) -> keras.Model:
    """`model` (an inference model, raw pixels in) with its probabilities averaged over the
    image moved by each of SHIFTS[shifts]: test-time averaging inside the exported graph,
    as plain pad and slice ops, so every export and server gets it."""
    if shifts == "none":
        return model
    if averages_shifts(model):
        raise ValueError(f"{model.name!r} already averages over shifts; wrap its core instead")
    inputs = keras.Input(IMAGE_SHAPE, name="pixels")
    padded = layers.ZeroPadding2D(1)(layers.Reshape((*IMAGE_SHAPE, 1))(inputs))
    # Keeping rows 1-r .. 29-r of the padded image moves its content r rows down.
    moved = [
        layers.Reshape(IMAGE_SHAPE)(layers.Cropping2D(((1 - r, 1 + r), (1 - c, 1 + c)))(padded))
        for r, c in SHIFTS[shifts]
    ]
    outputs = layers.Average()([model(image) for image in moved])
    return keras.Model(inputs, outputs, name=model.name)


def averages_shifts(model: keras.Model) -> bool:
    """Whether `model` is an `average_shifts` wrapper (its moves are Cropping2D layers),
    or wraps one (the calibrated model that training returns)."""
    inner = getattr(model, "layers", [])
    return any(isinstance(layer, layers.Cropping2D) for layer in inner) or any(
        isinstance(layer, keras.Model) and averages_shifts(layer) for layer in inner
    )


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The models `average_models` averaged, wherever `model` nests them; [the model] under
    `average_shifts` alone; [] for one model."""
    if any(isinstance(layer, layers.Average) for layer in getattr(model, "layers", [])):
        averaged = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        # Shifts average one model over moved images: an ensemble's members, if it is one.
        return (ensemble_members(averaged[0]) or averaged) if averages_shifts(model) else averaged
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model) and (members := ensemble_members(layer)):
            return members
    return []


def export_model(core: keras.Model) -> keras.Model:
    """Wrap a trained model so it takes raw 0..255 pixels, as registry models must."""
    return keras.Sequential(
        [keras.Input(IMAGE_SHAPE), layers.Rescaling(PIXEL_SCALE), core], name=core.name
    )
