"""Evaluate task: score on the test split, save the plots, publish table and summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from digits.evaluate import Evaluation, evaluate_model, render_summary, save_plots
from digits.train import TrainedModel


def publish_evaluation(evaluation: Evaluation, plot_paths: list[Path]) -> None:
    """Per-class table and a summary with the plots, as Prefect artifacts of this run."""
    create_table_artifact(
        key="per-class-metrics",
        table=[
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in evaluation.per_class
        ],
        description="Per-digit precision, recall, F1 and support on the test split",
    )
    create_markdown_artifact(
        key="evaluation-summary",
        markdown=render_summary(evaluation, plot_paths),
        description=f"Test accuracy {evaluation.accuracy:.4f}",
    )


@task(name="evaluate", task_run_name="evaluate", cache_policy=NONE, persist_result=False)
def evaluate(
    trained: TrainedModel, images: np.ndarray, labels: np.ndarray, plots_dir: Path
) -> Evaluation:
    """Score on the test split, write the plots into `plots_dir`, publish the artifacts."""
    evaluation, probs = evaluate_model(trained.model, images, labels)
    get_run_logger().info("test accuracy %.4f, loss %.4f", evaluation.accuracy, evaluation.loss)
    plot_paths = save_plots(evaluation, trained.history, images, labels, probs, plots_dir)
    publish_evaluation(evaluation, plot_paths)
    return evaluation
