"""The bounds of the checks on a batch added with `digits add`, beside the checks they
configure (digits.checks.measure, policy and batch) and the reading they limit
(digits.data.intake: `max_rows`, `max_image_pixels`).
"""

from __future__ import annotations

from dataclasses import dataclass

from digits.config import MAX_IMAGE_PIXELS, MAX_INPUT_ROWS
from digits.errors import UsageError


@dataclass(frozen=True)
class BatchChecks:
    """Bounds of the checks on a batch added with `digits add` (digits.checks.batch).

    Defaults measured on MNIST (see the issue 12 report): batches of MNIST train digits
    redrawn with small affine distortions and other stroke widths ("other writers") pass;
    noise, random shapes, shuffled labels and MNIST test digits fail.
    """

    min_rows: int = 20  # fewer images say too little about a writer to be worth a run
    # Read limits: a batch over them is refused before it is decoded (exit 4, no checks).
    max_rows: int = MAX_INPUT_ROWS
    max_image_pixels: int = MAX_IMAGE_PIXELS  # per image file of a folder batch
    max_duplicate_share: float = 0.05  # a file saved twice is a slip; many copies over-weight
    blank_ink_threshold: float = 0.01  # as for MNIST: under 1% lit pixels is no digit
    max_blank_share: float = 0.02  # a few empty boxes of a form are fine, more is a broken export
    # Leakage, on normalised images blurred by 1 px (so a re-saved or re-sized copy stays
    # close): RMS pixel gap (0..1 scale) to the nearest MNIST test or held-out batch image.
    # A copy of a test digit, raw or through PNG at 28 px, lands at 0; distinct digits at
    # 0.013 or more (closest of 5,000 MNIST train digits to any test digit).
    copy_distance: float = 0.005
    max_copies: int = 0  # one leaked test image already inflates every later accuracy
    # A test digit re-drawn at another size (PNG/JPEG 40..200 px) is not a pixel copy; it
    # is still far closer to its original than to the next test digit. Flag an image whose
    # nearest is under `likely_leak_distance` and under `likely_leak_ratio` of the second
    # nearest: 0.2-1.3% of distinct digits, 28-72% of re-drawn test digits.
    likely_leak_distance: float = 0.05
    likely_leak_ratio: float = 0.6
    max_likely_leak_share: float = 0.1  # 3 of 20 by chance: under 0.3% at 1.3% per image
    # Class shares: total variation distance to MNIST train's shares (0 same mix, 1 none
    # shared). A random sample of min_rows MNIST digits stays under ~0.45; a batch of
    # one digit is 0.9, of two 0.8.
    max_class_shift: float = 0.6
    # Ink and stroke statistics (ink share, intensity, box height and width, stroke width):
    # the batch mean's largest gap to MNIST train's, in MNIST standard deviations. Other
    # writers (rotated, sheared, other pens) move at most ~0.8; noise and shapes 5 to 9.
    max_stat_shift: float = 2.5
    # Production model's penultimate features: cross-validated AUC of a classifier telling
    # the batch from MNIST train. Other writers 0.55-0.71; noise and shapes 1.0.
    max_domain_auc: float = 0.9
    reference_rows: int = 2_000  # MNIST train images the batch is compared with (fixed seed)
    # Label agreement: share of the batch the production model labels as the batch does.
    # Other writers' digits: 0.92 with a 97% model; shuffled labels, noise, shapes: ~0.1.
    min_label_agreement: float = 0.8
    # Feedback batches (from the prediction log, origin "feedback"): their corrections are
    # the production model's mistakes by construction, so label agreement is measured on the
    # rows people confirmed, and a batch with fewer than this many is quarantined
    # (confirmed-rows): without them nothing but the corrections' plausibility speaks for
    # the labels (issue 28: 200 runner-up "corrections" and no confirmation got in). One
    # disagreement in 10 moves agreement by 0.1. Corrections are judged on at least as many.
    min_feedback_rows: int = 10
    # Corrections must be plausible to the production model: the person's label among its
    # `correction_top_k` most probable digits and given at least `min_correction_probability`,
    # for at least `min_correction_plausibility` of the corrected rows. Measured on real
    # MNIST with two mlps (97%; the second standing in for a production promoted since the
    # answers): 0.80-0.86 of the first's mistakes on MNIST test and on "other writers";
    # shuffled labels 0.14-0.17; each answer's runner-up for digits it got right 0.12-0.27
    # (always in the top three, but given under 1% for most).
    correction_top_k: int = 3
    min_correction_probability: float = 0.01
    min_correction_plausibility: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_rows", "max_rows", "max_image_pixels", "min_feedback_rows",
                     "correction_top_k"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} {getattr(self, name)} must be at least 1")
        shares = ("max_duplicate_share", "max_blank_share", "max_likely_leak_share",
                  "min_label_agreement", "min_correction_probability",
                  "min_correction_plausibility")
        for name in shares:
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name} {getattr(self, name)} must lie in 0..1")
