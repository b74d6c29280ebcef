"""The study's ask-and-tell loop: rounds of trials until the study holds enough finished
ones or time is up, each trial's end told to the study.

Plain Python over an Optuna study. What runs a round is the caller's: the `tune` flow
submits one Prefect task per configuration to Dask workers; a test passes a function. The
study on disk (opening, resuming) is `digits.model.tuning`; one trial's training,
`digits.model.trial`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from digits.model.tuning import finished

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asked:
    """A configuration the study asked for: the trial's number and its parameters."""

    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """A trial that ended without a result (it raised, or its worker was lost)."""

    message: str


# A round's results, in the order asked: `train_trial`'s dict or a Failure each.
Result = dict[str, Any] | Failure
RunRound = Callable[[list[Asked]], Iterable[Result]]


def run_study(
    study: optuna.Study,
    space: dict[str, BaseDistribution],
    trials: int,
    per_round: int,
    open_runner: Callable[[], AbstractContextManager[RunRound]],
    timeout_minutes: float | None = None,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
) -> None:
    """Rounds of `per_round` trials until the study holds `trials` finished ones or time is up.

    `open_runner` starts what runs the trials (the flow's Dask cluster) and yields the
    function that runs a round. It is not opened for a resumed study that is already
    complete. Each result is told as it is taken from the round's iterable: a lazy one lets
    the study hear of a trial that ended while the others of its round still run, so their
    pruning counts it.
    """
    if finished(study) >= trials:
        return
    started = time.monotonic()
    with open_runner() as run_round:
        while (left := trials - finished(study)) > 0:
            if timeout_minutes and (time.monotonic() - started) / 60 >= timeout_minutes:
                logger.info("timeout (%s min) reached; %d trials not run", timeout_minutes, left)
                break
            batch = [study.ask(space) for _ in range(min(per_round, left))]
            results = run_round([Asked(trial.number, trial.params) for trial in batch])
            for trial, result in zip(batch, results, strict=True):
                record(study, trial, result, logger)


def record(
    study: optuna.Study,
    trial: optuna.Trial,
    result: Result,
    logger: logging.Logger | logging.LoggerAdapter = LOGGER,
) -> None:
    """Tell the study how a trial ended: complete, pruned, or failed (the study goes on)."""
    from optuna.trial import TrialState

    if isinstance(result, Failure):
        logger.warning("trial %d failed: %s", trial.number, result.message)
        trial.set_user_attr("error", result.message[:500])
        study.tell(trial, state=TrialState.FAIL)
        return
    replay(study, trial, result["val_accuracies"])
    for key in ("model_path", "history", "best_epoch", "seconds", "val_accuracies",
                "calibration", "not_a_digit"):
        trial.set_user_attr(key, result[key])
    if result["pruned"]:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result["val_accuracy"])


def replay(study: optuna.Study, trial: optuna.Trial, values: list[float]) -> None:
    """Report the epochs' values that the worker could not report itself."""
    (stored,) = (t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    for epoch, value in enumerate(values):
        if epoch not in stored.intermediate_values:
            trial.report(value, epoch)
