"""The checks on a new batch (`digits add`): each measures one number and compares it with
its bound in `BatchChecks`; Great Expectations validates the one-row frame of those numbers,
so every check is also a GX result.

Order matters only for the reason line: the first failing check names the batch's fault.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from digits.checks import drift
from digits.checks.docs import open_context
from digits.checks.suites import digest, run_suite
from digits.config import IMAGE_SHAPE, NUM_CLASSES, BatchChecks
from digits.data.batches import Batch, held_out_mask
from digits.data.intake import Source

LEAK_BLUR = 1.0  # px: a resampled copy of a digit stays near its original, distinct ones don't


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was measured, against which bound, and the verdict."""

    name: str
    observed: float | int | None  # None: skipped (says why in `note`)
    bound: str  # e.g. ">= 20" or "<= 0.05"
    passed: bool
    note: str = ""

    def reason(self) -> str:
        """The one line a quarantine prints: the check, the observed value and the bound."""
        note = f" ({self.note})" if self.note else ""
        return f"{self.name}: observed {fmt(self.observed)}, bound {self.bound}{note}"


@dataclass(frozen=True)
class Reference:
    """What a batch is compared with: a sample of MNIST train, and the images it must not
    repeat (MNIST test, raw and normalised, and the held-out part of accepted batches)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    protected: np.ndarray  # (M, 28, 28) uint8


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def reference_of(train_images, train_labels, test_images, held_out: list[np.ndarray],
                 config: BatchChecks) -> Reference:
    """A fixed sample of train; test both as stored and as `normalize_image` makes it, so a
    test digit re-read from a PNG lines up with its original."""
    from digits.data.images import normalize_image

    sample = drift.reference_sample(train_images, train_labels, config.reference_rows)
    normalised = np.stack([normalize_image(image) for image in test_images])
    return Reference(*sample, np.concatenate([test_images, normalised, *held_out]))


def held_out_parts(batches) -> list[np.ndarray]:
    """The held-out images of accepted batches: their accuracy is measured on them."""
    return [batch.images[held_out_mask(batch.images)] for batch in batches]


# --- The measurements ------------------------------------------------------------


def measure_basics(source: Source, config: BatchChecks) -> dict[str, float]:
    images, labels = source.images, source.labels
    flat = images.reshape(len(images), -1)
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
    from scipy.ndimage import gaussian_filter
    from sklearn.neighbors import NearestNeighbors

    def blurred(x):
        x = gaussian_filter(x.astype(np.float32) / 255, sigma=(0, LEAK_BLUR, LEAK_BLUR))
        return x.reshape(len(x), -1)

    index = NearestNeighbors(n_neighbors=k).fit(blurred(protected))
    distances, _ = index.kneighbors(blurred(images))
    return distances / math.sqrt(math.prod(IMAGE_SHAPE))  # Euclidean distance -> RMS per pixel


def measure_leakage(images: np.ndarray, protected: np.ndarray, config: BatchChecks):
    """Copies (nearest protected image within `copy_distance`) and likely re-drawn leaks."""
    distances = nearest_protected(images, protected, k=2)
    nearest, second = distances[:, 0], distances[:, 1]
    copies = nearest <= config.copy_distance
    likely = ~copies & (nearest < config.likely_leak_distance) & (
        nearest < config.likely_leak_ratio * second)
    return int(copies.sum()), float(likely.mean())


def measure_drift(source: Source, reference: Reference) -> tuple[float, drift.Shift]:
    known = (source.labels >= 0) & (source.labels < NUM_CLASSES)
    return (drift.class_shift(source.labels[known], reference.train_labels),
            drift.stat_shift(source.images, reference.train_images))


def measure_model(source: Source, reference: Reference, model) -> tuple[float, float]:
    """Domain AUC on penultimate features, and the share of labels the model agrees with."""
    features = drift.penultimate_features(model)
    ours, probabilities = features(source.images)
    theirs, _ = features(reference.train_images)
    agreement = float(np.mean(probabilities.argmax(axis=1) == source.labels))
    return drift.domain_auc(ours, theirs), agreement


# --- Verdicts ------------------------------------------------------------------


def bounds(config: BatchChecks) -> dict[str, tuple[float | None, float | None]]:
    """check -> (min, max) of its observed value, in reporting order."""
    return {
        "readable": (0, 0),  # unreadable files
        "labels": (0, 0),  # labels outside 0..9
        "rows": (config.min_rows, None),
        "duplicates": (0, config.max_duplicate_share),
        "blank": (0, config.max_blank_share),
        "leakage": (0, config.max_copies),
        "likely-leakage": (0, config.max_likely_leak_share),
        "class-shares": (0, config.max_class_shift),
        "ink-stroke": (0, config.max_stat_shift),
        "feature-drift": (0, config.max_domain_auc),
        "label-agreement": (config.min_label_agreement, 1),
    }


def bound_text(low, high) -> str:
    if high is None:
        return f">= {fmt(low)}"
    return f"<= {fmt(high)}" if low in (0, None) else f">= {fmt(low)}"


NOTES = {
    "readable": "unreadable image files",
    "labels": "labels outside 0..9",
    "rows": "images in the batch",
    "duplicates": "share of byte-identical repeats",
    "blank": "share of images with (almost) no ink",
    "leakage": "images identical or near-identical to an MNIST test or held-out image",
    "likely-leakage": "share of images far closer to one MNIST test or held-out image "
                      "than to any other",
    "class-shares": "total variation distance to MNIST train's class shares",
    "ink-stroke": "largest gap of a mean image statistic to MNIST train's, in sds",
    "feature-drift": "AUC of a classifier telling the batch from MNIST train on the "
                     "production model's penultimate features",
    "label-agreement": "share of labels the production model agrees with",
}


def check_batch(source: Source, reference: Reference, model, config: BatchChecks,
                work_dir: Path) -> list[Check]:
    """Measure everything measurable, validate the numbers with GX, return every check."""
    observed: dict[str, object] = measure_basics(source, config)
    notes = dict(NOTES)
    if len(source.images):
        observed["leakage"], observed["likely-leakage"] = measure_leakage(
            source.images, reference.protected, config)
        observed["class-shares"], shift = measure_drift(source, reference)
        observed["ink-stroke"] = shift.gap
        notes["ink-stroke"] = (f"{shift.stat}: batch mean {shift.batch_mean:.3g}, "
                               f"MNIST train {shift.reference_mean:.3g}")
    if model is None:
        notes["feature-drift"] = notes["label-agreement"] = "skipped: no production model"
    elif len(source.images) >= 2:
        observed["feature-drift"], observed["label-agreement"] = measure_model(
            source, reference, model)
    verdicts = validate_numbers(observed, config, work_dir)
    return [Check(name, observed.get(name), bound_text(*limits),
                  verdicts.get(name, True), note_of(name, observed, notes, source))
            for name, limits in bounds(config).items()]


def note_of(name: str, observed: dict, notes: dict, source: Source) -> str:
    if name == "readable" and source.unreadable:
        return f"e.g. {source.unreadable[0]}"
    if name not in observed and not notes[name].startswith("skipped"):
        return "skipped: no images"
    return notes[name]


def validate_numbers(observed: dict, config: BatchChecks, work_dir: Path) -> dict[str, bool]:
    """GX on a one-row frame of the measured numbers: check -> success."""
    frame = pd.DataFrame([{name: float(value) for name, value in observed.items()}])
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high,
                                          meta={"split": "batch"})
        for name, (low, high) in bounds(config).items() if name in observed
    ]
    results = run_suite(open_context(work_dir), "batch-checks", frame, expectations)
    return {result["column"]: result["success"] for result in results}


def recheck_leakage(source: Source, checks: list[Check], batches: list[Batch],
                    config: BatchChecks) -> list[Check]:
    """`checks` with copies of the held-out images of `batches` (accepted while the checks
    ran) added to the leakage count. Copies only: the likely-leakage ratio to the second
    nearest means nothing against a handful of images."""
    protected = np.concatenate([np.zeros((0, *IMAGE_SHAPE), np.uint8), *held_out_parts(batches)])
    if not len(protected) or not len(source.images):
        return checks
    copies = int(np.count_nonzero(
        nearest_protected(source.images, protected, k=1)[:, 0] <= config.copy_distance))
    names = ", ".join(batch.name for batch in batches)
    return [replace(check, observed=check.observed + copies,
                    passed=check.passed and check.observed + copies <= config.max_copies,
                    note=f"{check.note}; rechecked with {names}, stored meanwhile")
            if check.name == "leakage" and check.observed is not None else check
            for check in checks]


def failures(checks: list[Check]) -> list[Check]:
    return [check for check in checks if not check.passed]


def report_of(checks: list[Check]) -> dict:
    """report.json: every check, and the verdict."""
    failed = failures(checks)
    return {"status": "quarantined" if failed else "accepted",
            "reason": failed[0].reason() if failed else None,
            "checks": [asdict(check) for check in checks]}

