"""Exports: the inference graph of a registry model as a SavedModel and an ONNX file.

Both are written beside `model.keras` in a candidate folder, so the registry lists and
checksums them like every other file of the version. Before a version may be promoted,
`check_exports` runs the `.keras`, SavedModel and ONNX models on the same test digits;
they must pick the same digit for every image and agree on every probability within
PARITY_ATOL, else ExportError names the format.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from digits.errors import ExportError
from digits.model.layers import RandomStrokeWidth  # importing registers digits' layers
from digits.registry.layout import MODEL_FILE, ONNX_FILE, SAVED_MODEL_DIR

PARITY_ROWS = 1000  # test digits each export is checked on
PARITY_ATOL = 1e-4  # largest difference in any probability between an export and Keras
INPUT_NAME = "pixels"  # the ONNX input: (N, 28, 28) float32, raw 0..255
# Random augmentation layers are the identity at inference, but they export as random ops:
# onnxruntime cannot load `StatelessRandomUniformV2`, and the graph would be bigger for
# nothing. RandomCrop is not listed on purpose: at inference it crops, so it is no identity.
AUGMENTATION = (
    layers.RandomRotation,
    layers.RandomTranslation,
    layers.RandomZoom,
    layers.RandomFlip,
    layers.RandomContrast,
    layers.RandomBrightness,
    RandomStrokeWidth,
)


def inference_model(model: keras.Model) -> keras.Model:
    """`model` without its augmentation layers: the same layer objects, so the same weights.

    Only Sequential models (ours, nested ones included) are rebuilt; any other model is
    returned as it is, and the parity check then says whether its exports work.
    """
    if not isinstance(model, keras.Sequential):
        return model
    kept = [
        inference_model(layer) if isinstance(layer, keras.Sequential) else layer
        for layer in model.layers
        if not isinstance(layer, AUGMENTATION)
    ]
    inputs = keras.Input(model.input_shape[1:], name=INPUT_NAME)
    stripped = keras.Sequential([inputs, *kept], name=model.name)
    # Keras exports only models that have been called once.
    stripped(np.zeros((1, *model.input_shape[1:]), dtype=np.float32))
    return stripped


def write_saved_model(model: keras.Model, path: Path) -> None:
    try:
        model.export(str(path), format="tf_saved_model", verbose=False)
    except Exception as error:
        raise ExportError(f"saved_model export failed: {one_line(error)}") from error


def write_onnx(model: keras.Model, path: Path) -> None:
    try:
        with warnings.catch_warnings():  # tf2onnx's numpy-2 shim warns about np.object
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(path), format="onnx", verbose=False)
    except Exception as error:
        raise ExportError(f"onnx export failed: {one_line(error)}") from error


def load_candidate(build_dir: Path) -> keras.Model:
    """The model as published: `build_dir/model.keras`, loaded back like any consumer would."""
    return keras.saving.load_model(build_dir / MODEL_FILE, safe_mode=True)


def write_exports(model: keras.Model, build_dir: Path) -> dict[str, float]:
    """Write `saved_model/` and `model.onnx` of `model` into `build_dir`; return the seconds
    each took."""
    model = inference_model(model)
    seconds = {}
    for name, write, file in (
        ("saved_model", write_saved_model, SAVED_MODEL_DIR),
        ("onnx", write_onnx, ONNX_FILE),
    ):
        started = time.perf_counter()
        write(model, build_dir / file)
        seconds[name] = round(time.perf_counter() - started, 2)
    return seconds


def run_saved_model(path: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf  # loaded here: only the parity check needs TensorFlow's loader

    loaded = tf.saved_model.load(str(path))  # kept in a name: its variables die with it
    return np.asarray(loaded.serve(images))


def onnx_session(model: str | bytes | Path):
    """An onnxruntime session on the CPU for a file path or the file's bytes."""
    import onnxruntime

    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def compare(name: str, file: str, expected: np.ndarray, actual: np.ndarray) -> dict:
    """The parity record of one export; ExportError naming the format if it disagrees."""
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        raise ExportError(
            f"{name} export gives shape {actual.shape}, model.keras {expected.shape}"
        )
    if not np.isfinite(actual).all():
        raise ExportError(f"{name} export gives non-finite probabilities")
    diff = float(np.abs(actual - expected).max())
    disagree = int((actual.argmax(axis=1) != expected.argmax(axis=1)).sum())
    if disagree or diff > PARITY_ATOL:
        raise ExportError(
            f"{name} export disagrees with model.keras on {len(expected)} test digits: "
            f"{disagree} different digits, max probability difference {diff:.2e} "
            f"(allowed {PARITY_ATOL:g})"
        )
    return {"file": file, "rows": len(expected), "max_abs_diff": diff, "agree": True}


def check_exports(model: keras.Model, build_dir: Path, images: np.ndarray) -> dict:
    """Run `model` (model.keras), the SavedModel and the ONNX file in `build_dir` on up to
    PARITY_ROWS `images` (raw 0..255); return the parity record per format."""
    batch = np.asarray(images[:PARITY_ROWS], dtype=np.float32)
    if not len(batch):
        raise ExportError("no test digits to check the exports on")
    expected = np.asarray(model.predict(batch, batch_size=256, verbose=0))
    runs = {
        "saved_model": (SAVED_MODEL_DIR, lambda path: run_saved_model(path, batch)),
        "onnx": (ONNX_FILE, lambda path: run_onnx(onnx_session(path), batch)),
    }
    records = {}
    for name, (file, run) in runs.items():
        try:
            actual = run(build_dir / file)
        except Exception as error:  # a file that does not load or run is a failed export
            raise ExportError(f"{name} export does not run: {one_line(error)}") from error
        records[name] = compare(name, file, expected, actual)
    return records


def export_candidate(build_dir: Path, images: np.ndarray) -> dict:
    """Write both exports into the candidate folder and check them; return the parity record."""
    model = load_candidate(build_dir)
    seconds = write_exports(model, build_dir)
    records = check_exports(model, build_dir, images)
    return {name: {**record, "export_seconds": seconds[name]} for name, record in records.items()}


def one_line(error: BaseException) -> str:
    """An error's first line, shortened: tf2onnx and TensorFlow raise pages of graph dumps."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
