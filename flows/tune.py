"""The `tune` flow: an Optuna study whose trials run on Dask, then the best model is gated.

Ask-and-tell in the flow: each round asks the study for as many configurations as there are
workers, submits one `trial` task per configuration to prefect-dask's DaskTaskRunner (a
LocalCluster of worker processes, or the cluster at `dask_address`), and tells the study
each result. The study lives in a journal file under artifacts/studies/, so a run with the
same study name resumes it. The best trial's saved model (trained on the same train split a
retrain run uses) then goes through evaluate, package, export and gate-and-promote.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, runtime
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State

from digits.config import (
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    default_artifacts_dir,
    default_data_dir,
    registry_root,
    train_config,
)
from digits.errors import DataError, DigitsError, UsageError
from digits.registry.gate import GateRule, check_threshold
from flows.quiet import muted_stderr

with muted_stderr():  # the evaluate/export tasks load Keras (see flows/retrain.py)
    from flows.retrain import Outcome, tag_outcome, validation_checks
    from tasks.evaluate import evaluate
    from tasks.export import export
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess
    from tasks.promote import package, promote
    from tasks.tune import publish_study, reuse_best, run_trial
    from tasks.validate import validate_processed, validate_raw


def name_run() -> str:
    model = runtime.flow_run.parameters.get("model", "cnn")
    return f"tune-{model}-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}"


def worker_env(workers: int, api_url: str) -> dict[str, str]:
    """What each local worker process needs before it imports TensorFlow or Prefect.

    One Dask thread per worker, and TensorFlow's own pools sized to the worker's share of
    the cores (Dask's OMP/MKL settings do not reach them). PREFECT_API_URL: the flow's own
    API, so trial task runs land under this flow run and no worker starts a temporary
    server of its own on the same SQLite database.
    """
    share = max(1, (os.cpu_count() or 1) // workers)
    return {
        "PREFECT_API_URL": api_url,
        "TF_NUM_INTRAOP_THREADS": str(share),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
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
            "dashboard_address": ":0",  # a free port: two studies at once do not collide
        },
    )


def flow_api_url() -> str:
    """The API this flow run reports to (the ephemeral one included), for the workers."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def record(study, trial, state, logger) -> None:
    """Tell the study how a trial ended: complete, pruned, or failed (the study goes on)."""
    from optuna.trial import TrialState

    from digits.model.tuning import replay

    if not state.is_completed():
        logger.warning("trial %d failed: %s", trial.number, state.message)
        trial.set_user_attr("error", str(state.message)[:500])
        study.tell(trial, state=TrialState.FAIL)
        return
    result = state.result()
    replay(study, trial, result["val_accuracies"])
    for key in ("model_path", "history", "best_epoch", "seconds", "val_accuracies"):
        trial.set_user_attr(key, result[key])
    if result["pruned"]:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result["val_accuracy"])


def final_state(future) -> State:
    """The trial's final state; a lost worker (no state ever reported) counts as failed."""
    future.wait()
    try:
        return future.state
    except Exception as error:  # the task run was never created: Dask lost it before
        return Failed(message=f"{type(error).__name__}: {error}")


def run_study(
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
    """Rounds of `workers` trials until the study holds `trials` finished ones or time is up."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from digits.model.tuning import finished, search_space, to_optuna

    logger = get_run_logger()
    space = to_optuna(search_space(model))
    api_url = flow_api_url()
    started = time.monotonic()
    out_dir = storage.with_suffix("")  # artifacts/studies/<name>/trial-N/model.keras
    # The task context sent to each worker carries these settings: the ephemeral API's
    # URL too, which the flow's settings would otherwise leave unset.
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with trial_runner(workers, dask_address, api_url) as runner:
            while (left := trials - finished(study)) > 0:
                if timeout_minutes and (time.monotonic() - started) / 60 >= timeout_minutes:
                    logger.info("timeout (%s min) reached; %d trials not run", timeout_minutes, left)
                    break
                batch = [study.ask(space) for _ in range(min(workers, left))]
                futures = [
                    runner.submit(
                        run_trial,
                        parameters={
                            "number": trial.number,
                            "trial_id": trial._trial_id,
                            "params": trial.params,
                            "model": model,
                            "epochs": epochs,
                            "data": str(data),
                            "out_dir": str(out_dir),
                            "study_name": study.study_name,
                            "storage": str(storage),
                        },
                    )
                    for trial in batch
                ]
                for trial, future in zip(batch, futures):
                    record(study, trial, final_state(future), logger)


@flow(name="tune", flow_run_name=name_run, log_prints=True)
def tune(
    model: str = "cnn",
    trials: int = 8,
    epochs: int = 2,
    workers: int = 2,
    dask_address: str | None = None,
    timeout_minutes: float | None = None,
    promote_best: bool = True,
    study_name: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    regression_tolerance: float | None = DEFAULT_REGRESSION_TOLERANCE,
    data_dir: str | None = None,
    registry: str | None = None,
    min_train_rows: int | None = None,
) -> State:
    """Tune `model` with `trials` trials of `epochs` epochs on Dask; gate the best one."""
    from digits.model.tuning import (
        fail_interrupted,
        has_complete,
        open_study,
        start_from_defaults,
        studies_dir,
        write_splits,
    )

    check_threshold(threshold)
    if trials < 1 or workers < 1 or epochs < 1:
        raise UsageError("--trials, --workers and --epochs must be at least 1")
    logger = get_run_logger()
    config = train_config(model, epochs=epochs)  # validation size and seed: as a retrain run
    source = Path(data_dir).resolve() if data_dir else None
    checks = validation_checks(source, min_train_rows)
    artifacts = default_artifacts_dir()
    try:
        data = ingest(source, default_data_dir())
        validate_raw(data, checks, artifacts / "gx")
        splits = preprocess(data, config.validation_size, config.seed)
        validate_processed(splits, checks, artifacts / "gx")
    except DataError as error:
        return Failed(message=str(error), data=error)

    folder = studies_dir(artifacts)
    arrays = write_splits(splits, folder / "data")  # the trials' only input: files on disk
    name = study_name or f"tune-{model}"
    storage = folder / f"{name}.journal"
    study = open_study(name, storage, seed=config.seed)
    start_from_defaults(study, model)
    if stale := fail_interrupted(study):
        logger.info("resumed study %s: interrupted trials %s recorded as failed", name, stale)
    run_study(study, model, trials, epochs, workers, dask_address, timeout_minutes, arrays, storage)
    publish_study(study)
    if not has_complete(study):
        error = DigitsError(f"study {name}: no trial completed; registry unchanged")
        return Failed(message=str(error), data=error)
    best = study.best_trial
    logger.info("best trial %d: validation accuracy %.4f %s", best.number, best.value, best.params)
    if not promote_best:
        return Completed(message=f"best trial {best.number}: validation accuracy {best.value:.4f}")
    return gate_best(study, storage, data, model, epochs, threshold, regression_tolerance, registry)


def gate_best(study, storage, data, model, epochs, threshold, regression_tolerance, registry):
    """Evaluate, package, export and gate the best trial's model like any retrain run's."""
    from digits.model.tuning import study_summary, trial_config

    best = study.best_trial
    config = trial_config(model, best.params, epochs)
    trained = reuse_best({"number": best.number, **best.user_attrs})
    with tempfile.TemporaryDirectory(prefix="digits-build-") as build:
        evaluation = evaluate(trained, data.test_images, data.test_labels, Path(build) / "plots")
        manifest = package(Path(build), data, trained, config, evaluation, threshold)
        manifest = {**manifest, "study": study_summary(study, storage)}
        manifest = export(Path(build), manifest, data.test_images)
        rule = GateRule(evaluation.accuracy, threshold, regression_tolerance)
        decision, version = promote(registry_root(registry), Path(build), manifest, rule)
    outcome = Outcome(decision.promote, evaluation.accuracy, threshold, version, decision.reason)
    tag_outcome(FlowRunContext.get().flow_run, outcome.kind)
    return Completed(message=outcome.message(), data=outcome)
