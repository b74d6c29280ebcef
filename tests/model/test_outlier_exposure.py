"""Outlier exposure in training (`--outlier-exposure`): the negatives it trains on get flat
answers, the digits keep theirs, and the rule recorded says how it was trained.

How well it flags things never seen is a question for real digits, not these generated
ones (whose plain model is already unsure of anything unlike them): benchmarks/not_a_digit.py
measures it on MNIST and a held-out set."""

from dataclasses import replace

import numpy as np
import pytest

from digits.config import train_config
from digits.data.negatives import draw_negatives
from digits.model.calibration import uncalibrated
from digits.model.train import fit_model
from tests.model.test_training_levers import small_splits

SHARE = 0.5


@pytest.fixture(scope="module")
def pair():
    splits = small_splits(512)
    config = train_config("mlp", epochs=8, batch_size=32, seed=5, patience=0)  # all 8 kept
    exposed = replace(config, outlier_exposure=SHARE)
    return splits, fit_model(splits, config), fit_model(splits, exposed)


def mean_top(trained, images: np.ndarray) -> float:
    # Before the temperature: 64 validation digits all answered right fit one that sharpens
    # every answer towards 1, which real data does not.
    return float(uncalibrated(trained.model).predict(images, verbose=0).max(axis=1).mean())


def test_exposed_training_answers_its_negatives_flat_and_its_digits_surely(pair):
    splits, plain, exposed = pair
    negatives = draw_negatives(round(SHARE * len(splits.y_train)), seed=5)  # what it trained on
    assert mean_top(exposed, negatives) < 0.15  # a flat answer's top is 0.1
    assert mean_top(exposed, negatives) < mean_top(plain, negatives) - 0.02
    assert mean_top(exposed, splits.x_test * 255) > 0.8
    right = (exposed.model.predict(splits.x_test * 255, verbose=0).argmax(axis=1)
             == splits.y_test).mean()
    assert right > 0.9  # the digits are still told apart
    assert exposed.not_a_digit["method"] == "outlier exposure"
    assert plain.not_a_digit["method"] == "digits only"


def test_the_training_accuracy_counts_the_digits_only(pair):
    _, plain, exposed = pair
    # Half as many negatives as digits, never "right": counted, accuracy would sit near 2/3.
    assert exposed.history["accuracy"][-1] > 0.9
    assert plain.history["accuracy"][-1] > 0.9
