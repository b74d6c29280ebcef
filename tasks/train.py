"""Train task: fit the configured model, one log line per epoch in the flow run."""

from __future__ import annotations

from prefect import get_run_logger

from digits.config import TrainConfig
from digits.data.splits import Splits
from digits.model.train import TrainedModel, fit_model
from tasks import stage


# The timeout stops a runaway fit.
@stage("train", timeout_seconds=3 * 3600)
def train(splits: Splits, config: TrainConfig, progress: bool = False) -> TrainedModel:
    logger = get_run_logger()
    logger.info("training %s with %s", config.model, config)
    return fit_model(splits, config, log=logger.info, progress=progress)
