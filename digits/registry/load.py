"""Loading a registry version: the one home for it. `digits.load`, `digits predict`, the
HTTP service, evaluation, the batch checks and the drift of served traffic all load here.

Every loader verifies the version first and then loads exactly the bytes it checked: the
ONNX export on onnxruntime when the version has one (no TensorFlow imported), else the
.keras model in safe mode. Neither runtime is imported before it is needed.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from digits.config import IMAGE_SHAPE, PRODUCTION_ALIAS
from digits.data.images import load_inputs
from digits.environment import PIPELINE_HINT, import_keras_quietly
from digits.errors import RegistryError, UsageError
from digits.files import sha256_bytes
from digits.model.not_a_digit import flags
from digits.registry.layout import MODEL_FILE, ONNX_FILE
from digits.registry.location import AnyRegistry, open_registry
from digits.registry.versions import read_manifest

LATEST = "latest"  # the newest version, unless an alias of that name exists


@dataclass(frozen=True)
class Predictor:
    """A verified registry version, ready to classify (N, 28, 28) float32 pixels 0..255.

    The one predictor type: the CLI, the flow's evaluation and the HTTP service use it.
    """

    version: str
    ref: str
    backend: Literal["onnx", "keras"]
    run: Callable[[np.ndarray], Any]
    manifest: dict = field(default_factory=dict, compare=False, repr=False)

    def not_a_digit(self, probabilities: np.ndarray) -> np.ndarray:
        """Which of `predict`'s answers the version's rule flags as not a digit (its
        manifest's `not_a_digit`; nothing for versions published before the rule)."""
        return flags(probabilities, self.manifest.get("not_a_digit"))

    def answers(self, images: np.ndarray) -> list[dict]:
        """One whole answer an image, in input order, as plain Python (JSON as it is):
        `digit` (the likeliest: the closest one when flagged), its `probability`, the ten
        `probabilities` of `predict`, and `not_a_digit` (the version's rule)."""
        probabilities = self.predict(images)
        flagged = self.not_a_digit(probabilities).tolist()
        digits = probabilities.argmax(axis=1).tolist()
        return [{"digit": digit, "probability": row[digit], "probabilities": row,
                 "not_a_digit": flag}
                for digit, row, flag in zip(digits, probabilities.tolist(), flagged)]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities, in input order, for (N, 28, 28) or one (28, 28)
        image of pixels 0..255, uint8 or float; any N, in chunks that bound the memory."""
        batch = np.asarray(images, dtype=np.float32)
        if batch.shape == IMAGE_SHAPE:
            batch = batch[np.newaxis]
        if len(batch) <= PREDICT_CHUNK:
            return np.asarray(self.run(batch), dtype=np.float32)
        chunks = range(0, len(batch), PREDICT_CHUNK)
        parts = [self.run(batch[start : start + PREDICT_CHUNK]) for start in chunks]
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


PREDICT_CHUNK = 1024  # images per model call: bounds the activations' memory


def load_predictor(
    ref: str = PRODUCTION_ALIAS,
    registry: AnyRegistry | Path | str | None = None,
    threads: int | None = None,
) -> Predictor:
    """Verify `ref`'s version, then load its ONNX export if it has one, else its Keras model.

    `registry`: a registry, its folder or s3:// URL (None: $DIGITS_REGISTRY or the default). The same
    argument order as every loader: `digits.load`, `digits.registry.load.load_model`.
    `threads`: onnxruntime's threads for one call (None: one per core).
    """
    registry = open_registry(registry)
    version = registry.resolve(ref)
    folder = registry.verified_folder(version)  # a store's: its local copy, checked
    manifest = read_manifest(folder.parent, version)
    if ONNX_FILE in manifest["files"]:
        run = onnx_runner(folder / ONNX_FILE, manifest["files"][ONNX_FILE]["sha256"], threads)
        return Predictor(version, ref, "onnx", run, manifest)
    return Predictor(version, ref, "keras", keras_runner(folder), manifest)


def load(ref: str = PRODUCTION_ALIAS, registry: Path | str | None = None) -> Predictor:
    """`digits.load`: `ref` may also be "latest", the newest version (unless an alias of that
    name exists)."""
    store = open_registry(registry)
    if ref == LATEST and LATEST not in store.aliases():
        versions = store.versions()
        ref = versions[-1]["version"] if versions else ref  # an empty registry: unknown alias
    return load_predictor(ref, store)


def onnx_runner(path: Path, sha256: str, threads: int | None = None) -> Callable[[np.ndarray], Any]:
    import onnxruntime

    # The session is built from the bytes checked here, not from the path: verify() read
    # the file once already, and a file replaced since would otherwise go unnoticed.
    data = path.read_bytes()
    if sha256_bytes(data) != sha256:
        raise RegistryError(f"{path}: changed since it was verified")
    options = onnxruntime.SessionOptions()
    # Idle worker threads would spin between calls, taking CPU from the process that
    # decodes images or answers HTTP on this 2-core machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def keras_runner(folder: Path) -> Callable[[np.ndarray], Any]:
    """Versions published before the exports: the .keras model, in safe mode, loaded from
    the bytes checked against the manifest (as onnx_runner does), not reopened by path.
    Here, where the fallback is chosen, a consumer install (no Keras) is told why."""
    if importlib.util.find_spec("keras") is None:
        raise UsageError(f"{folder.name} has no ONNX export, and its Keras model needs the "
                         f"pipeline extra: {PIPELINE_HINT}")
    sha256 = read_manifest(folder.parent, folder.name)["files"][MODEL_FILE]["sha256"]
    model = load_keras(folder / MODEL_FILE, sha256)
    lock = threading.Lock()  # a Keras model is not safe to call from several threads (serve)

    def run(batch: np.ndarray) -> np.ndarray:
        # predict() builds a tf.data pipeline per call (50-100 ms here), which dominates a
        # one-image request; predict_on_batch does not. Predictor.predict chunks the batch.
        with lock:
            return np.asarray(model.predict_on_batch(batch))

    return run



def load_keras(path: Path, sha256: str):
    """Load a .keras file with plain Keras in safe mode from exactly the bytes that match
    `sha256`: Keras opens what it is given by path, so it gets a private copy of the bytes
    checked here, never the registry's file (which may have changed since)."""
    data = path.read_bytes()
    if sha256_bytes(data) != sha256:
        raise RegistryError(f"{path}: changed since it was verified")
    # Here, not at the top: reading a registry must not need TensorFlow. Quietly: its C++
    # start-up banner would otherwise reach the terminal of whatever loads the model.
    import_keras_quietly()
    import keras

    from digits.model import layers  # noqa: F401  registers digits' own layers (Temperature...)

    with tempfile.TemporaryDirectory(prefix="digits-model-") as private:  # mode 0700
        copy = Path(private) / MODEL_FILE
        copy.write_bytes(data)
        return keras.saving.load_model(copy, safe_mode=True)


def load_model(ref: str = PRODUCTION_ALIAS, registry: AnyRegistry | Path | str | None = None):
    """Verify a registry version, then load the model.keras bytes verified, with plain Keras."""
    reg = open_registry(registry)
    folder = reg.verified_folder(reg.resolve(ref))
    manifest = read_manifest(folder.parent, folder.name)
    return load_keras(folder / MODEL_FILE, manifest["files"][MODEL_FILE]["sha256"])


def load_production(registry: AnyRegistry | Path | str | None = None):
    """The production Keras model (verified), or None while the registry has none: what the
    batch checks and the drift of served traffic compare with."""
    reg = open_registry(registry)
    if PRODUCTION_ALIAS not in reg.aliases():
        return None
    return load_model(PRODUCTION_ALIAS, reg)


def predict_files(model: Predictor, paths: list[Path]) -> list[dict]:
    """`Predictor.answers` for every image or array row in `paths`, each led by its `file`:
    the file's name, `name[row]` for an array's rows."""
    names, batch = load_inputs(paths)
    return [{"file": name, **answer} for name, answer in zip(names, model.answers(batch))]
