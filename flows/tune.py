"""The `tune` flow: an Optuna study whose trials run on Dask, then the best model is gated.

Ask-and-tell: the study's loop (digits.model.study) asks for as many configurations a round
as there are workers and tells the study each result; here each configuration is one `trial`
task submitted to prefect-dask's DaskTaskRunner (a LocalCluster of worker processes, or the
cluster at `dask_address`). The study lives in a journal file under artifacts/studies/, so
a run with the same study name resumes it. The best trial's saved model (trained on the same
train split a retrain run uses) then goes through evaluate, package, export and
gate-and-promote.

The data and the judgement are retrain's own stages (flows/stages.py): the trials train on
MNIST plus every accepted batch, on the split a `digits run` would use, and the best model
is gated on MNIST test and on the held-out new data, with production re-scored in this run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from digits.config import (
    DEFAULT_MODEL,
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    DEFAULT_TUNE_EPOCHS,
    DEFAULT_TUNE_TRIALS,
    DEFAULT_TUNE_WORKERS,
    train_config,
)
from digits.environment import (
    ENV_DEFAULTS,
    default_artifacts_dir,
    default_store_dir,
    import_keras_quietly,
)
from digits.errors import DataError, DigitsError, UsageError
from digits.model.space import search_space, to_optuna, trial_config
from digits.model.study import Asked, Failure, Result, run_study
from digits.model.study_report import has_complete, study_summary
from digits.model.tuning import (
    check_study_name,
    fail_interrupted,
    open_study,
    start_from_defaults,
    studies_dir,
    write_splits,
)
from digits.registry.gate import check_threshold
from digits.registry.location import registry_location
from flows.outcome import OUTCOME_HOOKS, run_namer
from flows.stages import Gate, collect_data, evaluate_and_gate, prepare_data, validation_checks
from tasks.tune import publish_study, reuse_best, run_trial


def worker_env(workers: int, api_url: str) -> dict[str, str]:
    """What each local worker process needs before it imports TensorFlow or Prefect.

    One Dask thread per worker, and TensorFlow's own pools sized to the worker's share of
    the cores (Dask's OMP/MKL settings do not reach them). PREFECT_API_URL: the flow's own
    API, so trial task runs land under this flow run and no worker starts a temporary
    server of its own on the same SQLite database.
    """
    share = max(1, (os.cpu_count() or 1) // workers)
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", ENV_DEFAULTS["TF_CPP_MIN_LOG_LEVEL"])
    return {
        "PREFECT_API_URL": api_url,
        "TF_NUM_INTRAOP_THREADS": str(share),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": quiet,
    }


def trial_runner(workers: int, dask_address: str | None, api_url: str):
    from prefect_dask import DaskTaskRunner

    if dask_address:  # its workers were started with their own environment (docs/scaling.md)
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "processes": True,  # Keras fit holds the GIL between ops: processes, not threads
            "threads_per_worker": 1,
            "env": worker_env(workers, api_url),
            # A free port, so two studies at once do not collide; on loopback, as the
            # scheduler and workers are, so the dashboard is not open to the network.
            "dashboard_address": "127.0.0.1:0",
        },
    )


def flow_api_url() -> str:
    """The API this flow run reports to (the ephemeral one included), for the workers."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def outcome(future) -> Result:
    """The trial task's result, or a Failure for the study to record."""
    state = final_state(future)
    return state.result() if state.is_completed() else Failure(str(state.message))


def final_state(future) -> State:
    """The trial's final state; a lost worker (no state ever reported) counts as failed."""
    future.wait()
    try:
        return future.state
    except Exception as error:  # the task run was never created: Dask lost it before
        return Failed(message=f"{type(error).__name__}: {error}")


def submit_round(runner, fixed: dict[str, Any], configs: list[Asked]) -> Iterator[Result]:
    """One `trial` task per configuration, all submitted now; their results in order, each
    waited for only when the study takes it."""
    futures = [
        runner.submit(run_trial, parameters={"number": c.number, "params": c.params, **fixed})
        for c in configs
    ]
    return (outcome(future) for future in futures)


@contextmanager
def dask_rounds(workers: int, dask_address: str | None, fixed: dict[str, Any]):
    """Start the trials' Dask cluster; yield the function that runs a round on it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url = flow_api_url()
    # The task context sent to each worker carries these settings: the ephemeral API's
    # URL too, which the flow's settings would otherwise leave unset.
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        trial_runner(workers, dask_address, api_url) as runner,
    ):
        yield partial(submit_round, runner, fixed)


def run_trials(
    study,
    model: str,
    trials: int,
    epochs: int,
    workers: int,
    dask_address: str | None,
    timeout_minutes: float | None,
    data: Path,
    storage: Path,
) -> None:
    """The study's rounds of `workers` trials (digits.model.study), each a `trial` task."""
    out_dir = storage.with_suffix("")  # artifacts/studies/<name>/trial-N/model.keras
    fixed = {
        "model": model,
        "epochs": epochs,
        "data": str(data),
        "out_dir": str(out_dir),
        "study_name": study.study_name,
        "storage": str(storage),
    }
    space = to_optuna(search_space(model))
    start = partial(dask_rounds, workers, dask_address, fixed)
    run_study(study, space, trials, workers, start, timeout_minutes, get_run_logger())


@flow(name="tune", flow_run_name=run_namer("tune"), log_prints=True, **OUTCOME_HOOKS)
def tune(
    model: str = DEFAULT_MODEL,
    trials: int = DEFAULT_TUNE_TRIALS,
    epochs: int = DEFAULT_TUNE_EPOCHS,
    workers: int = DEFAULT_TUNE_WORKERS,
    dask_address: str | None = None,
    timeout_minutes: float | None = None,
    promote_best: bool = True,
    study_name: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    regression_tolerance: float | None = DEFAULT_REGRESSION_TOLERANCE,
    data_dir: Path | None = None,
    registry: str | Path | None = None,
    min_train_rows: int | None = None,
) -> State:
    """Tune `model` with `trials` trials of `epochs` epochs on Dask; gate the best one."""
    check_threshold(threshold)
    check_study_name(study_name)  # before any work: a deployment's run skips the CLI's check
    if trials < 1 or workers < 1 or epochs < 1:
        raise UsageError("--trials, --workers and --epochs must be at least 1")
    config = train_config(model, epochs=epochs)  # validation size and seed: as a retrain run
    source = Path(data_dir).resolve() if data_dir else None
    try:
        collected = collect_data(source, default_store_dir())
        prepared = prepare_data(collected, config, validation_checks(source, min_train_rows))
    except DataError as error:
        return Failed(message=str(error), data=error)

    folder = studies_dir(default_artifacts_dir())
    arrays = write_splits(prepared.splits, folder / "data")  # the trials' only input: files
    name = study_name or f"tune-{model}"
    storage = folder / f"{name}.journal"
    try:
        study = search(name, storage, config.seed, model, trials, epochs, workers,
                       dask_address, timeout_minutes, arrays)
    except DigitsError as error:
        return Failed(message=str(error), data=error)
    best = study.best_trial
    if not promote_best:
        return Completed(message=f"best trial {best.number}: validation accuracy {best.value:.4f}")
    trained = reuse_best({"number": best.number, **best.user_attrs})
    best_config = trial_config(model, best.params, epochs)
    gate = Gate(threshold, regression_tolerance)
    extra = {"study": study_summary(study, storage)}
    root = registry_location(registry)
    return evaluate_and_gate(trained, prepared, best_config, gate, root, extra).state()


def search(name, storage, seed, model, trials, epochs, workers, dask_address, timeout_minutes,
           arrays):
    """Open (or resume) the study, run its trials and publish it; raises DigitsError when
    no trial completed."""
    logger = get_run_logger()
    # The trials here and reuse_best load Keras: quietly, as the train task does.
    import_keras_quietly()
    study = open_study(name, storage, seed=seed)
    start_from_defaults(study, model)
    if stale := fail_interrupted(study):
        logger.info("resumed study %s: interrupted trials %s recorded as failed", name, stale)
    run_trials(study, model, trials, epochs, workers, dask_address, timeout_minutes, arrays,
               storage)
    publish_study(study)
    if not has_complete(study):
        raise DigitsError(f"study {name}: no trial completed; registry unchanged")
    best = study.best_trial
    logger.info("best trial %d: validation accuracy %.4f %s", best.number, best.value, best.params)
    return study
