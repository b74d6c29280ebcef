"""Exports (SavedModel, ONNX) of trained tiny models, their parity check, and the predictor
that runs a registry version with onnxruntime or, for older versions, with Keras."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from digits.errors import ExportError, RegistryError
from digits.model.architectures import build_model, export_model
from digits.model.calibration import Temperature, calibrate, uncalibrated
from digits.model.export import (
    PARITY_ATOL,
    check_exports,
    export_candidate,
    load_candidate,
    onnx_session,
    run_onnx,
    write_onnx,
)
from digits.registry.layout import MODEL_FILE, ONNX_FILE, SAVED_MODEL_DIR
from digits.registry.load import load_predictor, predict_files
from digits.registry.store import Registry
from tests.helpers.synth import make_digits, make_prototypes

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"tensorflow", "keras", "prefect", "great_expectations"}


@pytest.fixture(scope="module")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 digits (N, 28, 28) and labels; tiny, the machine is shared."""
    return make_digits(240, seed=1, prototypes=make_prototypes())


def train_tiny(name: str, images: np.ndarray, labels: np.ndarray) -> keras.Model:
    """One epoch, augmentation on (as `digits run` trains the cnn, strokes included),
    calibrated: the registry form. The temperature is fitted on the training images: only
    its being there matters."""
    keras.utils.set_random_seed(0)
    core = build_model(name, augment=True, seed=0, stroke_width=1.5)
    core.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    core.fit(images / 255, labels.astype(np.int64), epochs=1, batch_size=32, verbose=0)
    exported = export_model(core)
    return calibrate(exported, exported.predict(images, verbose=0), labels)[0]


@pytest.fixture(scope="module")
def builds(tmp_path_factory, digits_data) -> dict[str, Path]:
    """Candidate folders as `package` leaves them (model.keras only), one per architecture."""
    images, labels = digits_data
    folders = {}
    for name in ("mlp", "cnn"):
        folder = tmp_path_factory.mktemp(f"build-{name}")
        train_tiny(name, images, labels).save(folder / MODEL_FILE)
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def exported(builds, digits_data) -> dict[str, dict]:
    """The parity record of each architecture, after exporting into its candidate folder."""
    return {name: export_candidate(folder, digits_data[0]) for name, folder in builds.items()}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, builds, exported) -> Registry:
    """v1: the cnn with its exports; v2: the same model as published before exports."""
    registry = Registry(tmp_path_factory.mktemp("registry") / "registry")
    fields = {"model": "cnn", "metrics": {"accuracy": 0.98}}
    registry.publish(builds["cnn"], {**fields, "exports": exported["cnn"]})
    older = tmp_path_factory.mktemp("older")
    shutil.copy(builds["cnn"] / MODEL_FILE, older / MODEL_FILE)
    registry.publish(older, fields)
    return registry


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_exports_agree_with_the_keras_model(name, builds, exported, digits_data):
    record = exported[name]
    assert set(record) == {"onnx", "saved_model"}
    for fmt, file in (("onnx", ONNX_FILE), ("saved_model", SAVED_MODEL_DIR)):
        assert record[fmt]["file"] == file and (builds[name] / file).exists()
        assert record[fmt]["agree"] is True
        assert record[fmt]["rows"] == len(digits_data[0])
        assert 0 <= record[fmt]["max_abs_diff"] <= PARITY_ATOL
    json.dumps(record, allow_nan=False)  # goes into the manifest as it is
    # Recomputed independently of the record: the ONNX file picks the same digits.
    batch = digits_data[0].astype(np.float32)
    expected = load_candidate(builds[name]).predict(batch, verbose=0)
    actual = run_onnx(onnx_session(builds[name] / ONNX_FILE), batch)
    np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(actual, expected, atol=PARITY_ATOL)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_the_exports_carry_the_temperature(name, builds, exported, digits_data):
    # Parity above means something only if the temperature moves the probabilities by
    # more than the tolerance: then an export without it would disagree.
    loaded = load_candidate(builds[name])
    assert isinstance(loaded.layers[-1], Temperature)
    assert abs(np.log(loaded.layers[-1].temperature)) > 0.05
    batch = digits_data[0].astype(np.float32)
    before = uncalibrated(loaded).predict(batch, verbose=0)
    actual = run_onnx(onnx_session(builds[name] / ONNX_FILE), batch)
    assert np.abs(actual - before).max() > 100 * PARITY_ATOL
    np.testing.assert_array_equal(actual.argmax(axis=1), before.argmax(axis=1))


def test_the_cnn_exports_without_its_augmentation_layers(builds):
    # The published .keras keeps them (identity at inference); the ONNX graph must not
    # hold the random ops onnxruntime cannot load (StatelessRandomUniformV2).
    saved = load_candidate(builds["cnn"])
    names = [type(layer).__name__ for layer in uncalibrated(saved).layers[-1].layers]
    assert {"RandomRotation", "RandomZoom", "RandomStrokeWidth"} <= set(names)
    ops = {node.op_type for node in onnx.load(builds["cnn"] / ONNX_FILE).graph.node}
    assert not {op for op in ops if "Random" in op}, ops
    session = onnx_session(builds["cnn"] / ONNX_FILE)
    assert session.get_inputs()[0].shape[1:] == [28, 28]
    assert session.get_outputs()[0].shape[1:] == [10]


def scale_onnx_weights(path: Path, factor: float) -> None:
    """Tamper with the ONNX file: scale its largest weight tensor, as a broken export would."""
    model = onnx.load(path)
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * factor, weights.name))
    onnx.save(model, path)


def test_a_disagreeing_onnx_export_is_named(builds, digits_data, tmp_path):
    folder = shutil.copytree(builds["mlp"], tmp_path / "build")
    scale_onnx_weights(folder / ONNX_FILE, 3.0)
    with pytest.raises(ExportError, match=r"^onnx export disagrees with model.keras") as error:
        check_exports(load_candidate(folder), folder, digits_data[0])
    assert "\n" not in str(error.value) and error.value.exit_code == 1


def test_a_saved_model_of_another_model_is_named(builds, digits_data, tmp_path):
    folder = shutil.copytree(builds["mlp"], tmp_path / "build")
    shutil.rmtree(folder / SAVED_MODEL_DIR)
    shutil.copytree(builds["cnn"] / SAVED_MODEL_DIR, folder / SAVED_MODEL_DIR)
    with pytest.raises(ExportError, match=r"^saved_model export disagrees"):
        check_exports(load_candidate(folder), folder, digits_data[0])


def test_an_export_that_does_not_load_or_fails_is_named(builds, digits_data, tmp_path):
    folder = shutil.copytree(builds["mlp"], tmp_path / "build")
    (folder / ONNX_FILE).write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match=r"^onnx export does not run: "):
        check_exports(load_candidate(folder), folder, digits_data[0])

    class Broken:
        def export(self, *args, **kwargs):
            raise RuntimeError("tf2onnx fell over\nwith a page of graph dump")

    with pytest.raises(ExportError, match=r"^onnx export failed: RuntimeError: tf2onnx fell over$"):
        write_onnx(Broken(), tmp_path / ONNX_FILE)


def test_registry_lists_verifies_and_fetches_the_export_files(registry, tmp_path):
    files = registry.manifest("v1")["files"]
    assert {ONNX_FILE, f"{SAVED_MODEL_DIR}/saved_model.pb"} <= set(files)
    assert any(name.startswith(f"{SAVED_MODEL_DIR}/variables/") for name in files)
    assert registry.manifest("v1")["exports"]["onnx"]["agree"] is True
    assert registry.verify() == ["v1", "v2"]
    assert "onnxruntime.InferenceSession" in (registry.root / "v1" / "card.md").read_text()
    assert "onnx" not in (registry.root / "v2" / "card.md").read_text()  # no exports, no claim

    dest = tmp_path / "fetched"
    registry.fetch("v1", dest)
    assert (dest / ONNX_FILE).read_bytes() == (registry.root / "v1" / ONNX_FILE).read_bytes()
    assert (dest / SAVED_MODEL_DIR / "saved_model.pb").is_file()


def test_a_changed_export_file_fails_verify_and_predictor(registry, tmp_path):
    copy = Registry(shutil.copytree(registry.root, tmp_path / "registry"))
    variables = next((copy.root / "v1" / SAVED_MODEL_DIR / "variables").glob("*.data-*"))
    data = bytearray(variables.read_bytes())
    data[len(data) // 2] ^= 1
    variables.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="variables"):
        copy.verify("v1")
    with pytest.raises(RegistryError, match="variables"):
        load_predictor("v1", copy)


def test_predictor_uses_onnx_when_the_version_has_it_and_keras_otherwise(registry, digits_data):
    onnx_predictor = load_predictor("v1", registry)
    keras_predictor = load_predictor("v2", registry.root)  # a root works as well as a Registry
    assert (onnx_predictor.backend, onnx_predictor.version, onnx_predictor.ref) == (
        "onnx",
        "v1",
        "v1",
    )
    assert (keras_predictor.backend, keras_predictor.version) == ("keras", "v2")
    assert load_predictor("production", registry).version == "v2"

    batch = digits_data[0].astype(np.float32)
    via_onnx, via_keras = onnx_predictor.predict(batch), keras_predictor.predict(batch)
    assert via_onnx.shape == via_keras.shape == (len(batch), 10)
    assert via_onnx.dtype == np.float32
    np.testing.assert_array_equal(via_onnx.argmax(axis=1), via_keras.argmax(axis=1))
    np.testing.assert_allclose(via_onnx, via_keras, atol=1e-4)


@pytest.fixture
def image_files(tmp_path, digits_data) -> list[Path]:
    images = digits_data[0]
    Image.fromarray(images[0]).resize((90, 90)).save(tmp_path / "one.png")
    np.save(tmp_path / "rows.npy", images[1:4])
    return [tmp_path / "one.png", tmp_path / "rows.npy"]


def test_predict_files_says_the_same_with_either_backend(registry, image_files):
    via_onnx = predict_files(load_predictor("v1", registry), image_files)
    via_keras = predict_files(load_predictor("v2", registry), image_files)
    assert [(a["file"], a["digit"]) for a in via_onnx] == [
        (a["file"], a["digit"]) for a in via_keras]
    assert [a["file"] for a in via_onnx] == ["one.png", "rows.npy[0]", "rows.npy[1]", "rows.npy[2]"]
    for onnx_answer, keras_answer in zip(via_onnx, via_keras):
        assert onnx_answer["probability"] == pytest.approx(keras_answer["probability"], abs=1e-4)


def test_digits_predict_with_onnx_imports_neither_tensorflow_nor_prefect(registry, image_files):
    # A fresh interpreter, as a user's `digits predict` starts: the whole command runs.
    code = (
        "import json, sys\n"
        "from digits.cli import main\n"
        "try:\n    main()\n"
        "except SystemExit as done:\n    code = done.code\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r})\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    args = ["predict", *map(str, image_files), "--ref", "v1", "--registry", str(registry.root)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    *lines, last = result.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "heavy": []}, result.stderr
    expected = predict_files(load_predictor("v2", registry), image_files)
    assert [line.split("\t")[:2] for line in lines] == [
        [a["file"], str(a["digit"])] for a in expected]


def test_digits_predict_falls_back_to_keras_for_an_older_version(registry, image_files, cli):
    code, out, err = cli("predict", *image_files, "--ref", "v2", "--registry", registry.root)
    assert code == 0, err
    expected = predict_files(load_predictor("v1", registry), image_files)
    rows = [line.split("\t") for line in out.splitlines()]
    assert [row[:2] for row in rows] == [[a["file"], str(a["digit"])] for a in expected]
    for row, answer in zip(rows, expected):
        assert float(row[2]) == pytest.approx(answer["probability"], abs=2e-4)  # 4 places


def test_digits_load_gives_a_verified_predictor_by_version_alias_or_latest(registry, digits_data):
    import digits

    images = digits_data[0]
    v1 = digits.load("v1", registry.root)
    assert (v1.version, v1.backend) == ("v1", "onnx")
    assert v1.manifest == registry.manifest("v1")
    assert digits.load(registry=registry.root).version == "v2"  # production by default
    assert digits.load("latest", str(registry.root)).version == "v2"  # the newest version

    probabilities = v1.predict(images)  # uint8, as MNIST stores them
    assert probabilities.shape == (len(images), 10)
    np.testing.assert_allclose(v1.predict(images.astype(np.float64)), probabilities, atol=1e-6)
    np.testing.assert_allclose(v1.predict(images[0]), probabilities[:1], atol=1e-6)  # one image
    many = np.concatenate([images] * (3000 // len(images) + 1))
    np.testing.assert_allclose(v1.predict(many)[: len(images)], probabilities, atol=1e-6)


def test_digits_load_of_an_onnx_version_imports_neither_tensorflow_nor_prefect(registry):
    code = (
        "import json, sys, numpy as np, digits\n"
        f"p = digits.load('v1', {str(registry.root)!r})\n"
        "assert p.predict(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
