"""The stages every model-producing flow shares, each a Prefect task, declared once.

`retrain` and `tune` differ only in how they get a trained model (one fit, or the best
trial of a study); what comes before (the data) and after (the judgement) is the same
code, so a tuned model trains on the same data and meets the same gate as a retrained one:

    collect_data:   ingest -> snapshot                     (what this run would learn from)
    prepare_data:   validate-raw -> union -> preprocess -> validate-processed
    evaluate_and_gate: evaluate -> evaluate-new-data -> package -> export -> gate-and-promote

Plain functions that call tasks (not subflows), so the UI shows one flow run with every
stage as a task run of it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digits.config import MNIST_ROWS, TrainConfig, ValidationConfig
from digits.data.batches import Batch
from digits.data.ingest import Dataset
from digits.data.snapshot import NewData, union_checks
from digits.environment import default_artifacts_dir
from digits.registry.gate import GateRule
from flows.outcome import Outcome
from tasks.evaluate import evaluate, evaluate_new_data
from tasks.export import export
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tasks.promote import package, promote
from tasks.snapshot import snapshot, union
from tasks.validate import validate_processed, validate_raw

if TYPE_CHECKING:
    from digits.data.splits import Splits
    from digits.model.train import TrainedModel


@dataclass(frozen=True)
class Collected:
    """MNIST as ingested, the accepted batches and the snapshot that names them all."""

    mnist: Dataset
    batches: list[Batch]
    snapshot: dict


@dataclass(frozen=True)
class Prepared:
    """What training and the gate need: the splits (MNIST train plus the batches' train
    parts), MNIST test, the batches' held-out parts and the row counts the manifest records."""

    collected: Collected
    splits: Splits
    new: NewData
    rows: dict[str, int]


def validation_checks(source: Path | None, min_train_rows: int | None) -> ValidationConfig:
    """The pinned MNIST must have its exact row counts; a --data-dir folder a minimum."""
    return ValidationConfig(
        exact_rows=None if source else MNIST_ROWS,
        **({"min_train_rows": min_train_rows} if min_train_rows else {}),
    )


def collect_data(source: Path | None, store: Path) -> Collected:
    """Ingest MNIST (or `source`) and list the accepted batches of `store`."""
    mnist = ingest(source, store)
    batches, snap = snapshot(mnist, store)
    return Collected(mnist, batches, snap)


def prepare_data(
    collected: Collected, config: TrainConfig, checks: ValidationConfig
) -> Prepared:
    """Validate, union with the batches, split and validate again; raises DataError."""
    docs_dir = default_artifacts_dir() / "gx"
    validate_raw(collected.mnist, checks, docs_dir)
    train_set, new, rows = union(collected.mnist, collected.batches)
    splits = preprocess(train_set, config.validation_size, config.seed)
    validate_processed(splits, union_checks(checks, rows), docs_dir)
    return Prepared(collected, splits, new, rows)


@dataclass(frozen=True)
class Gate:
    """How the run is judged: the accuracy gate and the regression tolerance (None: off)."""

    threshold: float
    regression_tolerance: float | None


def evaluate_and_gate(
    trained: TrainedModel,
    prepared: Prepared,
    config: TrainConfig,
    gate: Gate,
    registry: Path,
    extra: dict | None = None,
) -> Outcome:
    """Score on MNIST test and on the held-out new data (production re-scored on the same
    images), package and export the candidate, then gate and promote it under the lock.
    `extra` adds manifest fields (a tuned model's `study`)."""
    mnist = prepared.collected.mnist
    with tempfile.TemporaryDirectory(prefix="digits-build-") as folder:
        build = Path(folder)
        plots = build / "plots"
        evaluation = evaluate(trained, mnist.test_images, mnist.test_labels, plots)
        scored = evaluate_new_data(trained, prepared.new, registry, plots / "new_data")
        manifest = package(
            build, mnist, trained, config, evaluation, gate.threshold,
            prepared.collected.snapshot, scored, prepared.rows,
        )  # fmt: skip
        manifest = export(build, {**manifest, **(extra or {})}, mnist.test_images)
        terms = () if scored is None else (
            scored.evaluation.accuracy, scored.production_version, scored.production_accuracy)
        rule = GateRule(evaluation.accuracy, gate.threshold, gate.regression_tolerance, *terms,
                        ece=evaluation.ece)
        decision, version = promote(registry, build, manifest, rule)
    return Outcome(decision.promote, evaluation.accuracy, gate.threshold, version, decision.reason)
