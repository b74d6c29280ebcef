"""Tiny Keras and ONNX models published to a temporary registry, for the HTTP service's tests,
with or without a "not a digit" rule in the version's manifest."""

from __future__ import annotations

import io
import os
import shutil
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.model.not_a_digit import SPREAD, spread
from digits.registry.store import Registry
from tests.helpers.manifests import make_manifest


def save_tiny_model(path: Path, seed: int) -> Path:
    """A 784-10 softmax model with raw 0..255 input like ours; `seed` picks its weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(scaled))
    keras.Model(inputs, outputs).save(path)
    return path


def write_dense_onnx(path: Path, kernel: np.ndarray, bias: np.ndarray) -> Path:
    """x / 255, one dense layer and softmax (what save_tiny_model's model computes) as ONNX
    at `path`: served by onnxruntime, with no TensorFlow in the service or the test."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.array([-1, 784], np.int64), "shape"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(kernel.astype(np.float32), "kernel"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Reshape", ["pixels", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "kernel"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, path)
    return path


def save_tiny_onnx(folder: Path, seed: int) -> Path:
    """`folder` to publish, holding the same kind of model as save_tiny_model's, with
    weights from numpy, as model.onnx. The service loads a version's ONNX export first, so
    neither it nor the test imports TensorFlow (~20 s of a test's start); model.keras, which
    the registry requires, is a stand-in that is never loaded."""
    return save_dense_onnx(folder, *tiny_weights(seed), f"a stand-in {seed}")


def tiny_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """save_tiny_onnx's kernel (784, 10) and bias (10,) for `seed`."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, (784, 10)), rng.normal(0, 0.1, 10)


def dense_probabilities(kernel: np.ndarray, bias: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """What write_dense_onnx's model answers for (N, 28, 28) pixels 0..255, in numpy."""
    logits = pixels.reshape(len(pixels), -1) / 255 @ kernel + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def save_dense_onnx(folder: Path, kernel: np.ndarray, bias: np.ndarray, note: str) -> Path:
    """`folder` to publish: write_dense_onnx's model as model.onnx, beside the stand-in
    model.keras that the registry requires (`note` its text: never loaded)."""
    folder.mkdir(parents=True)
    write_dense_onnx(folder / "model.onnx", kernel, bias)
    (folder / "model.keras").write_bytes(f"{note}: the ONNX export is served".encode())
    return folder


def save_template_onnx(folder: Path, template: np.ndarray, digit: int) -> Path:
    """A model sure of `digit` for an image like `template` ((28, 28) ink 0..1) and unsure
    of anything else: `digit`'s logit adds the ink on the template's strokes and takes away
    the ink off them, the other logits are 0, so an image that misses the strokes gets
    1/9 (or less) for every digit, and a "not a digit" rule at 0.5 flags it."""
    strokes = np.where(template.ravel() > 0.3, 1.0, -1.0)
    kernel = np.zeros((template.size, 10))
    kernel[:, digit] = 0.2 * strokes  # a drawn 7 like the template: ~66 ink on its strokes
    return save_dense_onnx(folder, kernel, np.zeros(10), f"a template of {digit}")


def not_a_digit_rule(threshold: float, rule: str = SPREAD) -> dict:
    """A version's "not a digit" block, as training records it (digits.model.not_a_digit.
    fit_rule): answers whose spread (or, with rule TOP, as versions published before the
    spread, whose top probability) is under `threshold` are flagged."""
    return {"rule": rule, "threshold": threshold, "method": "chosen by a test",
            "fitted_on": "validation", "rows": 1, "flagged_validation": 0.0}


def rule_between(flagged: np.ndarray, kept: np.ndarray) -> dict:
    """The rule that flags the answers `flagged` and keeps `kept` ((N, 10) probabilities
    each): its threshold halfway between their spreads."""
    low, high = float(spread(flagged).max()), float(spread(kept).min())
    assert low < high, f"no threshold flags spreads up to {low} and keeps {high}"
    return not_a_digit_rule((low + high) / 2)


def plot_png(colour: str) -> bytes:
    return png_bytes(Image.new("RGB", (64, 48), colour))


def publish_model(
    registry: Registry, model: Path, accuracy: float = 0.98, alias: str | None = "production",
    not_a_digit: dict | None = None,
) -> str:
    """Publish `model` (a .keras file, or a folder such as save_tiny_onnx's) with two plots
    as a new version, its manifest holding the rule `not_a_digit` if given (not_a_digit_rule;
    without one, as versions published before the rule, nothing is flagged); returns vN."""
    source = registry.root.parent / f"source-{model.stem}"
    if model.is_dir():
        shutil.copytree(model, source, dirs_exist_ok=True)
    else:
        source.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, source / "model.keras")
    (source / "plots").mkdir(exist_ok=True)
    (source / "plots" / "confusion.png").write_bytes(plot_png("navy"))
    (source / "plots" / "curves.png").write_bytes(plot_png("teal"))
    manifest = make_manifest(accuracy)
    if not_a_digit is not None:
        manifest["not_a_digit"] = not_a_digit
    try:
        return registry.publish(source, manifest, alias=alias)
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
    return png_bytes(image)


def mnist_like(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28)).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def claimed_size_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height: a decompression bomb's first bytes."""
    data = png_bytes(Image.new("L", (8, 8)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:8] + header + data[33:]  # signature, new IHDR, the rest as it was


def palette_png(side: int) -> bytes:
    """A side x side "7" in a two-colour palette with one colour transparent: a few KB that
    decode to side² pixels (the shape of the issue's 28 KB, 1 GiB upload)."""
    image = Image.new("P", (side, side), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    ImageDraw.Draw(image).line(
        [(side * 0.2, side * 0.2), (side * 0.8, side * 0.2), (side * 0.4, side * 0.85)],
        fill=1, width=max(3, side // 10),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0, optimize=True)
    return buffer.getvalue()


def replace_file(path: Path, text: str) -> None:
    """Atomically, as the registry does: the service must never read a half-written file."""
    temp = path.with_name(f".{path.name}.test")
    temp.write_text(text)
    os.replace(temp, path)


FOLLOW_S = 5.0  # the promise: answers come from a new target within 5 s


# The first load of a service: a Keras model imports TensorFlow, seconds on a busy machine;
# the 5 s promise is for following a new target once serving.
FIRST_LOAD_S = 60.0


def wait_until(check, what: str, timeout: float = FOLLOW_S):
    """Poll `check` until it returns something true (and return it), or fail the test."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return result


LOCAL_URL = "http://127.0.0.1:8000"  # the service's own origin, as the page sends it


@contextmanager
def serving(registry: Registry, **kwargs):
    """`digits serve`'s app on `registry` (`create_app`'s options in `kwargs`), in-process
    with FastAPI's TestClient on the service's own origin, once its first model serves."""
    from fastapi.testclient import TestClient

    from digits.serving.app import create_app

    with TestClient(create_app(registry, poll_s=0.05, **kwargs), base_url=LOCAL_URL) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the first model",
                   FIRST_LOAD_S)
        yield client
