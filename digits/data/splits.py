"""Preprocess: scale pixels to 0..1 and carve a validation split out of train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits.data.ingest import Dataset

# The exported model starts with Rescaling(PIXEL_SCALE), so consumers feed raw 0..255.
PIXEL_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class Splits:
    """Model-ready data: float32 images in 0..1 shaped (N, 28, 28), int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def rows(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) * np.float32(PIXEL_SCALE)


def split_validation(
    images: np.ndarray, labels: np.ndarray, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `size` rows, stratified by class so every digit is represented."""
    rng = np.random.default_rng(seed)
    share = size / len(labels)
    held = []
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        held.append(rng.choice(rows, size=round(len(rows) * share), replace=False))
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return images[train], labels[train], images[val], labels[val]


def preprocess_data(data: Dataset, validation_size: int, seed: int) -> Splits:
    # Small data sets (tests, --data-dir) keep at least 90% for training.
    size = min(validation_size, len(data.train_labels) // 10)
    x_train, y_train, x_val, y_val = split_validation(
        data.train_images, data.train_labels, size, seed
    )
    return Splits(
        x_train=scale(x_train),
        y_train=y_train.astype(np.int64),
        x_val=scale(x_val),
        y_val=y_val.astype(np.int64),
        x_test=scale(data.test_images),
        y_test=data.test_labels.astype(np.int64),
    )
