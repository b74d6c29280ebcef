""""Not a digit": the rule that flags an answer, fitted per version.

Trained with outlier exposure (digits.model.exposure), the model answers things that are
no digit with a flat answer, as it was taught for its negatives. The rule measures how far
an answer is from flat: its spread, the log of the top probability over the geometric mean
of the ten (max log p - mean log p: 0 for a flat answer, about 14.5 for a certain one; the
top logit over the mean logit, so no temperature changes which answers are under a bound).
An answer is "not a digit" when its spread is under a threshold, fitted after calibration
on the validation split as the share FLAGGED_DIGITS of its digits that it may flag, and
recorded with the version; every reader of answers (the service, `digits.load`,
`digits predict`, the log) applies `flags` with it. NumPy only: serving an ONNX version
imports no Keras.

The spread replaced the top probability (the rule of versions published before it, still
applied to them): on the same three trained models it flagged 0.92-0.94 of the held-out
set of things that are no digit where the top probability flagged 0.87-0.91, at the same
share of MNIST test (benchmarks/results.md). It was chosen on negatives the training
generator draws with another seed, never on that held-out set.
"""

from __future__ import annotations

import numpy as np

# Validation digits the threshold flags, under the 1% of MNIST test digits it may flag: on
# sixteen trained models MNIST test saw 0.67-1.60 times the share fitted on the 5,000
# validation digits (35 of them set it), and at 0.7% they flagged 0.47-1.12%
# (benchmarks/results.md); lower, every seed would flag fewer non-digits.
FLAGGED_DIGITS = 0.007
SPREAD = "spread under the threshold"
TOP = "top probability under the threshold"  # versions published before the spread
FLOOR = 1e-7  # a probability's floor in the logs: a float32 answer can hold an exact 0


def spread(probabilities: np.ndarray) -> np.ndarray:
    """Each answer's log of its top probability over the geometric mean of its ten."""
    logs = np.log(np.asarray(probabilities, np.float64) + FLOOR)
    return logs.max(axis=-1) - logs.mean(axis=-1)


def top_probability(probabilities: np.ndarray) -> np.ndarray:
    return np.asarray(probabilities, np.float64).max(axis=-1)


SCORES = {SPREAD: spread, TOP: top_probability}  # a rule's name -> its score (higher: digit)
MEANINGS = {  # a rule's name -> what it says, for the model card
    SPREAD: 'An answer is "not a digit" when its spread, the log of its top probability over '
            "the geometric mean of its ten (0 for a flat answer), is under the threshold.",
    TOP: 'An answer is "not a digit" when its top probability is under the threshold.',
}


def fit_rule(probabilities: np.ndarray, method: str) -> dict:
    """The threshold that flags FLAGGED_DIGITS of these (validation) digits, as recorded."""
    scores = np.sort(spread(probabilities))
    # The score just above the lowest FLAGGED_DIGITS of them: what is under it is flagged,
    # so exactly those, or fewer where scores tie at it, never more.
    count = int(np.floor(FLAGGED_DIGITS * len(scores)))
    threshold = float(scores[count]) if count else 0.0
    return {
        "rule": SPREAD,
        "threshold": threshold,
        "method": method,
        "fitted_on": "validation",
        "rows": len(scores),
        "flagged_validation": float(np.mean(scores < threshold)),
    }


def score(probabilities: np.ndarray, rule: dict | None) -> np.ndarray:
    """The score `rule` (a version's manifest block) compares with its threshold; the
    spread for a version without one."""
    return SCORES[rule["rule"] if rule else SPREAD](probabilities)


def flags(probabilities: np.ndarray, rule: dict | None) -> np.ndarray:
    """Which answers are "not a digit" under `rule`; none without one (versions published
    before the rule)."""
    # In float64, as fitted: NumPy compares float32 answers (what Predictor.predict gives)
    # with a Python float in float32, rounding the threshold, and answers at it would turn.
    if not rule:
        return np.zeros(np.shape(probabilities)[:-1], bool)
    return score(probabilities, rule) < rule["threshold"]
