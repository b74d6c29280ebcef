"""Evaluate task: score on the test split, save the plots, publish table and summary."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from digits.config import PRODUCTION_ALIAS
from digits.data.snapshot import NewData
from digits.model.not_a_digit import flags
from digits.registry.load import load_predictor
from digits.registry.location import open_registry
from digits.registry.store import Registry
from tasks import stage

# The model's modules load Keras and scikit-learn's metrics: imported in the tasks, which
# run after training has loaded Keras, not with the flow module (tasks/train.py says why).
if TYPE_CHECKING:
    from digits.model.evaluate import Evaluation, NewDataScore
    from digits.model.train import TrainedModel


def publish_evaluation(
    evaluation: Evaluation, plot_paths: list[Path], prefix: str = "", split: str = "the test split"
) -> None:
    """Per-class table and a summary with the plots, as Prefect artifacts of this run."""
    from digits.model.evaluate import render_summary

    create_table_artifact(
        key=f"{prefix}per-class-metrics",
        table=[
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in evaluation.per_class
        ],
        description=f"Per-digit precision, recall, F1 and support on {split}",
    )
    create_markdown_artifact(
        key=f"{prefix}evaluation-summary",
        markdown=render_summary(evaluation, plot_paths, title=split),
        description=f"Accuracy {evaluation.accuracy:.4f} on {split}",
    )


@stage("evaluate")
def evaluate(
    trained: TrainedModel, images: np.ndarray, labels: np.ndarray, plots_dir: Path
) -> Evaluation:
    """Score on the test split, write the plots into `plots_dir`, publish the artifacts.
    A calibrated model is also scored without its temperature, for the ECE it had before."""
    from digits.model.calibration import uncalibrated
    from digits.model.evaluate import evaluate_model, save_plots

    evaluation, probs = evaluate_model(trained.model, images, labels)
    logger = get_run_logger()
    logger.info("test accuracy %.4f, loss %.4f, ECE %.4f", evaluation.accuracy, evaluation.loss,
                evaluation.ece)
    if trained.not_a_digit:
        rate = float(flags(probs, trained.not_a_digit).mean())
        evaluation = replace(evaluation, not_a_digit_rate=rate)
        logger.info("not a digit: %.2f%% of the test digits flagged", 100 * rate)
    raw = uncalibrated(trained.model)
    raw_probs = None
    if raw is not trained.model:
        before, raw_probs = evaluate_model(raw, images, labels)
        evaluation = replace(evaluation, ece_uncalibrated=before.ece)
        logger.info("before calibration: loss %.4f, ECE %.4f", before.loss, before.ece)
    plot_paths = save_plots(evaluation, trained.history, images, labels, probs, plots_dir,
                            uncalibrated=raw_probs)
    publish_evaluation(evaluation, plot_paths)
    return evaluation


@stage("evaluate-new-data")
def evaluate_new_data(
    trained: TrainedModel, new: NewData, registry: Path, plots_dir: Path
) -> NewDataScore | None:
    """Score the challenger and production on the batches' held-out images (None without
    any): the gate compares the two numbers, so both come from the same images and run."""
    if not new.rows:
        return None
    from digits.model.evaluate import NewDataScore, evaluate_model, save_new_data_plots

    evaluation, probs = evaluate_model(trained.model, new.images, new.labels)
    version, accuracy = rescore_production(open_registry(registry), new)
    logger = get_run_logger()
    logger.info("new-data accuracy %.4f on %d held-out batch images", evaluation.accuracy, new.rows)
    if version:
        logger.info("production %s re-scored on the same images: %.4f", version, accuracy)
    plot_paths = save_new_data_plots(evaluation, new.images, new.labels, probs, plots_dir)
    split = f"the new data ({new.rows} held-out batch images)"
    publish_evaluation(evaluation, plot_paths, prefix="new-data-", split=split)
    return NewDataScore(evaluation, new.rows, version, accuracy)


def rescore_production(registry: Registry, new: NewData) -> tuple[str | None, float | None]:
    """Production's accuracy on the new data now; the gate checks under the lock that
    production is still this version."""
    from digits.model.evaluate import score

    version = registry.aliases().get(PRODUCTION_ALIAS)
    if version is None:
        return None, None
    predictor = load_predictor(version, registry)  # verified; ONNX when exported
    return version, score(new.labels.astype("int64"), predictor.predict(new.images)).accuracy
