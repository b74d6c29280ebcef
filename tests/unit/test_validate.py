"""The Great Expectations suites: tidy data passes, and every expectation catches its fault."""

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from digits.checks.suites import (
    ValidationReport,
    raise_on_failure,
    validate_processed_data,
    validate_raw_data,
)
from digits.config import ValidationConfig
from digits.data.ingest import Dataset
from digits.data.splits import preprocess_data
from digits.errors import DataError, UsageError
from tests.helpers.leftovers import kill, start, wait_for_file

pytestmark = pytest.mark.slow  # every test runs Great Expectations suites (seconds each)

CONFIG = ValidationConfig()
BETWEEN = "expect_column_values_to_be_between"
SUM = "expect_column_sum_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"


def make_digits(per_class: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct digit-like images: a fixed stroke pattern per class, thinned at random."""
    strokes = np.random.default_rng(0).random((10, 20, 20)) > 0.75  # the same in every split
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    kept = strokes[labels] & (rng.random((len(labels), 20, 20)) > 0.15)
    images[:, 4:24, 4:24] = kept * rng.integers(150, 256, size=kept.shape)
    return images, labels


def make_dataset(train: list[int] | None = None, test: list[int] | None = None) -> Dataset:
    """1000 train and 200 test images, balanced, unless per-class counts say otherwise."""
    train_images, train_labels = make_digits(train or [100] * 10, seed=1)
    test_images, test_labels = make_digits(test or [20] * 10, seed=2)
    return Dataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        source="generated",
        sha256={},
    )


def failed(report: ValidationReport) -> set[tuple[str, str, str]]:
    return {(f["split"], f["expectation"], f["column"]) for f in report.failures()}


def with_pixel(images: np.ndarray, dtype, value) -> np.ndarray:
    changed = images.astype(dtype)
    changed[0, 14, 14] = value
    return changed


def thicken(images: np.ndarray) -> np.ndarray:
    """Dilate the strokes one pixel right and down: about twice the ink."""
    return np.maximum(images, np.maximum(np.roll(images, 1, axis=1), np.roll(images, 1, axis=2)))


def blank_some(data: Dataset) -> Dataset:
    images = data.train_images.copy()
    images[:50] = 0
    return replace(data, train_images=images)


def duplicate_some(data: Dataset) -> Dataset:
    images, labels = data.train_images.copy(), data.train_labels.copy()
    images[1:51], labels[1:51] = images[0], labels[0]
    return replace(data, train_images=images, train_labels=labels)


def thicken_fives(data: Dataset) -> Dataset:
    images, fives = data.test_images.copy(), data.test_labels == 5
    images[fives] = thicken(images[fives])
    return replace(data, test_images=images)


def relabel(data: Dataset, old: int, new: int) -> Dataset:
    return replace(data, train_labels=np.where(data.train_labels == old, new, data.train_labels))


RAW_FAULTS = {
    "a label missing": (
        lambda d: replace(d, train_labels=d.train_labels[:-1]),
        ("train", "expect_column_pair_values_to_be_equal", "images=labels"),
    ),
    "int16 images": (
        lambda d: replace(d, train_images=d.train_images.astype(np.int16)),
        ("train", IN_SET, "image_dtype"),
    ),
    "int64 labels": (
        lambda d: replace(d, test_labels=d.test_labels.astype(np.int64)),
        ("test", IN_SET, "label_dtype"),
    ),
    "too few train rows": (lambda d: make_dataset(train=[50] * 10), ("train", SUM, "images")),
    "too few test rows": (lambda d: make_dataset(test=[5] * 10), ("test", SUM, "images")),
    "cropped height": (
        lambda d: replace(d, train_images=d.train_images[:, :27]), ("train", BETWEEN, "height")
    ),
    "cropped width": (
        lambda d: replace(d, test_images=d.test_images[:, :, :27]), ("test", BETWEEN, "width")
    ),
    "flattened": (
        lambda d: replace(d, train_images=d.train_images.reshape(-1, 784)),
        ("train", BETWEEN, "height"),
    ),
    "pixel above 255": (
        lambda d: replace(d, train_images=with_pixel(d.train_images, np.int16, 300)),
        ("train", BETWEEN, "pixel_max"),
    ),
    "negative pixel": (
        lambda d: replace(d, test_images=with_pixel(d.test_images, np.int16, -1)),
        ("test", BETWEEN, "pixel_min"),
    ),
    "NaN pixel": (
        lambda d: replace(d, train_images=with_pixel(d.train_images, np.float32, np.nan)),
        ("train", SUM, "nonfinite"),
    ),
    "label 10": (
        lambda d: replace(d, test_labels=np.where(d.test_labels == 9, 10, d.test_labels)),
        ("test", IN_SET, "label"),
    ),
    "digit 3 missing": (
        lambda d: relabel(d, 3, 4),
        ("train", "expect_column_distinct_values_to_contain_set", "label"),
    ),
    "5% blank": (blank_some, ("train", BETWEEN, "ink")),
    "5% duplicates": (
        duplicate_some,
        ("train", "expect_column_proportion_of_unique_values_to_be_between", "digest"),
    ),
    "rare digit": (
        lambda d: make_dataset(train=[100] * 3 + [20] + [100] * 6), ("train", BETWEEN, "share")
    ),
    "dominant digit": (
        lambda d: make_dataset(train=[100, 300] + [100] * 8), ("train", BETWEEN, "share")
    ),
    "thicker test fives": (thicken_fives, ("test", BETWEEN, "ink_gap")),
}


@pytest.fixture(scope="module")
def tidy() -> Dataset:
    return make_dataset()


def test_tidy_raw_data_passes(tidy, tmp_path):
    exact = ValidationConfig(exact_rows={"train": 1000, "test": 200})
    report = validate_raw_data(tidy, exact, tmp_path / "gx")
    assert report.success, report.summary()
    assert report.suite == "raw" and report.failures() == []
    assert {r["split"] for r in report.results} == {"train", "test"}
    raise_on_failure(report)  # does not raise


def test_every_raw_expectation_has_a_fault_that_breaks_it(tidy, tmp_path):
    report = validate_raw_data(tidy, CONFIG, tmp_path / "gx")
    checked = {(r["expectation"], r["column"]) for r in report.results}
    assert checked == {(expectation, column) for _, (_, expectation, column) in RAW_FAULTS.values()}


@pytest.mark.parametrize("fault", RAW_FAULTS, ids=list(RAW_FAULTS))
def test_raw_suite_catches(fault, tidy, tmp_path, caplog):
    corrupt, expected = RAW_FAULTS[fault]
    report = validate_raw_data(corrupt(tidy), CONFIG, tmp_path / "gx")
    assert not report.success
    assert expected in failed(report), report.summary()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # Data Docs rendered


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_fails_without_crashing(split, tidy, tmp_path):
    images, labels = getattr(tidy, f"{split}_images"), getattr(tidy, f"{split}_labels")
    empty = replace(tidy, **{f"{split}_images": images[:0], f"{split}_labels": labels[:0]})
    report = validate_raw_data(empty, CONFIG, tmp_path / "gx")
    assert {(split, SUM, "images"), (split, BETWEEN, "share")} <= failed(report)


def test_exact_rows_refuse_one_row_more(tidy, tmp_path):
    exact = ValidationConfig(exact_rows={"train": 999, "test": 200})
    report = validate_raw_data(tidy, exact, tmp_path / "gx")
    assert failed(report) == {("train", SUM, "images")}
    assert next(f["observed"] for f in report.failures()) == 1000


@pytest.fixture(scope="module")
def splits(tidy):
    return preprocess_data(tidy, validation_size=100, seed=0)


def test_tidy_processed_data_passes(splits, tmp_path):
    exact = ValidationConfig(exact_rows={"train": 1000, "test": 200})
    report = validate_processed_data(splits, exact, tmp_path / "gx")
    assert report.success, report.summary()
    assert {r["split"] for r in report.results} == {"train", "validation", "test"}


def with_nan(images: np.ndarray) -> np.ndarray:
    return with_pixel(images, np.float32, np.nan)


PROCESSED_FAULTS = {
    "not scaled": (lambda s: replace(s, x_train=s.x_train * 255), ("train", BETWEEN, "pixel_max")),
    "shifted": (lambda s: replace(s, x_test=s.x_test - 0.5), ("test", BETWEEN, "pixel_min")),
    "NaN pixel": (lambda s: replace(s, x_val=with_nan(s.x_val)), ("validation", SUM, "nonfinite")),
    "inf pixel": (
        lambda s: replace(s, x_test=with_pixel(s.x_test, np.float32, np.inf)),
        ("test", SUM, "nonfinite"),
    ),
    "float64 images": (
        lambda s: replace(s, x_train=s.x_train.astype(np.float64)),
        ("train", IN_SET, "image_dtype"),
    ),
    "uint8 labels": (
        lambda s: replace(s, y_val=s.y_val.astype(np.uint8)),
        ("validation", IN_SET, "label_dtype"),
    ),
}


@pytest.mark.parametrize("fault", PROCESSED_FAULTS, ids=list(PROCESSED_FAULTS))
def test_processed_suite_catches(fault, splits, tmp_path, caplog):
    corrupt, expected = PROCESSED_FAULTS[fault]
    report = validate_processed_data(corrupt(splits), CONFIG, tmp_path / "gx")
    assert not report.success
    assert expected in failed(report), report.summary()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_processed_rows_count_train_and_validation_together(splits, tmp_path):
    exact = ValidationConfig(exact_rows={"train": 1000, "test": 200})
    dropped = replace(splits, x_val=splits.x_val[1:], y_val=splits.y_val[1:])
    report = validate_processed_data(dropped, exact, tmp_path / "gx")
    assert failed(report) == {("train", SUM, "images")}


def test_failure_message_names_split_expectation_and_column(tidy, tmp_path):
    report = validate_raw_data(blank_some(tidy), CONFIG, tmp_path / "gx")
    with pytest.raises(DataError, match=r"^data validation failed \(raw\): ") as error:
        raise_on_failure(report)
    assert "train: expect_column_values_to_be_between(ink)" in str(error.value)
    assert error.value.exit_code == 4


def test_data_docs_stay_inside_docs_dir(tidy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    report = validate_raw_data(tidy, CONFIG, tmp_path / "gx")
    assert report.docs_path == tmp_path / "gx" / "raw" / "index.html"
    assert "raw-images" in report.docs_path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gx"]  # no gx/ context, no home files
    assert [p.name for p in (tmp_path / "gx").iterdir()] == ["raw"]  # build folder cleaned up


def test_concurrent_runs_share_docs_dir(tidy, splits, tmp_path):
    docs = tmp_path / "gx"
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(validate_raw_data, tidy, CONFIG, docs) for _ in range(2)]
        runs.append(pool.submit(validate_processed_data, splits, CONFIG, docs))
        reports = [run.result() for run in runs]
    assert all(report.success for report in reports)
    assert all(report.docs_path.is_file() for report in reports)


@pytest.fixture
def artifacts(monkeypatch) -> list[dict]:
    """Record the artifacts the task wrappers publish instead of sending them to Prefect."""
    published = []
    record = published.append
    monkeypatch.setattr("tasks.validate.create_table_artifact", lambda **kw: record(kw))
    monkeypatch.setattr("tasks.validate.create_markdown_artifact", lambda **kw: record(kw))
    return published


@pytest.fixture
def validate_tasks():
    """The Prefect task wrappers, imported only by the tests that need them (Prefect is slow
    to import, and collection imports every test module)."""
    import tasks.validate

    return tasks.validate


def test_task_publishes_artifacts_when_data_pass(tidy, tmp_path, artifacts, validate_tasks):
    report = validate_tasks.validate_raw.fn(tidy, CONFIG, tmp_path / "gx")
    table, markdown = artifacts
    assert table["key"] == "validation-raw" and len(table["table"]) == len(report.results)
    assert set(table["table"][0]) == {"split", "expectation", "column", "observed", "success"}
    assert markdown["key"] == "validation-raw-docs"
    assert str(report.docs_path) in markdown["markdown"]


def test_task_publishes_artifacts_then_raises_when_data_fail(
    splits, tmp_path, artifacts, validate_tasks
):
    broken = replace(splits, x_train=splits.x_train * 255)
    with pytest.raises(DataError, match="processed"):
        validate_tasks.validate_processed.fn(broken, CONFIG, tmp_path / "gx")
    assert [a["key"] for a in artifacts] == ["validation-processed", "validation-processed-docs"]
    assert "FAILED" in artifacts[1]["markdown"]


def linked_pages(index: Path) -> set[Path]:
    """The validation result pages that a Data Docs index.html links, relative to its site."""
    return {Path(link) for link in re.findall(r"validations/[^'\"\s]+?\.html", index.read_text())}


def result_pages(site: Path) -> set[Path]:
    return {page.relative_to(site) for page in site.glob("validations/**/*.html")}


def test_data_docs_keep_the_last_runs(tidy, tmp_path):
    config = ValidationConfig(docs_runs_kept=2)
    linked = []
    for _ in range(4):
        report = validate_raw_data(tidy, config, tmp_path / "gx")
        linked.append(linked_pages(report.docs_path))
    site = tmp_path / "gx" / "raw"

    assert all(len(pages) == 3 for pages in linked)  # one page per suite, all different runs
    assert len(set.union(*linked)) == 12
    assert result_pages(site) == linked[-2] | linked[-1]  # the two runs before are pruned
    assert all((site / page).is_file() for page in linked[-1])
    assert not [folder for folder in site.glob("validations/*/*/*") if not any(folder.iterdir())]


def test_pruning_never_breaks_the_index_of_concurrent_runs(tidy, tmp_path):
    config = ValidationConfig(docs_runs_kept=1)
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(validate_raw_data, tidy, config, tmp_path / "gx") for _ in range(3)]
        index = [run.result() for run in runs][0].docs_path
    linked = linked_pages(index)
    assert len(linked) == 3 and all((index.parent / page).is_file() for page in linked)
    assert len(result_pages(index.parent)) <= 6  # the newest run and at most the index's own


def test_docs_runs_kept_must_be_positive():
    with pytest.raises(UsageError, match="docs"):
        ValidationConfig(docs_runs_kept=0)


def test_validation_sweeps_what_a_killed_run_left_but_not_a_live_one(tidy, tmp_path):
    docs = tmp_path / "gx"

    def build_forever(marker: Path):
        """A process validating into `docs`, stuck once its Data Docs are built."""
        code = (
            "import time; from pathlib import Path; import digits.checks.suites as v\n"
            "from digits.config import ValidationConfig\n"
            "from tests.unit.test_validate import make_dataset\n"
            f"def hang(*args): Path({str(marker)!r}).touch(); time.sleep(600)\n"
            "v.publish_docs = hang\n"
            f"v.validate_raw_data(make_dataset(), ValidationConfig(), Path({str(docs)!r}))\n"
        )
        process = start(code)
        wait_for_file(marker, process)
        return process

    dead = build_forever(tmp_path / "dead-built")
    kill(dead)
    left = set(docs.glob(".build-*"))
    assert any(path.is_dir() for path in left), "the kill left a build folder"
    live = build_forever(tmp_path / "live-built")
    try:
        live_dirs = {p for p in docs.glob(".build-*") if p.is_dir()} - left
        assert len(live_dirs) == 1

        assert validate_raw_data(tidy, CONFIG, docs).success

        assert {p for p in docs.glob(".build-*") if p.is_dir()} == live_dirs
        assert not left & set(docs.glob(".build-*"))
    finally:
        kill(live)
