"""The whole flow on small generated data under a real (temporary) Prefect API."""

import json
import shutil

import numpy as np
import pytest
from prefect import tags

from digits.config import IDX_FILES
from digits.errors import ExportError
from digits.model.not_a_digit import FLAGGED_DIGITS, SPREAD
from digits.registry.load import load_predictor
from digits.registry.store import Registry
from tests.helpers.flows import read_flow_run, read_task_runs, run_flow
from tests.helpers.synth import snapshot_tree, write_dataset


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One promoted v1 from good data into an empty registry, which the tests below copy:
    each flow run trains, validates and exports, so they share the first."""
    root = tmp_path_factory.mktemp("first-run")
    good = write_dataset(root / "good")
    with pytest.MonkeyPatch.context() as env:  # as tests/flow/conftest.py does for a test
        env.setenv("DIGITS_ARTIFACTS", str(root / "artifacts"))
        env.setenv("DIGITS_DATA", str(root / "data-cache"))
        state = run_flow(data_dir=str(good), registry=str(root / "registry"))
    return state, root / "registry", good


def registry_copy(first_run, tmp_path):
    return shutil.copytree(first_run[1], tmp_path / "registry", symlinks=True)


def test_promotes_a_good_model_then_rejects_a_bad_one(first_run, tmp_path):
    state, promoted_into, _ = first_run

    assert state.is_completed() and state.result().promoted, state.message
    outcome = state.result()
    assert outcome.version == "v1" and outcome.accuracy >= 0.97
    assert state.message.startswith(outcome.line() + ": accuracy ")
    assert "no production model yet" in state.message
    assert "promoted" in read_flow_run(state).tags  # outcome visible beside a plain Completed
    manifest = json.loads((promoted_into / "v1" / "manifest.json").read_text())
    assert manifest["metrics"]["accuracy"] == outcome.accuracy
    assert manifest["data"]["rows"] == {"train": 1200, "test": 300}
    assert manifest["flow_run_id"] == str(state.state_details.flow_run_id)
    assert {"model.keras", "card.md", "model.onnx", "saved_model/saved_model.pb"} <= set(
        manifest["files"]
    )
    assert any(name.startswith("plots/") for name in manifest["files"])
    # Calibrated on the validation split; the ECE recorded before and after, and by the gate.
    calibration, metrics = manifest["calibration"], manifest["metrics"]
    assert calibration["fitted_on"] == "validation" and calibration["temperature"] > 0
    assert calibration["validation_nll_calibrated"] <= calibration["validation_nll"]
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["ece_uncalibrated"] <= 1
    assert manifest["gate"]["ece"] == metrics["ece"]
    assert "plots/reliability.png" in manifest["files"]
    # The not-a-digit rule, fitted on the validation split after calibration; the share of
    # the test digits it flags recorded beside the accuracy.
    rule = manifest["not_a_digit"]
    assert rule["fitted_on"] == "validation" and rule["rule"] == SPREAD and rule["threshold"] >= 0
    assert rule["flagged_validation"] <= FLAGGED_DIGITS + 1 / rule["rows"]
    assert 0 <= metrics["not_a_digit_rate"] <= 1
    card = (promoted_into / "v1" / "card.md").read_text()
    assert "## Calibration" in card and "`plots/reliability.png`" in card
    assert "## Not a digit" in card
    for fmt, file in (("onnx", "model.onnx"), ("saved_model", "saved_model")):
        record = manifest["exports"][fmt]
        assert record["file"] == file and record["agree"] is True and record["rows"] == 300
        assert record["max_abs_diff"] <= 1e-4
    assert Registry(promoted_into).verify() == ["v1"]
    assert load_predictor("production", promoted_into).backend == "onnx"

    # Labels unrelated to the images: about 10% accuracy, so the gate must refuse it.
    registry = registry_copy(first_run, tmp_path)
    bad = write_dataset(tmp_path / "bad", shuffle_test_labels=True)
    before = snapshot_tree(registry)
    state = run_flow(data_dir=str(bad), registry=str(registry))

    assert state.is_completed() and not state.result().promoted, state.message
    assert state.message.startswith("rejected (accuracy 0.")
    assert state.message.endswith("; registry unchanged")
    assert not state.result().promoted
    assert "rejected" in read_flow_run(state).tags
    assert snapshot_tree(registry) == before


def test_promotion_message_says_what_it_was_compared_with(first_run, tmp_path):
    first, _, data = first_run
    registry = registry_copy(first_run, tmp_path)
    champion = first.result().accuracy

    with tags("digits", "mnist"):  # as the CLI and the deployment tag runs
        # force: the same data and settings as v1 would be skipped
        state = run_flow(
            data_dir=str(data), registry=str(registry), regression_tolerance=0.002, force=True
        )

    outcome = state.result()
    assert outcome.promoted and outcome.version == "v2", state.message
    assert state.message.startswith(f"promoted v2 (accuracy {outcome.accuracy:.4f}): ")
    assert f"production v1 ({champion:.4f}) - tolerance 0.002" in state.message
    assert state.name == "Completed"  # the UI's default filters hide custom state names
    assert sorted(read_flow_run(state).tags) == ["digits", "mnist", "promoted"]  # kept, added


def test_a_disagreeing_export_fails_the_run_registry_unchanged(tmp_path, monkeypatch):
    import digits.model.export

    real = digits.model.export.run_onnx
    # An ONNX file whose probabilities drift by 1e-3 from model.keras: over the 1e-4 allowed.
    monkeypatch.setattr(digits.model.export, "run_onnx", lambda *args: real(*args) + 1e-3)
    registry = tmp_path / "registry"
    before = snapshot_tree(registry)

    state = run_flow(data_dir=str(write_dataset(tmp_path / "good")), registry=str(registry))

    assert state.is_failed()
    assert "onnx export disagrees with model.keras" in state.message
    with pytest.raises(ExportError) as error:
        state.result()
    assert error.value.exit_code == 1
    assert snapshot_tree(registry) == before
    assert "gate-and-promote" not in {run.name for run in read_task_runs(state)}


def test_invalid_data_fails_the_run_before_training(tmp_path):
    registry = tmp_path / "registry"
    data = write_dataset(tmp_path / "data")
    (data / IDX_FILES["train_images"]).write_bytes(b"\x00\x00\x08\x01garbage")
    before = snapshot_tree(registry)

    state = run_flow(data_dir=str(data), registry=str(registry))

    assert state.is_failed()
    assert "invalid IDX file" in state.message  # a parse error, not a failed expectation
    assert not state.message.startswith("data validation failed")
    assert IDX_FILES["train_images"] in state.message
    assert snapshot_tree(registry) == before
    task_names = {run.name for run in read_task_runs(state)}
    assert task_names == {"ingest"}  # stopped before validation, let alone training


def test_failed_suite_names_the_split(tmp_path):
    data = write_dataset(tmp_path / "data")
    labels = np.frombuffer((data / IDX_FILES["test_labels"]).read_bytes()[8:], np.uint8).copy()
    labels[labels == 7] = 1  # class 7 vanishes from the test split
    (data / IDX_FILES["test_labels"]).write_bytes(
        (data / IDX_FILES["test_labels"]).read_bytes()[:8] + labels.tobytes()
    )
    state = run_flow(data_dir=str(data), registry=str(tmp_path / "registry"))
    assert state.is_failed()
    assert state.message.startswith("data validation failed")
    assert "test" in state.message


def test_an_ensemble_is_promoted_and_served_like_one_model(tmp_path):
    # `members` (the best preset's lever) through every stage: training, gate, exports with
    # parity, registry, and the predictor users load (the ONNX export).
    registry = tmp_path / "registry"
    state = run_flow(data_dir=str(write_dataset(tmp_path / "good")), registry=str(registry),
                     train_overrides={"epochs": 3, "members": 2})

    assert state.is_completed() and state.result().promoted, state.message
    manifest = json.loads((registry / "v1" / "manifest.json").read_text())
    assert manifest["hyperparameters"]["members"] == 2
    assert manifest["training"]["epochs_run"] == 6  # two members of three epochs
    assert all(manifest["exports"][fmt]["agree"] for fmt in ("onnx", "saved_model"))
    predictor = load_predictor("production", registry)
    images = np.zeros((2, 28, 28), np.float32)
    assert predictor.predict(images).shape == (2, 10)
