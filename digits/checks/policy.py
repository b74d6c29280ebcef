"""What each check on a new batch enforces: its bounds (from `BatchChecks`), the origins
it only reports for, its bound as text, and the notes that say what it measured.

docs/architecture.md has the table of which check applies to which origin.
"""

from __future__ import annotations

from digits.checks.settings import BatchChecks
from digits.data.intake import FEEDBACK, FILE


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


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
        "confirmed-rows": (config.min_feedback_rows, None),
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
    "confirmed-rows": "skipped: for feedback batches (the rows people confirmed)",
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
    "confirmed-rows": "rows whose label is the answer given: label agreement is measured "
                      "on them",
    "label-agreement": "share of labels the production model agrees with",
    "correction-plausibility": "share of corrected labels among the production model's "
                               "top digits (correction_top_k) and given at least "
                               "min_correction_probability",
}
FEEDBACK_ROWS = {"label-agreement": "confirmed", "correction-plausibility": "corrected"}
