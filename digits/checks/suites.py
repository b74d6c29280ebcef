"""Validate: Great Expectations suites for the raw and the preprocessed data.

GX checks compact frames instead of 784 pixel columns: one row per image (shape, pixel range,
ink, a hash of its bytes), one row per split and digit (share, ink against train) and one row
per split (counts, dtypes). Each expectation runs once per split through a row condition.
The Data Docs site the suites build is digits.checks.docs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from digits.checks.docs import BUILD_PREFIX, open_context, publish_docs
from digits.config import DIGITS, IMAGE_SHAPE, NUM_CLASSES, ValidationConfig
from digits.data.ingest import Dataset
from digits.data.splits import Splits
from digits.errors import ValidationFailed
from digits.files import staging_folder, sweep_staging

LIT_LEVEL = 0.5  # a pixel is ink above half of full scale, so faint scanner noise is not
REFERENCE_SPLIT = "train"  # other splits must draw their digits like train does
HASH_SEED = 784  # fixed, so a digest means the same thing in every run


@dataclass(frozen=True)
class Kind:
    """What one suite expects of its arrays, and which raw split each of its splits came from."""

    name: str
    image_dtype: str
    label_dtype: str
    full_scale: float
    origins: dict[str, str]


RAW = Kind("raw", "uint8", "uint8", 255.0, {"train": "train", "test": "test"})
# Train and validation together must still hold every row of the raw train split.
PROCESSED = Kind(
    "processed", "float32", "int64", 1.0, {"train": "train", "validation": "train", "test": "test"}
)


@dataclass(frozen=True)
class ValidationReport:
    suite: str  # "raw" or "processed"
    success: bool
    results: list[dict]  # one per expectation: split, expectation, column, observed, success
    docs_path: Path | None  # index.html of the built Data Docs

    def failures(self) -> list[dict]:
        return [result for result in self.results if not result["success"]]

    def summary(self) -> str:
        failed = [f"{r['split']}: {r['expectation']}({r['column']})" for r in self.failures()]
        return ", ".join(failed) or f"all {len(self.results)} expectations met"


# --- Frames: vectorised summaries for GX to validate ------------------------------


def summarize_images(split: str, images: np.ndarray, labels: np.ndarray, scale: float):
    """One row per image; anything but an (N, H, W) array gets height and width 0."""
    flat = images.reshape(len(images), math.prod(images.shape[1:]))  # -1 fails on 0 images
    height, width = images.shape[1:] if images.ndim == 3 else (0, 0)
    floats = np.issubdtype(flat.dtype, np.floating)
    return pd.DataFrame({
        "split": split,
        "label": labels,
        "height": height,
        "width": width,
        "pixel_min": flat.min(axis=1),
        "pixel_max": flat.max(axis=1),
        "ink": np.count_nonzero(flat > LIT_LEVEL * scale, axis=1) / flat.shape[1],
        "nonfinite": np.count_nonzero(~np.isfinite(flat), axis=1) if floats else 0,
        "digest": digest(flat),
    })


def digest(flat: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes: a random linear form over the bytes, mod 2**64.

    Two distinct rows collide with probability under 2**-56; einsum keeps it one numpy call.
    """
    row_bytes = flat.shape[1] * flat.itemsize
    rows = np.ascontiguousarray(flat).view(np.uint8).reshape(len(flat), row_bytes)
    keys = np.random.default_rng(HASH_SEED).integers(
        0, 2**64 - 1, size=rows.shape[1], dtype=np.uint64, endpoint=True
    )
    return np.einsum("ij,j->i", rows, keys, dtype=np.uint64, casting="unsafe")


def summarize_classes(images: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per split and digit: its share of the split and its mean ink's gap to train's."""
    stats = {split: class_stats(frame) for split, frame in images.items()}
    reference = stats[REFERENCE_SPLIT][1]
    frames = []
    for split, (share, ink) in stats.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.abs(ink - reference) / reference
        # A digit absent on either side has no gap: make it a failure, not a NaN that GX skips.
        gap = np.where(np.isfinite(gap), gap, np.inf)
        frames.append(
            pd.DataFrame({"split": split, "label": DIGITS, "share": share, "ink_gap": gap})
        )
    return pd.concat(frames, ignore_index=True)


def class_stats(images: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each digit's share of the rows and its mean ink (NaN when absent)."""
    labels, ink = images["label"].to_numpy(), images["ink"].to_numpy()
    known = (labels >= 0) & (labels < NUM_CLASSES)  # the rest fail the label-set expectation
    digits = labels[known].astype(np.int64)
    counts = np.bincount(digits, minlength=NUM_CLASSES)
    with np.errstate(divide="ignore", invalid="ignore"):
        ink_means = np.bincount(digits, weights=ink[known], minlength=NUM_CLASSES) / counts
    return counts / max(len(labels), 1), ink_means


def summarize_splits(kind: Kind, parts: dict[str, tuple]) -> pd.DataFrame:
    return pd.DataFrame([
        {"split": split, "origin": kind.origins[split], "images": len(images),
         "labels": len(labels), "image_dtype": str(images.dtype), "label_dtype": str(labels.dtype)}
        for split, (images, labels) in parts.items()
    ])


# --- Suites: one expectation per risk ----------------------------------------


def where(column: str, value: str) -> dict:
    """Restrict an expectation to one split (or origin) and remember which, for the report."""
    return {"row_condition": Column(column) == value, "meta": {"split": value}}


def split_expectations(kind: Kind, config: ValidationConfig) -> list:
    expectations = []
    for split in kind.origins:
        on = where("split", split)
        expectations += [
            # Images pair with labels by position: one missing label shifts all later ones.
            gxe.ExpectColumnPairValuesToBeEqual(column_A="images", column_B="labels", **on),
            # Another dtype (int8 wrap-around, float64 copies) changes what a pixel means.
            gxe.ExpectColumnValuesToBeInSet(
                column="image_dtype", value_set=[kind.image_dtype], **on),
            # Sparse losses want integer class ids; float or narrow labels hint at a bad parse.
            gxe.ExpectColumnValuesToBeInSet(
                column="label_dtype", value_set=[kind.label_dtype], **on),
        ]
    for origin in dict.fromkeys(kind.origins.values()):  # each raw split once, in order
        low, high = row_bounds(origin, config)
        # A truncated download, a partial --data-dir copy, or preprocessing that drops rows.
        expectations.append(gxe.ExpectColumnSumToBeBetween(
            column="images", min_value=low, max_value=high, **where("origin", origin)))
    return expectations


def row_bounds(origin: str, config: ValidationConfig) -> tuple[int, int | None]:
    """Exactly the pinned count when known, else at least the configured minimum."""
    if config.exact_rows and origin in config.exact_rows:
        return config.exact_rows[origin], config.exact_rows[origin]
    return {"train": config.min_train_rows, "test": config.min_test_rows}[origin], None


def image_expectations(kind: Kind, config: ValidationConfig) -> list:
    (height, width), top = IMAGE_SHAPE, kind.full_scale
    expectations = []
    for split in kind.origins:
        on = where("split", split)
        expectations += [
            # Flattened, transposed or cropped arrays no longer fit the model's 28x28 input.
            gxe.ExpectColumnValuesToBeBetween(
                column="height", min_value=height, max_value=height, **on),
            gxe.ExpectColumnValuesToBeBetween(
                column="width", min_value=width, max_value=width, **on),
            # Out-of-scale pixels (scaled twice, or not at all) shift every activation.
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=top, **on),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=top, **on),
            # A NaN or inf pixel poisons the gradients of its whole batch.
            gxe.ExpectColumnSumToBeBetween(column="nonfinite", min_value=0, max_value=0, **on),
            # Labels outside 0..9 (a misparsed or foreign file) match no output of the model.
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=DIGITS, **on),
            # A digit missing entirely (a filtered file) can never be learned.
            gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=DIGITS, **on),
            # Blank images (a decoder writing zeros) teach nothing and hint at a broken file.
            gxe.ExpectColumnValuesToBeBetween(column="ink", min_value=config.blank_ink_threshold,
                                              mostly=1 - config.max_blank_share, **on),
            # Duplicates (a file concatenated twice) over-weight some examples.
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="digest", min_value=1 - config.max_duplicate_share, **on),
        ]
    return expectations


def class_expectations(kind: Kind, config: ValidationConfig) -> list:
    low, high = config.min_class_share, config.max_class_share
    expectations = []
    for split in kind.origins:
        on = where("split", split)
        # A rare or dominant digit (partial download, filtered file) biases the model.
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="share", min_value=low, max_value=high, **on))
        if split != REFERENCE_SPLIT:
            # Digits drawn unlike train's (other pens, scanner) make test accuracy meaningless.
            expectations.append(gxe.ExpectColumnValuesToBeBetween(
                column="ink_gap", min_value=0, max_value=config.ink_tolerance, **on))
    return expectations


# --- Running the suites through GX -------------------------------------------


def validate_raw_data(data: Dataset, config: ValidationConfig, docs_dir: Path) -> ValidationReport:
    parts = {"train": (data.train_images, data.train_labels),
             "test": (data.test_images, data.test_labels)}
    return validate(RAW, parts, config, docs_dir)


def validate_processed_data(
    splits: Splits, config: ValidationConfig, docs_dir: Path
) -> ValidationReport:
    parts = {"train": (splits.x_train, splits.y_train),
             "validation": (splits.x_val, splits.y_val),
             "test": (splits.x_test, splits.y_test)}
    return validate(PROCESSED, parts, config, docs_dir)


def validate(
    kind: Kind, parts: dict[str, tuple], config: ValidationConfig, docs_dir: Path
) -> ValidationReport:
    docs_dir = docs_dir.resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    sweep_staging(docs_dir, BUILD_PREFIX)  # builds of runs killed before they published
    with staging_folder(docs_dir, BUILD_PREFIX) as build:
        context = open_context(build)
        results = [row for name, (frame, expectations) in plan(kind, parts, config).items()
                   for row in run_suite(context, f"{kind.name}-{name}", frame, expectations)]
        context.build_data_docs()
        docs_path = publish_docs(build, docs_dir / kind.name, config.docs_runs_kept)
    return ValidationReport(kind.name, all(r["success"] for r in results), results, docs_path)


def plan(kind: Kind, parts: dict[str, tuple], config: ValidationConfig) -> dict[str, tuple]:
    """Each GX suite's name, with the frame it validates and its expectations."""
    suites = {"splits": (summarize_splits(kind, parts), split_expectations(kind, config))}
    # The per-image frame pairs each image with its label; with unequal counts there is no
    # pairing to check, and the splits suite already reports the mismatch.
    if all(len(images) == len(labels) for images, labels in parts.values()):
        images = {split: summarize_images(split, *arrays, kind.full_scale)
                  for split, arrays in parts.items()}
        suites["images"] = (pd.concat(images.values(), ignore_index=True),
                            image_expectations(kind, config))
        suites["classes"] = (summarize_classes(images), class_expectations(kind, config))
    return suites


def run_suite(context, name: str, frame: pd.DataFrame, expectations: list) -> list[dict]:
    batch = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe(name))
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return [
        {"split": result.expectation_config.meta["split"],
         "expectation": result.expectation_config.type,
         "column": column_of(result.expectation_config.kwargs),
         "observed": observed(result.result),
         "success": bool(result.success)}
        for result in definition.run(batch_parameters={"dataframe": frame}).results
    ]


def column_of(kwargs: dict) -> str:
    return kwargs.get("column") or f"{kwargs['column_A']}={kwargs['column_B']}"


def observed(result: dict) -> object:
    """GX's observed value, or what a row-wise or set expectation found amiss."""
    value = result.get("observed_value")
    if value is not None:
        return value.item() if isinstance(value, np.generic) else value
    if "partial_missing_list" in result:
        return f"missing {result['partial_missing_list'] or 'none'}"
    examples = np.asarray(result.get("partial_unexpected_list", [])[:3]).tolist()
    return (f"{result['unexpected_count']} of {result['element_count']} unexpected"
            + (f", e.g. {examples}" if examples else ""))


def raise_on_failure(report: ValidationReport) -> None:
    if not report.success:
        raise ValidationFailed(f"data validation failed ({report.suite}): {report.summary()}")
