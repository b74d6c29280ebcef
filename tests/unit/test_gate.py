"""The promotion rule: the threshold is a floor, and a challenger may not regress."""

import pytest

from digits.errors import UsageError
from digits.registry.gate import check_threshold, decide


def test_promotes_at_threshold():
    assert decide(0.97, 0.97).promote


def test_rejects_below_threshold_and_says_why():
    decision = decide(0.9699, 0.97)
    assert not decision.promote
    assert decision.reason == "accuracy 0.9699 < threshold 0.97"


def test_rejects_regression_beyond_tolerance():
    decision = decide(0.990, 0.97, 0.9925, regression_tolerance=0.002, production_version="v3")
    assert not decision.promote
    assert decision.reason == "accuracy 0.9900 < production v3 (0.9925) - tolerance 0.002"


def test_a_promotion_says_what_it_was_compared_with():
    decision = decide(0.9710, 0.97, 0.9725, regression_tolerance=0.002, production_version="v1")
    assert decision.promote
    assert decision.reason == (
        "accuracy 0.9710 >= threshold 0.97 and >= production v1 (0.9725) - tolerance 0.002"
    )


def test_accepts_regression_within_tolerance():
    assert decide(0.991, 0.97, production_accuracy=0.9925, regression_tolerance=0.002).promote


def test_regression_check_can_be_turned_off():
    decision = decide(0.98, 0.97, production_accuracy=0.999, regression_tolerance=None)
    assert decision.promote
    assert decision.production_accuracy is None


@pytest.mark.parametrize("threshold", [0.5, 0.9699, 1.01])
def test_threshold_never_weaker_than_default(threshold):
    with pytest.raises(UsageError, match="--threshold"):
        check_threshold(threshold)


def test_threshold_may_be_stricter():
    assert check_threshold(0.995) == 0.995
