"""The measurements of a new batch (digits.checks.batch judges them): the reference it is
compared with, its basic counts, leakage, drift, and the production model's view of its
labels; and, row by row, the nearest protected images the batch's page shows
(digits.checks.evidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from digits.checks import drift
from digits.checks.policy import FEEDBACK_NOTES, FEEDBACK_ROWS
from digits.checks.settings import BatchChecks
from digits.checks.suites import digest
from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.data.batches import held_out_mask
from digits.data.intake import FEEDBACK, Source

LEAK_BLUR = 1.0  # px: a resampled copy of a digit stays near its original, distinct ones don't


@dataclass(frozen=True)
class Reference:
    """What a batch is compared with: a sample of MNIST train, and the images it must not
    repeat (MNIST test, raw and normalised, and the held-out part of accepted batches)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    protected: np.ndarray  # (M, 28, 28) uint8


def reference_of(train_images, train_labels, test_images, held_out: list[np.ndarray],
                 config: BatchChecks) -> Reference:
    """A fixed sample of train; test both as stored and as `normalize_image` makes it, so a
    test digit re-read from a PNG lines up with its original."""
    from digits.data.normalize import normalize_image

    sample = drift.reference_sample(train_images, train_labels, config.reference_rows)
    normalised = np.stack([normalize_image(image) for image in test_images])
    return Reference(*sample, np.concatenate([test_images, normalised, *held_out]))


def held_out_parts(batches) -> list[np.ndarray]:
    """The held-out images of accepted batches: their accuracy is measured on them."""
    return [batch.images[held_out_mask(batch.images)] for batch in batches]


# --- The measurements ------------------------------------------------------------


def measure_basics(source: Source, config: BatchChecks) -> dict[str, float]:
    images, labels = source.images, source.labels
    flat = images.reshape(len(images), math.prod(IMAGE_SHAPE))  # -1 cannot size an empty batch
    ink = np.count_nonzero(flat > drift.LIT * 255, axis=1) / max(flat.shape[1], 1)
    blank = ink < config.blank_ink_threshold
    inked = flat[~blank]  # empty boxes are all alike: the blank check counts them
    repeats = len(inked) - len(np.unique(digest(inked))) if len(inked) else 0
    return {
        "readable": len(source.unreadable),
        "labels": int(np.count_nonzero((labels < 0) | (labels >= NUM_CLASSES))),
        "rows": len(images),
        "duplicates": repeats / len(images) if len(images) else 0.0,
        "blank": float(np.mean(blank)) if len(images) else 0.0,
    }


def nearest_protected(images: np.ndarray, protected: np.ndarray, k: int) -> np.ndarray:
    """(N, k) RMS pixel gaps (0..1 scale) of each image to its k nearest protected images,
    both blurred by LEAK_BLUR."""
    return nearest_matches(images, protected, k)[0]


def measure_leakage(images: np.ndarray, protected: np.ndarray, config: BatchChecks):
    """Copies (nearest protected image within `copy_distance`) and likely re-drawn leaks."""
    copies, likely = leak_masks(nearest_protected(images, protected, k=2), config)
    return int(copies.sum()), float(likely.mean())


def measure_drift(source: Source, reference: Reference,
                  compared: np.ndarray | None = None) -> tuple[float, drift.Shift]:
    """Class shares against MNIST train's; image statistics against `compared` (default the
    whole sample), in the whole sample's sds."""
    known = (source.labels >= 0) & (source.labels < NUM_CLASSES)
    if compared is None:
        compared = reference.train_images
    return (drift.class_shift(source.labels[known], reference.train_labels),
            drift.stat_shift(source.images, compared, spread=reference.train_images))


def matched_reference(reference: Reference, labels: np.ndarray, minimum: int = 1) -> np.ndarray:
    """MNIST train sample images with the batch's class shares, as many as the sample
    allows: a feedback batch's mix says which digits the model confuses, not where its
    images come from, so its drift is measured against digits of the same classes. The
    whole sample where that leaves fewer than `minimum` images."""
    train = reference.train_labels.astype(np.int64)
    wanted = np.bincount(labels[(labels >= 0) & (labels < NUM_CLASSES)],
                         minlength=NUM_CLASSES)[:NUM_CLASSES]
    available = np.bincount(train, minlength=NUM_CLASSES)[:NUM_CLASSES]
    present = wanted > 0
    if not present.any() or not available[present].all():
        return reference.train_images  # nothing to match, or a class the sample lacks
    # The scarcest class (fewest available per wanted) gives all it has; the others their
    # share of that, in whole images (integers: no float rounding past what is there).
    scarce = min(np.flatnonzero(present), key=lambda digit: available[digit] / wanted[digit])
    take = wanted * available[scarce] // wanted[scarce]
    rows = np.concatenate([np.flatnonzero(train == digit)[:n] for digit, n in enumerate(take)])
    return reference.train_images[rows] if len(rows) >= minimum else reference.train_images


def model_outputs(source: Source, compared: np.ndarray, model) -> tuple[float, np.ndarray]:
    """Domain AUC of the batch against `compared` on penultimate features, and the model's
    probabilities for the batch."""
    features = drift.penultimate_features(model)
    ours, probabilities = features(source.images)
    theirs, _ = features(compared)
    return drift.domain_auc(ours, theirs), probabilities


def label_rank(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) how many digits the model finds more probable than the label (0 where it
    agrees), and the probability it gives the label; NUM_CLASSES and 0 for a label outside
    0..9 (the labels check fails it)."""
    valid = (labels >= 0) & (labels < NUM_CLASSES)
    own = probabilities[np.arange(len(labels)), np.where(valid, labels, 0)]
    rank = np.where(valid, (probabilities > own[:, None]).sum(axis=1), NUM_CLASSES)
    return rank, np.where(valid, own, 0.0)


def measure_feedback_rows(source: Source) -> dict[str, int]:
    """How many rows people confirmed, for a feedback batch: what label agreement has."""
    if source.origin != FEEDBACK:
        return {}
    return {"confirmed-rows": int(source.confirmed_rows().sum())}


def measure_labels(source: Source, probabilities: np.ndarray, config: BatchChecks
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """Label agreement (and, for feedback, correction plausibility): observed values, and
    notes where they differ from NOTES."""
    rank, own = label_rank(probabilities, source.labels)
    if source.origin != FEEDBACK:
        return {"label-agreement": float(np.mean(rank == 0))}, {}
    confirmed = source.confirmed_rows()
    plausible = (rank < config.correction_top_k) & (own >= config.min_correction_probability)
    observed, notes = {}, {}
    # Agreement on however few confirmed rows there are: under min_feedback_rows the
    # confirmed-rows check quarantines the batch, and this says what they showed.
    for name, rows, value, minimum in (
            ("label-agreement", confirmed, rank == 0, 1),
            ("correction-plausibility", ~confirmed, plausible, config.min_feedback_rows)):
        count, what = int(rows.sum()), FEEDBACK_ROWS[name]
        if count >= minimum:
            observed[name] = float(np.mean(value[rows]))
            notes[name] = f"{FEEDBACK_NOTES[name]}, on the {count} {what} rows"
        else:
            notes[name] = (f"skipped: {count} {what} rows, fewer than min_feedback_rows "
                           f"({config.min_feedback_rows})")
    return observed, notes


def measure_with_model(source: Source, compared: np.ndarray, model, config: BatchChecks
                       ) -> tuple[dict[str, float], dict[str, str]]:
    """Feature drift and the label checks: observed values, and notes that differ."""
    if model is None:
        names = ["feature-drift", "label-agreement"]
        if source.origin == FEEDBACK:
            names.append("correction-plausibility")
        return {}, dict.fromkeys(names, "skipped: no production model")
    if len(source.images) < 2:
        return {}, {}
    auc, probabilities = model_outputs(source, compared, model)
    observed, notes = measure_labels(source, probabilities, config)
    return {"feature-drift": auc, **observed}, notes


# --- Row by row, for the batch's page (digits.checks.evidence) -----------------------


def nearest_matches(images: np.ndarray, protected: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`nearest_protected`'s (N, k) RMS gaps, and the (N, k) indices into `protected` of
    the images they are the gaps to."""
    from scipy.ndimage import gaussian_filter
    from sklearn.neighbors import NearestNeighbors

    def blurred(x):
        x = gaussian_filter(x.astype(np.float32) / 255, sigma=(0, LEAK_BLUR, LEAK_BLUR))
        return x.reshape(len(x), -1)

    index = NearestNeighbors(n_neighbors=k).fit(blurred(protected))
    distances, indices = index.kneighbors(blurred(images))
    return distances / math.sqrt(math.prod(IMAGE_SHAPE)), indices  # Euclidean -> RMS per pixel


def leak_masks(distances: np.ndarray, config: BatchChecks) -> tuple[np.ndarray, np.ndarray]:
    """Per image, from its (N, 2) nearest protected gaps: a copy (within `copy_distance`),
    and a likely re-drawn leak (near, and far nearer than the second nearest)."""
    nearest, second = distances[:, 0], distances[:, 1]
    copies = nearest <= config.copy_distance
    likely = ~copies & (nearest < config.likely_leak_distance) & (
        nearest < config.likely_leak_ratio * second)
    return copies, likely
