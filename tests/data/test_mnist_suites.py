"""Both Great Expectations suites pass on the pinned MNIST (fetched once into data/)."""

from pathlib import Path

import pytest

from digits.checks.suites import validate_processed_data, validate_raw_data
from digits.config import MNIST_ROWS, ValidationConfig
from digits.data.ingest import load_mnist
from digits.data.splits import preprocess_data

pytestmark = pytest.mark.data

PINNED = ValidationConfig(exact_rows=MNIST_ROWS)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(None, Path("data"))


def test_raw_suite_passes_on_mnist(mnist, tmp_path):
    report = validate_raw_data(mnist, PINNED, tmp_path / "gx")
    assert report.success, report.summary()


def test_processed_suite_passes_on_mnist(mnist, tmp_path):
    splits = preprocess_data(mnist, validation_size=5_000, seed=42)
    report = validate_processed_data(splits, PINNED, tmp_path / "gx")
    assert report.success, report.summary()
