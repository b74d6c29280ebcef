"""The checks on a new batch (`digits add`): each measures one number and compares it with
its bound in `BatchChecks`; Great Expectations validates the one-row frame of those numbers,
so every check is also a GX result.

Order matters only for the reason line: the first failing check names the batch's fault.

A batch read from the prediction log (origin "feedback", `digits feedback export --add`)
is judged as what it is: people's labels for the service's answers, whose corrections are
the production model's mistakes by construction and cluster on the digits it confuses. It
needs `min_feedback_rows` confirmed rows (confirmed-rows: too few is a quarantine, never a
skipped check), its label agreement is measured on them, its corrected labels must be
plausible to the model (among its top `correction_top_k`, given at least
`min_correction_probability`), its class shares are reported but not enforced, and its ink
and feature drift are measured against MNIST train digits of the same classes
(`matched_reference`).
docs/architecture.md has the table of which check applies to which origin. What is measured
is digits.checks.measure; the bounds and notes, digits.checks.policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from digits.checks.docs import open_context
from digits.checks.measure import (
    Reference,
    held_out_parts,
    matched_reference,
    measure_basics,
    measure_drift,
    measure_feedback_rows,
    measure_leakage,
    measure_with_model,
    nearest_protected,
)
from digits.checks.policy import FEEDBACK_NOTES, NOTES, bound_of, bounds, fmt, reported_only
from digits.checks.settings import BatchChecks
from digits.checks.suites import run_suite
from digits.config import IMAGE_SHAPE
from digits.data.batches import Batch
from digits.data.intake import FEEDBACK, Source


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


def check_batch(source: Source, reference: Reference, model, config: BatchChecks,
                work_dir: Path) -> list[Check]:
    """Measure everything measurable, validate the numbers with GX, return every check."""
    observed: dict[str, object] = {**measure_basics(source, config),
                                   **measure_feedback_rows(source)}
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
