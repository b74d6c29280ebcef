"""Tuning tasks: one trial (run on a Dask worker), the study's artifacts, the best model.

The trial task is pickled to Dask worker processes: this module imports no Keras, and the
trial imports it inside the worker, after the worker's environment sized TensorFlow.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from digits.model.study_report import describe_params, plot_study, trial_rows
from digits.model.trial import train_trial
from digits.model.tuning import live_reporter
from tasks import stage


def name_trial() -> str:
    """`trial-3 batch_size=64 depth=2 ...`: the number and params, as the UI lists it."""
    parameters = runtime.task_run.parameters
    return f"trial-{parameters['number']} {describe_params(parameters['params'])}"


# No retries: a failed trial is recorded as failed and the study goes on. Inputs are a few
# numbers and paths (the data stays on disk), the result a small dict.
@stage("trial", run_name=name_trial)
def run_trial(
    number: int,
    params: dict[str, Any],
    model: str,
    epochs: int,
    data: str,
    out_dir: str,
    study_name: str,
    storage: str,
) -> dict[str, Any]:
    logger = get_run_logger()
    logger.info("trial %d: %s, %d epochs", number, describe_params(params), epochs)
    report = live_reporter(Path(storage), study_name, number)
    result = train_trial(
        number, params, model, epochs, Path(data), Path(out_dir), report=report, log=logger.info
    )
    logger.info(
        "trial %d: best validation accuracy %.4f%s",
        number,
        result["val_accuracy"],
        " (pruned)" if result["pruned"] else "",
    )
    return result


@stage("publish-study")
def publish_study(study) -> None:
    """A table of every trial and a plot of the optimisation history and importances."""
    rows = trial_rows(study)
    create_table_artifact(
        key="tuning-trials",
        table=rows,
        description=f"Study {study.study_name}: {len(rows)} trials (validation accuracy)",
    )
    with tempfile.TemporaryDirectory(prefix="digits-study-") as folder:
        png = plot_study(study, Path(folder) / "study.png").read_bytes()
    encoded = base64.b64encode(png).decode()
    best = best_line(study)
    create_markdown_artifact(
        key="tuning-study",
        markdown=f"# Study {study.study_name}\n\n{best}\n\n![study](data:image/png;base64,{encoded})\n",
        description=best,
    )


def best_line(study) -> str:
    from digits.model.study_report import has_complete

    if not has_complete(study):
        return "no trial completed"
    best = study.best_trial
    return (
        f"best trial {best.number}: validation accuracy {best.value:.4f} "
        f"({describe_params(best.params)})"
    )


@stage("reuse-best", run_name="reuse-best-trial")
def reuse_best(result: dict[str, Any]):
    """The best trial's saved model as a TrainedModel: it trained on the same train split
    (same validation size and seed) that a retrain run would use, so no retraining."""
    import keras

    from digits.model.train import TrainedModel  # also registers the Temperature layer

    get_run_logger().info("reusing trial %d's model %s", result["number"], result["model_path"])
    return TrainedModel(
        model=keras.saving.load_model(result["model_path"], safe_mode=True),
        history=result["history"],
        best_epoch=result["best_epoch"],
        seconds=result["seconds"],
        calibration=result.get("calibration"),
        not_a_digit=result.get("not_a_digit"),
    )
