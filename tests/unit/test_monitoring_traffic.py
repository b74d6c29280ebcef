"""Drift of served traffic (digits.monitoring.traffic, its report in .traffic_report) on
generated digits, pixels as features."""

from datetime import UTC, datetime

import numpy as np
import pytest

from digits.checks.drift import STATS, image_stats, stat_shift
from digits.checks.settings import BatchChecks
from digits.errors import UsageError
from digits.monitoring import traffic
from digits.monitoring.traffic import DriftChecks
from digits.monitoring.traffic_report import plot_traffic, render_markdown
from tests.helpers.synth import make_digits, make_prototypes, noise_images

SINCE = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
REFERENCE, REFERENCE_LABELS = make_digits(600, 1, make_prototypes())


def answered(images, confidence=0.9, seed=0):
    """Answers whose top-class probability is `confidence`, digits drawn at random."""
    digits = np.random.default_rng(seed).integers(0, 10, len(images))
    probabilities = np.full((len(images), 10), (1 - confidence) / 9, np.float32)
    probabilities[np.arange(len(images)), digits] = confidence
    return digits, probabilities


def stat_features(images):
    """Cheap features for the domain classifier where the test is about something else."""
    return np.column_stack(list(image_stats(images).values()))


def judged(images, versions=None, test_confidence=None, confidence=0.9,
           features=stat_features):
    versions = np.array(["v1"] * len(images)) if versions is None else versions
    test_confidence = {"v1": np.full(50, 0.95)} if test_confidence is None else test_confidence
    digits, probabilities = answered(images, confidence)
    measured = traffic.traffic_of(images, digits, probabilities, versions, REFERENCE,
                                  REFERENCE_LABELS, test_confidence)
    return traffic.compare(measured, features(images), features(REFERENCE), "stats",
                           BatchChecks(), DriftChecks(), SINCE,
                           traffic.answers_by_version(versions)), measured


def rows_of(report):
    return {row.name: row for row in report.rows}


@pytest.mark.slow  # the domain classifier on look-alikes, or matplotlib
def test_traffic_like_the_reference_passes_every_row():
    report, _ = judged(make_digits(200, 7, make_prototypes())[0])
    assert report.verdict == traffic.NO_DRIFT, report.line()
    assert [row.name for row in report.rows] == [
        *STATS, "domain-auc", "class-shares", "confidence"]
    assert report.line() == ("no drift: 200 images answered since 2025-01-31 12:00 UTC; "
                             "all 8 statistics within their bounds")


def test_noise_drifts_on_the_statistics_and_the_domain_classifier_on_pixels():
    report, _ = judged(noise_images(200, seed=3), features=traffic.pixel_features)
    failed = {row.name for row in report.rows if not row.passed}
    assert report.verdict == traffic.DRIFT
    assert {"ink", "intensity", "domain-auc"} <= failed and "class-shares" not in failed
    assert report.line().startswith("drift: 200 images answered since 2025-01-31 12:00 UTC; "
                                    "beyond bounds: ink ")
    assert report.payload()["failed"] == [row.name for row in report.rows if not row.passed]


def test_the_largest_statistic_gap_is_the_batch_checks_stat_shift():
    """The table's gaps are stat_shift's measure, one per statistic."""
    images = noise_images(100, seed=4)
    report, _ = judged(images)
    largest = max((row for row in report.rows if row.name in STATS), key=lambda row: row.gap)
    shift = stat_shift(images, REFERENCE)
    assert (largest.name, largest.served, largest.reference) == (
        shift.stat, pytest.approx(shift.batch_mean), pytest.approx(shift.reference_mean))
    assert largest.gap == pytest.approx(shift.gap)


def test_a_confidence_drop_beyond_the_bound_is_drift():
    images = make_digits(200, 7, make_prototypes())[0]
    report, _ = judged(images, confidence=0.8)  # 0.95 on test: a drop of 0.15 > 0.1
    row = rows_of(report)["confidence"]
    assert (row.served, row.reference, row.gap) == (
        pytest.approx(0.8), pytest.approx(0.95), pytest.approx(0.15))
    assert not row.passed and report.verdict == traffic.DRIFT
    report, _ = judged(images, confidence=0.99)  # more confident than on test: no drift
    assert rows_of(report)["confidence"].passed


def test_the_confidence_reference_weighs_each_version_by_its_answers():
    images = make_digits(200, 7, make_prototypes())[0]
    versions = np.array(["v1"] * 150 + ["v2"] * 50)
    test_confidence = {"v1": np.full(40, 0.9), "v2": np.full(60, 0.5)}
    report, measured = judged(images, versions, test_confidence)
    assert rows_of(report)["confidence"].reference == pytest.approx(0.75 * 0.9 + 0.25 * 0.5)
    assert measured.reference_weights.sum() == pytest.approx(1)
    assert report.versions == {"v1": 150, "v2": 50}


def test_answers_of_versions_not_in_the_registry_are_left_out_of_the_confidence():
    images = make_digits(200, 7, make_prototypes())[0]
    versions = np.array(["v9"] * 100 + ["v1"] * 100)  # v9: another registry's
    _, measured = judged(images, versions)
    assert len(measured.confidence) == 100
    report, _ = judged(images, versions, test_confidence={})
    row = rows_of(report)["confidence"]
    assert row.passed and row.gap is None and row.note.startswith("skipped")
    assert traffic.answers_by_version(versions) == {"v9": 100, "v1": 100}


def test_too_few_images_are_not_judged():
    report = traffic.too_few(12, SINCE, {"v1": 12}, DriftChecks())
    assert not report.drifted and report.rows == ()
    assert report.line() == ("not enough traffic: 12 images answered since 2025-01-31 12:00 "
                             "UTC, 100 needed to judge")


@pytest.mark.slow  # the domain classifier on look-alikes, or matplotlib
def test_the_artifact_holds_the_verdict_table_and_histograms():
    report, measured = judged(noise_images(120, seed=5))
    png = plot_traffic(measured)
    assert png.startswith(b"\x89PNG")
    markdown = render_markdown(report, "/srv/log", png)
    assert markdown.startswith("# Served traffic: drift\n")
    assert f"**{report.line()}**" in markdown and "Log `/srv/log`; answers by v1 (120)." in markdown
    assert markdown.count("| DRIFT |") == sum(not row.passed for row in report.rows)
    assert "![histograms](data:image/png;base64," in markdown
    assert "| statistic |" not in render_markdown(
        traffic.too_few(3, SINCE, {}, DriftChecks()), "/srv/log", None)


def test_pixel_features_are_pooled_pixels_0_to_1():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, :2, :2] = 255  # one 2x2 block lit: the first pooled pixel
    features = traffic.pixel_features(images)
    assert features.shape == (2, 196) and features[1, 0] == 1 and features.sum() == 1


def test_the_domain_sample_is_fixed_and_bounded():
    pick = traffic.sample_rows(10_000, 2_000)
    assert len(pick) == 2_000 and len(set(pick)) == 2_000
    assert np.array_equal(pick, traffic.sample_rows(10_000, 2_000))
    assert np.array_equal(traffic.sample_rows(50, 2_000), np.arange(50))


@pytest.mark.parametrize("bad", [{"min_images": 1}, {"sample_rows": 0},
                                 {"max_confidence_drop": 1.5}])
def test_drift_bounds_are_checked(bad):
    with pytest.raises(UsageError):
        DriftChecks(**bad)
