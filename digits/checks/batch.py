"""The checks on a new batch (`digits add`): each measures one number and compares it with
its bound in `BatchChecks`; Great Expectations validates the one-row frame of those numbers,
so every check is also a GX result.

Order matters only for the reason line: the first failing check names the batch's fault.

A batch from `digits feedback export` (origin "feedback") is judged as what it is: people's
labels for the service's answers, whose corrections are the production model's mistakes by
construction and cluster on the digits it confuses. Its label agreement is measured on the
rows people confirmed, its corrected labels must be plausible to the model (among its top
`correction_top_k`), its class shares are reported but not enforced, and its ink and feature
drift are measured against MNIST train digits of the same classes (`matched_reference`).
docs/architecture.md has the table of which check applies to which origin.
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
from digits.data.intake import FEEDBACK, FILE, Source

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


def label_rank(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) how many digits the model finds more probable than the label: 0 where it agrees;
    NUM_CLASSES for a label outside 0..9 (the labels check fails it)."""
    valid = (labels >= 0) & (labels < NUM_CLASSES)
    own = probabilities[np.arange(len(labels)), np.where(valid, labels, 0)]
    return np.where(valid, (probabilities > own[:, None]).sum(axis=1), NUM_CLASSES)


def measure_labels(source: Source, probabilities: np.ndarray, config: BatchChecks
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """Label agreement (and, for feedback, correction plausibility): observed values, and
    notes where they differ from NOTES."""
    rank = label_rank(probabilities, source.labels)
    if source.origin != FEEDBACK:
        return {"label-agreement": float(np.mean(rank == 0))}, {}
    confirmed = source.confirmed_rows()
    observed, notes = {}, {}
    for name, rows, value in (
            ("label-agreement", confirmed, rank == 0),
            ("correction-plausibility", ~confirmed, rank < config.correction_top_k)):
        count, what = int(rows.sum()), FEEDBACK_ROWS[name]
        if count >= config.min_feedback_rows:
            observed[name] = float(np.mean(value[rows]))
            notes[name] = f"{FEEDBACK_NOTES[name]}, on the {count} {what} rows"
        else:
            notes[name] = (f"skipped: {count} {what} rows, fewer than min_feedback_rows "
                           f"({config.min_feedback_rows})")
    return observed, notes


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
        "correction-plausibility": (config.min_correction_plausibility, 1),
    }


# Checks measured and reported for a batch of this origin, never failing it.
REPORTED_ONLY = {FILE: frozenset(), FEEDBACK: frozenset({"class-shares"})}


def reported_only(origin: str) -> frozenset[str]:
    return REPORTED_ONLY.get(origin, frozenset())


def bound_text(low, high) -> str:
    if high is None:
        return f">= {fmt(low)}"
    return f"<= {fmt(high)}" if low in (0, None) else f">= {fmt(low)}"


def bound_of(name: str, limits: tuple, origin: str) -> str:
    if name in reported_only(origin):
        return f"not enforced for {origin} batches (files: {bound_text(*limits)})"
    return bound_text(*limits)


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
    "correction-plausibility": "skipped: for feedback batches (their corrected rows)",
}
FEEDBACK_NOTES = {
    "class-shares": "total variation distance to MNIST train's class shares; corrections "
                    "cluster on the digits the model confuses",
    "ink-stroke": "largest gap of a mean image statistic to MNIST train digits of the "
                  "batch's classes, in MNIST train sds",
    "feature-drift": "AUC of a classifier telling the batch from MNIST train digits of the "
                     "batch's classes on the production model's penultimate features",
    "label-agreement": "share of labels the production model agrees with",
    "correction-plausibility": "share of corrected labels among the production model's "
                               "top digits (correction_top_k)",
}
FEEDBACK_ROWS = {"label-agreement": "confirmed", "correction-plausibility": "corrected"}


def check_batch(source: Source, reference: Reference, model, config: BatchChecks,
                work_dir: Path) -> list[Check]:
    """Measure everything measurable, validate the numbers with GX, return every check."""
    observed: dict[str, object] = measure_basics(source, config)
    feedback = source.origin == FEEDBACK
    notes = {**NOTES, **(FEEDBACK_NOTES if feedback else {})}
    compared = (matched_reference(reference, source.labels, config.min_rows) if feedback
                else reference.train_images)
    matched = compared is not reference.train_images
    if not matched:  # too few of the batch's classes in the sample: the whole sample
        notes["feature-drift"] = NOTES["feature-drift"]
    if len(source.images):
        observed["leakage"], observed["likely-leakage"] = measure_leakage(
            source.images, reference.protected, config)
        observed["class-shares"], shift = measure_drift(source, reference, compared)
        observed["ink-stroke"] = shift.gap
        notes["ink-stroke"] = (f"{shift.stat}: batch mean {shift.batch_mean:.3g}, "
                               f"MNIST train {shift.reference_mean:.3g}"
                               + (" (same classes)" if matched else ""))
    model_observed, model_notes = measure_with_model(source, compared, model, config)
    observed.update(model_observed)
    notes.update(model_notes)
    verdicts = validate_numbers(observed, config, work_dir, reported_only(source.origin))
    return [Check(name, observed.get(name), bound_of(name, limits, source.origin),
                  verdicts.get(name, True), note_of(name, observed, notes, source))
            for name, limits in bounds(config).items()]


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


def note_of(name: str, observed: dict, notes: dict, source: Source) -> str:
    if name == "readable" and source.unreadable:
        return f"e.g. {source.unreadable[0]}"
    if name not in observed and not notes[name].startswith("skipped"):
        return "skipped: no images"
    return notes[name]


def validate_numbers(observed: dict, config: BatchChecks, work_dir: Path,
                     reported_only: frozenset[str] = frozenset()) -> dict[str, bool]:
    """GX on a one-row frame of the measured numbers: check -> success (the reported-only
    ones have no expectation)."""
    frame = pd.DataFrame([{name: float(value) for name, value in observed.items()}])
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high,
                                          meta={"split": "batch"})
        for name, (low, high) in bounds(config).items()
        if name in observed and name not in reported_only
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


# --- Row by row, for the batch's report (digits.checks.report) ------------------------


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
