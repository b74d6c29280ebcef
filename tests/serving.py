"""Tiny Keras models published to a temporary registry, for the HTTP service's tests."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from digits.registry import Registry
from tests.unit.test_registry import make_manifest


def save_tiny_model(path: Path, seed: int) -> Path:
    """A 784-10 softmax model with raw 0..255 input like ours; `seed` picks its weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(scaled))
    keras.Model(inputs, outputs).save(path)
    return path


def plot_png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def publish_model(
    registry: Registry, model: Path, accuracy: float = 0.98, alias: str | None = "production"
) -> str:
    """Publish `model` with two plots as a new version; returns vN."""
    source = registry.root.parent / f"source-{model.stem}"
    (source / "plots").mkdir(parents=True, exist_ok=True)
    shutil.copy(model, source / "model.keras")
    (source / "plots" / "confusion.png").write_bytes(plot_png("navy"))
    (source / "plots" / "curves.png").write_bytes(plot_png("teal"))
    try:
        return registry.publish(source, make_manifest(accuracy), alias=alias)
    finally:
        shutil.rmtree(source)


def digit_png(dark_ink: bool = False, size: tuple[int, int] = (120, 160)) -> bytes:
    """A hand-drawn-looking 7 as PNG bytes."""
    background, ink = (255, 0) if dark_ink else (0, 255)
    image = Image.new("L", size, background)
    width, height = size
    ImageDraw.Draw(image).line(
        [(width * 0.2, height * 0.2), (width * 0.8, height * 0.2), (width * 0.4, height * 0.85)],
        fill=ink,
        width=max(3, width // 10),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mnist_like(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
