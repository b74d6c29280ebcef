"""`members`: models trained in turn with consecutive seeds, averaged inside one exported
model that saves, loads, exports and feeds the drift checks like a single one."""

import numpy as np
import pytest

from digits.checks.drift import penultimate_features
from digits.config import train_config
from digits.model.architectures import ensemble_members
from digits.model.calibration import uncalibrated
from digits.model.export import check_exports, export_candidate, load_candidate
from digits.model.train import fit_model
from digits.registry.layout import MODEL_FILE
from tests.model.test_training_levers import small_splits


@pytest.fixture(scope="module")
def pair():
    splits = small_splits()
    config = train_config("cnn", epochs=1, width=8, seed=3)
    lines = []
    ensemble = fit_model(splits, train_config("cnn", epochs=1, width=8, seed=3, members=2),
                         log=lines.append)
    second = fit_model(splits, train_config("cnn", epochs=1, width=8, seed=4), log=print)
    first = fit_model(splits, config, log=print)
    return splits, ensemble, first, second, lines


def test_members_average_the_models_their_seeds_train(pair):
    splits, ensemble, first, second, lines = pair
    pixels = splits.x_test * 255
    # each calibrated apart: the average is of what they answered before that
    mean = sum(uncalibrated(m.model).predict(pixels, verbose=0) for m in (first, second)) / 2
    np.testing.assert_allclose(uncalibrated(ensemble.model).predict(pixels, verbose=0), mean,
                               atol=1e-5)
    assert len(ensemble_members(ensemble.model)) == 2
    assert ensemble.epochs_run == 2  # one epoch each, end to end
    *epochs, calibrated, rule = lines  # then one temperature for the ensemble's answers,
    assert [line.split(" epoch")[0] for line in epochs] == ["member 1/2", "member 2/2"]
    assert calibrated.startswith("calibration: temperature ")
    assert rule.startswith("not a digit: spread under ")  # and one rule for them


def test_an_ensemble_saves_loads_and_exports_with_parity(pair, tmp_path):
    splits, ensemble, *_ = pair
    ensemble.model.save(tmp_path / MODEL_FILE)
    loaded = load_candidate(tmp_path)
    assert len(ensemble_members(loaded)) == 2
    records = export_candidate(tmp_path, splits.x_test * 255)
    assert set(records) == {"saved_model", "onnx"}
    assert check_exports(loaded, tmp_path, splits.x_test * 255)["onnx"]["max_abs_diff"] <= 1e-4


def test_drift_features_come_from_the_first_member(pair):
    splits, ensemble, first, *_ = pair
    pixels = splits.x_test * 255
    features, probabilities = penultimate_features(ensemble.model)(pixels)
    alone, _ = penultimate_features(first.model)(pixels)
    np.testing.assert_allclose(features, alone, atol=1e-5)
    # The checks' probabilities are the model's before its temperature (penultimate_features).
    raw = uncalibrated(ensemble.model).predict(pixels, verbose=0)
    np.testing.assert_allclose(probabilities, raw, atol=1e-5)
