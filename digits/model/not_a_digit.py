""""Not a digit": the rule that flags an answer, fitted per version.

Trained with outlier exposure (digits.model.exposure), the model answers things that are
no digit with a low top probability, so the rule is that probability alone: an answer is
"not a digit" when its top (calibrated) probability is under a threshold. The threshold is
fitted after calibration on the validation split, as the share FLAGGED_DIGITS of its
digits that it may flag, and recorded with the version; every reader of answers (the
service, `digits.load`, `digits predict`, the log) applies `flags` with it. NumPy only:
serving an ONNX version imports no Keras.
"""

from __future__ import annotations

import numpy as np

# Validation digits the threshold flags, under the 1% of MNIST test digits it may flag: on
# seven trained models MNIST test saw 0.72-1.34 times the share fitted on the 5,000
# validation digits, and at 0.7% three seeds flagged 0.59-0.94% (benchmarks/results.md).
FLAGGED_DIGITS = 0.007


def fit_rule(probabilities: np.ndarray, method: str) -> dict:
    """The threshold that flags FLAGGED_DIGITS of these (validation) digits, as recorded."""
    top = np.sort(np.asarray(probabilities, np.float64).max(axis=1))
    # The top just above the lowest FLAGGED_DIGITS of them: what is under it is flagged, so
    # exactly those, or fewer where tops tie at it, never more (and never a bound over 1).
    count = int(np.floor(FLAGGED_DIGITS * len(top)))
    threshold = float(top[count]) if count else 0.0
    return {
        "rule": "top probability under the threshold",
        "threshold": threshold,
        "method": method,
        "fitted_on": "validation",
        "rows": len(top),
        "flagged_validation": float(np.mean(top < threshold)),
    }


def flags(probabilities: np.ndarray, rule: dict | None) -> np.ndarray:
    """Which answers are "not a digit" under `rule` (a version's manifest block); none
    without one (versions published before the rule)."""
    # In float64, as fitted: NumPy compares float32 answers (what Predictor.predict gives)
    # with a Python float in float32, rounding the threshold, and answers at it would turn.
    top = np.asarray(probabilities, np.float64).max(axis=-1)
    if not rule:
        return np.zeros(top.shape, bool)
    return top < rule["threshold"]
