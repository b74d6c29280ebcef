"""The not-a-digit rule (digits.model.not_a_digit), outlier exposure's loss and metric
(digits.model.exposure) and the negatives training draws (digits.data.negatives)."""

import keras
import numpy as np
import pytest
from scipy.special import softmax

from digits.data.negatives import GLYPHS, draw_negatives, glyphs_of, load_font, matplotlib_file
from digits.data.normalize import center_of_mass
from digits.errors import RegistryError
from digits.model.exposure import NEGATIVE, DigitAccuracy, exposure_loss
from digits.model.not_a_digit import FLAGGED_DIGITS, TOP, fit_rule, flags, score, spread
from digits.registry.manifest import check_manifest
from tests.helpers.manifests import make_manifest

WEIGHT = 0.7  # the flat target's, as `--exposure-weight` sets it


def answers(tops: list[float]) -> np.ndarray:
    """(N, 10) probabilities whose top is each of `tops`, the rest spread evenly."""
    rows = np.tile((1 - np.array(tops))[:, None] / 9, (1, 10))
    rows[:, 3] = tops
    return rows


def test_the_rule_flags_the_share_of_validation_digits_it_was_fitted_for():
    tops = np.linspace(0.3, 1.0, 1000)
    rule = fit_rule(answers(list(tops)), "outlier exposure")
    flagged = flags(answers(list(tops)), rule)
    assert flagged.sum() == int(FLAGGED_DIGITS * 1000) == 7
    assert flagged[:7].all() and not flagged[7:].any()  # the least confident ones
    assert rule["flagged_validation"] == pytest.approx(0.007)
    assert rule["method"] == "outlier exposure" and rule["rows"] == 1000


def test_ties_at_the_threshold_are_kept_alike_so_no_more_than_the_share_is_flagged():
    tops = [0.3] * 2 + [0.5] * 10 + [0.9] * 988
    rule = fit_rule(answers(tops), "digits only")
    shuffled = np.random.default_rng(0).permutation(tops)
    # the two under the tie only, whatever the order: 7 of the 10 tied would depend on it
    assert flags(answers(list(shuffled)), rule).sum() == 2
    assert rule["flagged_validation"] == pytest.approx(0.002)


def test_a_validation_answered_all_at_one_gives_a_threshold_the_manifest_takes():
    rule = fit_rule(answers([1.0] * 1000), "digits only")
    assert rule["threshold"] == pytest.approx(spread(answers([1.0]))[0]) and rule["threshold"] > 14
    assert not flags(answers([1.0] * 5), rule).any() and flags(answers([0.99]), rule).all()
    # the schema takes a spread over 1, and bounds a top probability's threshold by 1
    check_manifest({**make_manifest(), "not_a_digit": rule}, "v1", run_fields=True)
    with pytest.raises(RegistryError, match="threshold"):
        check_manifest({**make_manifest(), "not_a_digit": {**rule, "rule": TOP}}, "v1",
                       run_fields=True)


def test_the_spread_is_zero_for_a_flat_answer_and_scales_with_one_over_the_temperature():
    assert spread(np.full((1, 10), 0.1))[0] == pytest.approx(0.0, abs=1e-6)
    logits = np.random.default_rng(1).normal(0, 1, (200, 10))
    at_one, sharpened = (spread(softmax(logits / t, axis=1)) for t in (1.0, 0.5))
    # the top logit over the mean logit, divided by T: every answer's spread scales alike
    np.testing.assert_allclose(sharpened, at_one / 0.5, rtol=1e-3)


def test_an_answer_torn_between_two_digits_is_kept_and_one_near_flat_is_flagged():
    torn = np.zeros((1, 10))
    torn[0, [4, 9]] = 0.6, 0.4  # a 4 or a 9: a digit all the same
    near_flat = answers([0.6])  # 0.6, and nothing else ruled out: as taught for negatives
    rule = fit_rule(np.concatenate([near_flat, torn.repeat(999, axis=0)]), "outlier exposure")
    assert flags(np.concatenate([torn, near_flat]), rule).tolist() == [False, True]
    assert not flags(np.concatenate([torn, near_flat]), {**rule, "rule": TOP,
                                                         "threshold": 0.5}).any()


def test_versions_published_before_the_spread_keep_their_top_probability_rule():
    rule = {"rule": TOP, "threshold": 0.5}
    assert flags(answers([0.4, 0.6]), rule).tolist() == [True, False]
    assert score(answers([0.4]), rule)[0] == pytest.approx(0.4)


def test_float32_answers_are_flagged_as_the_float64_fit_counted():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), 1000).astype(np.float32)
    rule = fit_rule(probabilities, "digits only")
    assert flags(probabilities, rule).sum() == 7  # what Predictor.predict gives: float32


def test_too_few_validation_digits_flag_nothing_and_no_rule_flags_nothing():
    rule = fit_rule(answers([0.2, 0.9]), "digits only")
    assert rule["threshold"] == 0.0 and not flags(answers([0.1, 0.2]), rule).any()
    assert not flags(answers([0.1, 0.2]), None).any()  # a version published before the rule


def test_the_loss_is_cross_entropy_for_digits_and_a_weighted_flat_target_for_negatives():
    probabilities = np.full((2, 10), 0.02, np.float32)
    probabilities[:, 4] = 0.82
    losses = keras.ops.convert_to_numpy(
        exposure_loss(0.0, WEIGHT)(np.array([4, NEGATIVE]), probabilities))
    assert losses[0] == pytest.approx(-np.log(0.82), rel=1e-5)
    flat = -np.mean(np.log(probabilities[1]))
    assert losses[1] == pytest.approx(WEIGHT * flat, rel=1e-5)
    uniform = np.full((1, 10), 0.1, np.float32)
    flat_loss = exposure_loss(0.0, WEIGHT)(np.array([NEGATIVE]), uniform)
    assert keras.ops.convert_to_numpy(flat_loss)[0] == (
        pytest.approx(WEIGHT * np.log(10), rel=1e-5))  # a flat answer: the least


def test_accuracy_counts_the_digits_only():
    metric = DigitAccuracy(name="accuracy")
    probabilities = np.eye(10, dtype=np.float32)[[1, 2, 5]]
    metric.update_state(np.array([1, 7, NEGATIVE]), probabilities)
    assert float(metric.result()) == pytest.approx(0.5)


def test_negatives_are_mnist_format_the_same_for_a_seed_and_different_for_another():
    first, again, other = draw_negatives(40, 3), draw_negatives(40, 3), draw_negatives(40, 4)
    assert first.shape == (40, 28, 28) and first.dtype == np.uint8
    assert (first == again).all() and not (first == other).all()
    assert (first.reshape(40, -1).max(axis=1) >= 250).all()  # ink peaks as MNIST's does
    for image in first:  # centred by mass, as normalize_image centres an upload
        assert np.abs(center_of_mass(image.astype(float)) - 14).max() <= 1


def test_no_glyph_written_like_a_digit_is_drawn():
    assert not set(GLYPHS) & set("0123456789OoQIliJjTZzSs$§GbBgqδ!-|/.,(){}")
    font = load_font(matplotlib_file("fonts/ttf", "DejaVuSans.ttf"))
    assert set(glyphs_of(font)) == set(GLYPHS)  # DejaVu draws them all


def test_the_model_card_says_what_its_rule_measures():
    from digits.registry.card import render_card

    manifest = {"version": "v1", "created_at": "2026-12-07T00:00:00Z", "model": "cnn",
                "metrics": {"accuracy": 0.99}}
    spread_card = render_card({**manifest, "not_a_digit": fit_rule(answers([0.9] * 10), "x")})
    assert "its spread, the log of its top probability over the geometric mean" in spread_card
    top_card = render_card({**manifest, "not_a_digit": {"rule": TOP, "threshold": 0.5}})
    assert "its top probability is under the threshold" in top_card
    assert "## Not a digit" not in render_card(manifest)  # a version without a rule
