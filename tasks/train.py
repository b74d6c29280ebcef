"""Train task: fit the configured model, one log line per epoch in the flow run."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from digits.config import TrainConfig
from digits.data.splits import Splits
from digits.model.train import TrainedModel, fit_model


# Arrays stay in memory (no persistence, no input hashing); the timeout stops a runaway fit.
@task(
    name="train",
    task_run_name="train",
    timeout_seconds=3 * 3600,
    cache_policy=NONE,
    persist_result=False,
)
def train(splits: Splits, config: TrainConfig, progress: bool = False) -> TrainedModel:
    logger = get_run_logger()
    logger.info("training %s with %s", config.model, config)
    return fit_model(splits, config, log=logger.info, progress=progress)
