"""The `retrain` flow: a thin recipe over the shared stages (flows/stages.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Failed, State

from digits.config import (
    DEFAULT_MODEL,
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    train_config,
)
from digits.data.snapshot import run_settings
from digits.environment import default_store_dir
from digits.errors import DataError, UsageError
from digits.registry.gate import check_threshold
from digits.registry.location import registry_location
from flows.deployed import check_deployment_run
from flows.outcome import OUTCOME_HOOKS, run_namer, skipped
from flows.stages import Gate, collect_data, evaluate_and_gate, prepare_data, validation_checks
from tasks.snapshot import unchanged_since
from tasks.train import train


# No flow retries: ingest retries its own downloads, and a rejected model or invalid data
# would end the same way again. Tags, schedule and concurrency: flows/schedule.py, prefect.yaml.
@flow(name="retrain", flow_run_name=run_namer("retrain"), log_prints=True, **OUTCOME_HOOKS)
def retrain(
    model: str = DEFAULT_MODEL,
    train_overrides: dict[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    regression_tolerance: float | None = DEFAULT_REGRESSION_TOLERANCE,
    data_dir: Path | None = None,
    registry: str | Path | None = None,
    min_train_rows: int | None = None,
    progress: bool = False,
    force: bool = False,
    store_dir: Path | None = None,
) -> State:
    """Ingest, validate, preprocess, train, evaluate, gate and promote one model.

    `train_overrides` replaces fields of the model's default `TrainConfig` (epochs,
    batch_size, learning_rate, seed, ...); see `digits run --help`. The run trains on MNIST
    plus every accepted batch; when that data and these settings equal production's it
    ends at once, "Skipped: no new data since vN", unless `force`. A run with no overrides
    also skips after a tuned production trained on this data (`digits tune` chose its
    settings for exactly this data). `store_dir` is the batch store (and MNIST cache),
    `$DIGITS_DATA` or ./data by default. A run of a deployment keeps the deployment's
    folders and a gate no weaker than the defaults (flows/deployed.py).
    """
    check_threshold(threshold)
    config = train_config(model, **(train_overrides or {}))
    source = Path(data_dir).resolve() if data_dir else None
    root, gate = registry_location(registry), Gate(threshold, regression_tolerance)
    store = Path(store_dir).resolve() if store_dir else default_store_dir()
    try:
        check_deployment_run({"data_dir": data_dir, "store_dir": store_dir, "registry": registry,
                              "min_train_rows": min_train_rows,
                              "regression_tolerance": regression_tolerance})
        if store_dir and not store.is_dir():  # e.g. a deployment's folder this worker lacks
            raise DataError(f"{store}: no batch store on this machine")
        collected = collect_data(source, store)
        settings = run_settings(config, threshold, regression_tolerance)
        same_as = None if force else unchanged_since(
            root, collected.snapshot, settings, tuned_counts=not train_overrides)
        if same_as:  # before validation and training: a scheduled run with nothing new
            return skipped(same_as, threshold).state()
        prepared = prepare_data(collected, config, validation_checks(source, min_train_rows))
    except (DataError, UsageError) as error:
        return Failed(message=str(error), data=error)

    trained = train(prepared.splits, config, progress=progress)
    return evaluate_and_gate(trained, prepared, config, gate, root).state()
