"""Each check of `digits add` on generated digits: a batch that fails exactly that check is
quarantined with a reason naming it; a batch like the reference passes."""


import numpy as np
import pytest
from PIL import Image

from digits.checks.batch import check_batch, report_of
from digits.checks.settings import BatchChecks
from digits.data.intake import Source, read_source
from tests.helpers.batchstore import generated_reference
from tests.helpers.synth import make_digits, make_prototypes, noise_images

CONFIG = BatchChecks()


@pytest.fixture(scope="module")
def reference():
    return generated_reference(CONFIG)


def good(n=60, seed=5):
    images, labels = make_digits(n, seed, make_prototypes())
    return images, labels.astype(np.int64)


def verdict(reference, images, labels, tmp_path, model=None, unreadable=()):
    checks = check_batch(Source("batch", images, np.asarray(labels, np.int64), list(unreadable)),
                         reference[0], model, CONFIG, tmp_path)
    return report_of(checks), {check.name: check for check in checks}


def test_a_batch_like_the_reference_is_accepted_without_a_model(reference, tmp_path):
    report, checks = verdict(reference, *good(), tmp_path)
    assert report["status"] == "accepted", report["reason"]
    assert checks["label-agreement"].observed is None
    assert "no production model" in checks["label-agreement"].note


def fails(reference, tmp_path, images, labels, check, **kwargs):
    report, _ = verdict(reference, images, labels, tmp_path, **kwargs)
    assert report["status"] == "quarantined"
    assert report["reason"].startswith(f"{check}: observed "), report["reason"]
    assert "bound" in report["reason"]
    return report["reason"]


def test_too_few_images(reference, tmp_path):
    images, labels = good(CONFIG.min_rows - 1)
    assert "bound >= 20" in fails(reference, tmp_path, images, labels, "rows")


def test_labels_outside_0_to_9(reference, tmp_path):
    images, labels = good()
    labels[:2] = [10, -1]
    assert "observed 2" in fails(reference, tmp_path, images, labels, "labels")


def test_duplicates_within_the_batch(reference, tmp_path):
    images, labels = good()
    images[:10], labels[:10] = images[10:20], labels[10:20]
    fails(reference, tmp_path, images, labels, "duplicates")


def test_blank_images(reference, tmp_path):
    images, labels = good()
    images[:5] = 0
    fails(reference, tmp_path, images, labels, "blank")


def test_one_test_image_is_leakage(reference, tmp_path):
    images, labels = good()
    images[7] = reference[1][42]
    assert "observed 1," in fails(reference, tmp_path, images, labels, "leakage")


def test_redrawn_test_images_are_likely_leakage(reference, tmp_path):
    images, labels = good()
    # Test digits with a few ink pixels gone: no copy, yet far closer to their original
    # than to any other test digit.
    redrawn = reference[1][:20].copy()
    redrawn[:, 12:14, 10:18] = 0
    images[:20] = redrawn
    fails(reference, tmp_path, images, labels, "likely-leakage")


def test_one_digit_only_is_a_class_shift(reference, tmp_path):
    images, _ = make_digits(60, 5, make_prototypes())
    fails(reference, tmp_path, images, np.full(60, 3), "class-shares")


def test_noise_is_an_ink_shift(reference, tmp_path):
    _, labels = good()
    fails(reference, tmp_path, noise_images(60, 1), labels, "ink-stroke")


def test_unreadable_files_are_named(reference, tmp_path):
    images, labels = good()
    reason = fails(reference, tmp_path, images, labels, "readable",
                   unreadable=["batch/3/x.png: corrupt or unreadable image"])
    assert "batch/3/x.png" in reason


def test_a_folder_is_normalised_as_predict_does_and_bad_files_are_listed(tmp_path):
    for label in (0, 7):
        (tmp_path / str(label)).mkdir()
        digit = np.zeros((64, 48), np.uint8)
        digit[10:50, 20:26] = 255
        Image.fromarray(255 - digit).save(tmp_path / str(label) / "a.png")  # dark on light
    (tmp_path / "7" / "broken.png").write_bytes(b"not a png")
    source = read_source(tmp_path)
    assert source.images.shape == (2, 28, 28) and source.images.max() == 255
    assert source.images[:, 0].max() == 0  # white digit on black, inside the box
    assert source.labels.tolist() == [0, 7]
    assert len(source.unreadable) == 1 and "broken.png" in source.unreadable[0]


def test_npz_must_hold_mnist_shaped_images(tmp_path):
    from digits.errors import DataError

    np.savez(tmp_path / "b.npz", images=np.zeros((3, 28, 27), np.uint8), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"b\.npz: images must be \(N, 28, 28\) uint8"):
        read_source(tmp_path / "b.npz")


# --- feedback batches: class shares reported, not enforced; the image checks stay --------


def feedback_verdict(reference, images, labels, tmp_path, answers=None):
    """The checks on a feedback batch whose rows were answered `answers` (default: each its
    label, so every row is a confirmation)."""
    labels = np.asarray(labels, np.int64)
    answers = labels if answers is None else np.asarray(answers, np.int64)
    checks = check_batch(Source("fb", images, labels, [], "feedback", answers),
                         reference[0], None, CONFIG, tmp_path)
    return report_of(checks), {check.name: check for check in checks}


def test_a_feedback_batch_of_one_digit_reports_its_class_shares_and_is_accepted(
        reference, tmp_path):
    images, labels = good(200)
    threes = images[labels == 3][:20]
    report, checks = feedback_verdict(reference, threes, np.full(20, 3), tmp_path)
    assert report["status"] == "accepted", report["reason"]
    shares = checks["class-shares"]
    assert shares.observed > CONFIG.max_class_shift and shares.passed
    assert shares.bound == "not enforced for feedback batches (files: <= 0.6)"
    assert "cluster" in shares.note
    # Its ink is compared with MNIST train 3s, in MNIST train's sds.
    assert "(same classes)" in checks["ink-stroke"].note
    for name in ("label-agreement", "correction-plausibility", "feature-drift"):
        assert checks[name].note == "skipped: no production model"
    assert checks["confirmed-rows"].observed == 20


def test_corrections_without_confirmations_are_quarantined_not_skipped(reference, tmp_path):
    # Repro 1 of issue 28 in shape: every row a correction, none confirmed. Label agreement
    # has no rows to measure, and without a production model no label check runs at all;
    # either way too few confirmations is a quarantine, not a pass.
    images, labels = good()
    runner_up = (labels + 1) % 10
    report, _ = feedback_verdict(reference, images, runner_up, tmp_path, answers=labels)
    assert report["status"] == "quarantined"
    assert report["reason"] == (
        "confirmed-rows: observed 0, bound >= 10 (rows whose label is the answer given: "
        "label agreement is measured on them)")


@pytest.mark.parametrize("confirmed, status", [(CONFIG.min_feedback_rows - 1, "quarantined"),
                                               (CONFIG.min_feedback_rows, "accepted")])
def test_a_feedback_batch_needs_min_feedback_rows_confirmations(
        reference, tmp_path, confirmed, status):
    images, labels = good()
    answers = labels.copy()
    answers[confirmed:] = (labels[confirmed:] + 1) % 10  # the rest corrected
    report, checks = feedback_verdict(reference, images, labels, tmp_path, answers=answers)
    assert report["status"] == status, report["reason"]
    assert checks["confirmed-rows"].observed == confirmed


@pytest.mark.parametrize("spoil, check", [
    (lambda images, test: images.__setitem__(slice(0, 60), noise_images(60, 1)), "ink-stroke"),
    (lambda images, test: images.__setitem__(7, test[42]), "leakage"),
    (lambda images, test: images.__setitem__(slice(0, 10), images[10:20]), "duplicates"),
    (lambda images, test: images.__setitem__(slice(0, 5), 0), "blank"),
])
def test_a_feedback_batch_still_fails_the_image_checks(reference, tmp_path, spoil, check):
    images, labels = good()
    spoil(images, reference[1])
    report, _ = feedback_verdict(reference, images, labels, tmp_path)
    assert report["status"] == "quarantined"
    assert report["reason"].startswith(f"{check}: observed "), report["reason"]


def test_a_file_batch_skips_the_feedback_row_checks(reference, tmp_path):
    _, checks = verdict(reference, *good(), tmp_path)
    for name, rows in (("correction-plausibility", "their corrected rows"),
                       ("confirmed-rows", "the rows people confirmed")):
        check = checks[name]
        assert check.observed is None and check.passed
        assert check.note == f"skipped: for feedback batches ({rows})"
    assert checks["class-shares"].bound == "<= 0.6"


def test_the_matched_reference_has_the_batch_class_shares(reference):
    from digits.checks.measure import matched_reference

    sample = reference[0]
    labels = np.array([3] * 30 + [8] * 10 + [99])  # a label outside 0..9 is not matched
    matched = matched_reference(sample, labels)
    digits = [next(d for d in range(10) if any((sample.train_images[sample.train_labels == d]
                                                == image).all(axis=(1, 2))))
              for image in matched]
    counts = np.bincount(digits, minlength=10)
    assert set(np.flatnonzero(counts)) == {3, 8}
    assert abs(counts[3] - 3 * counts[8]) < 3  # 30 to 10, in whole images
    available = np.bincount(sample.train_labels, minlength=10)
    assert counts[3] == available[3] or counts[8] == available[8]  # as many as there are
    assert matched_reference(sample, np.array([-1])) is sample.train_images
    # Too few to compare with: the whole sample.
    assert matched_reference(sample, labels, minimum=len(matched) + 1) is sample.train_images


def test_a_folder_of_only_unreadable_files_is_quarantined_naming_them(reference, tmp_path):
    folder = tmp_path / "batch"
    (folder / "3").mkdir(parents=True)
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    source = read_source(folder)
    assert len(source.images) == 0
    checks = check_batch(source, reference[0], None, CONFIG, tmp_path)
    report = report_of(checks)
    assert report["status"] == "quarantined"
    assert "broken.png" in report["reason"]
