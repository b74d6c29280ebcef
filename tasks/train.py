"""Train task: fit the configured model, one log line per epoch in the flow run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger

from digits.config import TrainConfig
from digits.environment import import_keras_quietly
from tasks import stage

if TYPE_CHECKING:
    from digits.data.splits import Splits
    from digits.model.train import TrainedModel


# The timeout stops a runaway fit.
@stage("train", timeout_seconds=3 * 3600)
def train(splits: Splits, config: TrainConfig, progress: bool = False) -> TrainedModel:
    # Keras loads here, the first stage to need it, not with the flow module: a run refused
    # or skipped before training never pays for TensorFlow. Quietly: its C++ start-up banner
    # would reach a worker's terminal.
    import_keras_quietly()
    from digits.model.train import fit_model

    logger = get_run_logger()
    logger.info("training %s with %s", config.model, config)
    return fit_model(splits, config, log=logger.info, progress=progress)
