"""The manifest fields a training run knows; the registry adds version, dates and checksums."""

from __future__ import annotations

import platform
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: reading a manifest must not import Keras or scikit-learn
    from digits.config import TrainConfig
    from digits.evaluate import Evaluation
    from digits.ingest import Dataset
    from digits.train import TrainedModel


def environment() -> dict[str, str]:
    """Versions that decide whether a model loads and behaves the same elsewhere."""
    versions = {"python": platform.python_version()}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "prefect", "great-expectations"):
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            continue
    return versions


def describe(
    data: Dataset,
    trained: TrainedModel,
    config: TrainConfig,
    evaluation: Evaluation,
    threshold: float,
    flow_run_id: str | None,
) -> dict:
    return {
        "model": config.model,
        "hyperparameters": asdict(config),
        "training": {
            "best_epoch": trained.best_epoch,
            "epochs_run": trained.epochs_run,
            "seconds": round(trained.seconds, 1),
        },
        "metrics": evaluation.metrics(),
        "threshold": threshold,
        "data": {"source": data.source, "sha256": data.sha256, "rows": data.rows()},
        "environment": environment(),
        "flow_run_id": flow_run_id,
    }
