"""The rows behind a batch's checks, for its page (digits.checks.render): the images, labels
and statistics of the batch and of MNIST train, each image's nearest MNIST test or held-out
image (`nearest_matches`/`leak_masks` of digits.checks.measure), and the production
model's digit and confidence. It needs the reference and the model, so it runs where the
checks ran, through digits.checks.render's `renderer`.

numpy; digits.checks.measure (and its Great Expectations) only inside `gather_evidence`,
Keras only when a model gives predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from digits.checks import drift

if TYPE_CHECKING:
    from digits.checks.measure import Reference
    from digits.checks.settings import BatchChecks
    from digits.data.intake import Source

SAMPLE_TILES = 24  # batch and MNIST train digits side by side, for the drift checks


@dataclass(frozen=True)
class Evidence:
    """Row by row, what the checks measured in aggregate."""

    images: np.ndarray  # (N, 28, 28) uint8, the batch as stored
    labels: np.ndarray  # (N,) as given (the labels check decides if they are 0..9)
    unreadable: list[str]
    stats: dict[str, np.ndarray]  # drift.image_stats of the batch
    reference_stats: dict[str, np.ndarray]  # ... of the MNIST train sample
    reference_shares: np.ndarray  # (10,) class shares of the MNIST train sample
    reference_images: np.ndarray  # a few MNIST train digits, shown beside the batch's
    gaps: np.ndarray  # (N,) RMS gap to the nearest MNIST test or held-out image
    matches: np.ndarray  # (N, 28, 28) that nearest image
    copies: np.ndarray  # (N,) bool: within the copy distance
    likely: np.ndarray  # (N,) bool: a likely re-drawn leak
    blank: np.ndarray  # (N,) bool: (almost) no ink, as the blank check counts
    predicted: np.ndarray | None  # (N,) the production model's digit; None without a model
    confidence: np.ndarray | None  # (N,) its probability


def gather_evidence(source: Source, reference: Reference, model,
                    config: BatchChecks) -> Evidence:
    from digits.checks.measure import leak_masks, nearest_matches

    images = source.images
    none = np.zeros(len(images), bool)
    gaps, matches, copies, likely = np.zeros(len(images)), np.zeros_like(images), none, none
    if len(images) and len(reference.protected) >= 2:
        distances, indices = nearest_matches(images, reference.protected, k=2)
        copies, likely = leak_masks(distances, config)
        gaps, matches = distances[:, 0], reference.protected[indices[:, 0]]
    predicted, confidence = predict(model, images)
    stats = (drift.image_stats(images) if len(images)  # it cannot size an empty batch
             else {name: np.zeros(0) for name in drift.STATS})
    return Evidence(images, np.asarray(source.labels), list(source.unreadable), stats,
                    drift.image_stats(reference.train_images),
                    drift.class_shares(reference.train_labels),
                    reference.train_images[:SAMPLE_TILES], gaps, matches, copies, likely,
                    stats["ink"] < config.blank_ink_threshold, predicted, confidence)


def predict(model, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The model's digit and its probability for each image (as label-agreement judges)."""
    if model is None or not len(images):
        return None, None
    _, probabilities = drift.penultimate_features(model)(images)
    return probabilities.argmax(axis=1), probabilities.max(axis=1)
