"""A production model that confuses some digits, and a prediction log of its answers with
people's labels: what a feedback batch is made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digits.monitoring.log import PredictionLog

CONFUSIONS = ((3, 5), (8, 9))  # (digit, the digit the model mistakes it for)


def confusing_model(images: np.ndarray, labels: np.ndarray, confusions=CONFUSIONS,
                    share: float = 0.6, seed: int = 0):
    """A small Keras model trained with `share` of each confused digit labelled as its
    partner: it answers the partner for most of those digits, the true digit a close second,
    as a real model's mistakes on confusable digits go."""
    import keras

    shown = np.asarray(labels, np.int64).copy()
    rng = np.random.default_rng(seed)
    for digit, partner in confusions:
        shown[(shown == digit) & (rng.random(len(shown)) < share)] = partner
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, shown, epochs=5, batch_size=64, verbose=0)
    return model


def one_hot_answers(digits: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """(N, 10) probabilities whose top class is `digits`, for logs made without a model."""
    probabilities = np.full((len(digits), 10), (1 - confidence) / 9, np.float32)
    probabilities[np.arange(len(digits)), digits] = confidence
    return probabilities


def log_answers(folder: Path, images: np.ndarray, probabilities: np.ndarray,
                version: str = "v1", not_a_digit: np.ndarray | None = None) -> list[str]:
    """Log the answers as `digits serve --log-dir` does, `not_a_digit` the version's flags
    (None: none flagged); the ids, in order."""
    with PredictionLog(folder) as log:
        return log.record(version, "production", images, probabilities, not_a_digit)


LABELLER = "labeller"  # the name of the token the tests' trusted labels come with


def give_labels(folder: Path, ids: list[str], labels, credential: str | None = LABELLER) -> None:
    """People's labels for the logged `ids` (through the log's public API, as the service):
    trusted, given with `credential`, or with None suggestions."""
    with PredictionLog(folder) as log:
        for id_, label in zip(ids, labels):
            log.correct(id_, int(label), credential)


def correct_mistakes(folder: Path, ids: list[str], answers: np.ndarray, truth: np.ndarray,
                     confirmations: int) -> tuple[np.ndarray, np.ndarray]:
    """Correct every wrong answer and confirm the first `confirmations` right ones; the
    rows corrected and the rows confirmed."""
    wrong = np.flatnonzero(answers != truth)
    right = np.flatnonzero(answers == truth)[:confirmations]
    rows = np.r_[wrong, right]
    give_labels(folder, [ids[row] for row in rows], truth[rows])
    return wrong, right
