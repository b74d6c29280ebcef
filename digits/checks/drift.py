"""Drift of a new batch against the reference (MNIST train): class shares, ink and stroke
statistics, and how separable the batch is from the reference in a model's feature space.

numpy and scikit-learn only; Keras is imported by `penultimate_features` when a production
model is there to give features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digits.config import NUM_CLASSES

LIT = 0.5  # a pixel is ink above half of full scale, as in digits.checks.suites
STATS = ("ink", "intensity", "height", "width", "stroke")
# Each statistic's unit, for the axes of its histogram (a batch's page, the drift artifact).
UNITS = {"ink": "share of pixels lit", "intensity": "mean pixel (0..1)",
         "height": "ink box height (px)", "width": "ink box width (px)",
         "stroke": "stroke width (px)"}


@dataclass(frozen=True)
class Shift:
    """The largest standardised gap of a batch's mean statistic to the reference's."""

    stat: str
    gap: float  # |batch mean - reference mean| / reference sd
    batch_mean: float
    reference_mean: float


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: ink share, mean intensity (0..1), ink box height and width (pixels) and
    stroke width (2 x ink area / boundary pixels: about the pen's width in pixels)."""
    pixels = np.asarray(images, dtype=np.float32) / 255
    lit = pixels > LIT
    rows, cols = lit.any(axis=2), lit.any(axis=1)
    area = lit.sum(axis=(1, 2))
    return {
        "ink": area / lit[0].size,
        "intensity": pixels.mean(axis=(1, 2)),
        "height": extent(rows),
        "width": extent(cols),
        "stroke": 2 * area / np.maximum(boundary(lit), 1),
    }


def extent(lit_lines: np.ndarray) -> np.ndarray:
    """Distance from the first to the last lit row (or column), 0 when nothing is lit."""
    size = lit_lines.shape[1]
    first = np.argmax(lit_lines, axis=1)
    last = size - 1 - np.argmax(lit_lines[:, ::-1], axis=1)
    return np.where(lit_lines.any(axis=1), last - first + 1, 0)


def boundary(lit: np.ndarray) -> np.ndarray:
    """Lit pixels with an unlit 4-neighbour (the image edge counts as unlit), per image."""
    padded = np.pad(lit, ((0, 0), (1, 1), (1, 1)))
    inner = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2]
             & padded[:, 1:-1, 2:])
    return (lit & ~inner).sum(axis=(1, 2))


def bin_edges(name: str, values: np.ndarray) -> np.ndarray:
    """One bin per pixel for the box sizes (whole numbers: finer bins would leave gaps)."""
    if name in ("height", "width"):
        return np.arange(values.min(), values.max() + 2) - 0.5
    return np.histogram_bin_edges(values, bins=25)


def stat_shift(batch: np.ndarray, reference: np.ndarray,
               spread: np.ndarray | None = None) -> Shift:
    """The statistic whose batch mean lies furthest from the reference's, in reference sds:
    an effect size, so it does not grow with the batch as a test statistic would. `spread`
    (default: `reference`) gives the sds, so a class-matched reference keeps the units."""
    ours, theirs = image_stats(batch), image_stats(reference)
    scale = theirs if spread is None else image_stats(spread)
    shifts = []
    for name in STATS:
        mean, sd = float(theirs[name].mean()), float(scale[name].std())
        gap = abs(float(ours[name].mean()) - mean) / max(sd, 1e-9)
        shifts.append(Shift(name, gap, float(ours[name].mean()), mean))
    return max(shifts, key=lambda shift: shift.gap)


def class_shares(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_CLASSES)
    return counts[:NUM_CLASSES] / max(len(labels), 1)


def class_shift(labels: np.ndarray, reference_labels: np.ndarray) -> float:
    """Total variation distance between the class shares: the share of the batch that
    would have to change class to match the reference's mix (0 same mix, 1 disjoint)."""
    return float(np.abs(class_shares(labels) - class_shares(reference_labels)).sum() / 2)


def domain_auc(batch_features: np.ndarray, reference_features: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling batch from reference
    features: 0.5 when they are indistinguishable, 1.0 when every image gives itself away."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([reference_features, batch_features]).astype(np.float64)
    is_batch = np.r_[np.zeros(len(reference_features)), np.ones(len(batch_features))]
    folds = StratifiedKFold(n_splits=min(5, len(batch_features)), shuffle=True, random_state=seed)
    # Balanced weights: a batch of 20 against 2,000 reference images must still count.
    classifier = make_pipeline(StandardScaler(), LogisticRegression(
        C=0.1, class_weight="balanced", max_iter=2_000))
    scores = cross_val_predict(classifier, features, is_batch, cv=folds,
                               method="predict_proba")[:, 1]
    return float(roc_auc_score(is_batch, scores))


def reference_sample(images: np.ndarray, labels: np.ndarray, rows: int, seed: int = 0):
    """A fixed random sample of the reference, the same in every run."""
    pick = np.random.default_rng(seed).permutation(len(images))[:rows]
    return images[pick], labels[pick]


def penultimate_features(model) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """For a Keras registry model: a function of (N, 28, 28) pixels 0..255 giving the
    input of the last Dense layer (the features the classifier separates) and the
    probabilities. Nested models (the exported wrapper) are walked layer by layer; of an
    ensemble (`members` > 1), the first member's features, and the average's probabilities.

    The probabilities are the model's before its calibration temperature: the checks' bounds
    on them (a correction given at least min_correction_probability) were set on those, and
    a temperature fitted per version would otherwise move every batch's verdict with it."""
    import keras

    from digits.model.architectures import ensemble_members
    from digits.model.calibration import uncalibrated

    model = uncalibrated(model)
    members = ensemble_members(model)
    layers = list(flat_layers(members[0] if members else model))
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Dense))

    def run(images: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        features, probabilities = [], []
        for start in range(0, len(images), chunk):
            pixels = keras.ops.convert_to_tensor(np.asarray(images[start:start + chunk], "float32"))
            x = pixels
            for layer in layers[:last]:
                x = layer(x, training=False)  # augmentation and dropout off
            features.append(keras.ops.convert_to_numpy(x))
            for layer in layers[last:]:
                x = layer(x, training=False)
            if members:
                x = model(pixels, training=False)
            probabilities.append(keras.ops.convert_to_numpy(x))
        return np.concatenate(features), np.concatenate(probabilities)

    return run


def flat_layers(model):
    """The layers of a model in order, with nested models replaced by their layers; a
    functional model's InputLayer, a placeholder that cannot be called, is left out."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if hasattr(layer, "layers") and layer.layers:
            yield from flat_layers(layer)
        else:
            yield layer
