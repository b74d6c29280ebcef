"""The orchestration commands of `digits` (run, tune, add, schedule, drift), added to the app in
digits/cli.py that holds the library's commands; `entry` here is the `digits` console script,
so it has every command (digits/cli.py says why the two halves live apart).

Heavy imports (TensorFlow, Prefect) happen inside commands, after `main` has set the
environment defaults, so `digits --help` is instant and importing this module does nothing:
without Prefect installed, the library's commands still work through it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from digits.cli import (
    DataDirOption,
    LogDirOption,
    ModelOption,
    RegistryOption,
    StoreOption,
    app,
    entry,
    main,
)
from digits.config import (
    DEFAULT_MODEL,
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    DEFAULT_TUNE_EPOCHS,
    DEFAULT_TUNE_TRIALS,
    DEFAULT_TUNE_WORKERS,
    TrainConfig,
    train_config,
)
from digits.environment import import_keras_quietly, require_pipeline
from digits.errors import EXIT_REJECTED
from digits.monitoring.since import DEFAULT_DRIFT_SINCE

FLOWS_PANEL = "Training and new data (Prefect flows; the pipeline extra)"

# The console script (`flows.cli:entry`) and the tests call these from here, so that the
# commands below are on the app.
__all__ = ["app", "entry", "main"]

ThresholdOption = Annotated[
    float, typer.Option(help="Test accuracy a model needs to be promoted (never below 0.97).")
]
MinTrainRowsOption = Annotated[
    Optional[int], typer.Option(min=1, help="Smallest train split accepted from --data-dir.")
]


def with_train_options(command):
    """Give `command` a `--flag` per TrainConfig field (but model), passed on as
    `train_overrides`; unset flags are None, which keeps the model's default."""
    hints = typing.get_type_hints(TrainConfig)
    knobs = [f for f in fields(TrainConfig) if f.name != "model"]
    options = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[hints[f.name]],
                typer.Option(show_default="per model", help=f.metadata["help"]),
            ],
        )
        for f in knobs
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        overrides = {f.name: kwargs.pop(f.name) for f in knobs}
        return command(**kwargs, train_overrides=overrides)

    signature = inspect.signature(command, eval_str=True)  # Typer reads Annotated[...] objects
    kept = [p for p in signature.parameters.values() if p.name != "train_overrides"]
    wrapper.__signature__ = signature.replace(parameters=kept + options)
    return wrapper


def run_flow(entrypoint: str, tags: Sequence[str] = (), **parameters: Any) -> tuple[Any, Any]:
    """Run the flow `module:name` and return its final state and result.

    The API server starts first and boots while TensorFlow, GX and Prefect import here; it
    stops before the command prints its last line, so that line is the last one. The result
    raises the run's DigitsError when the run failed.
    """
    from flows.api import local_api

    module, name = entrypoint.split(":")
    with local_api() as wait_for_api:
        import_keras_quietly()
        from prefect import tags as run_tags

        flow = getattr(importlib.import_module(module), name)
        wait_for_api()
        with run_tags(*tags):
            state = flow(**parameters, return_state=True)
        return state, state.result()


@app.command(rich_help_panel=FLOWS_PANEL)
@with_train_options
def run(
    model: ModelOption = DEFAULT_MODEL,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    regression_tolerance: Annotated[
        float, typer.Option(min=0, help="Reject a model worse than production by more than this.")
    ] = DEFAULT_REGRESSION_TOLERANCE,
    no_regression_check: Annotated[
        bool, typer.Option("--no-regression-check", help="Skip the champion/challenger comparison.")
    ] = False,
    data_dir: DataDirOption = None,
    min_train_rows: MinTrainRowsOption = None,
    registry: RegistryOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train even when data and settings equal production's.")
    ] = False,
    train_overrides: dict | None = None,
) -> None:
    """Run one retraining flow: ingest, validate, train, evaluate, gate, promote."""
    require_pipeline("run")
    from digits.registry.gate import check_threshold

    # Refuse a bad setting or threshold before Prefect or TensorFlow start.
    train_config(model, **(train_overrides or {}))
    check_threshold(threshold)
    from flows.schedule import WEEKLY

    _, outcome = run_flow(
        "flows.retrain:retrain",
        tags=WEEKLY.tags,  # as scheduled runs carry, to filter them in the UI
        model=model,
        train_overrides={k: v for k, v in (train_overrides or {}).items() if v is not None},
        threshold=threshold,
        regression_tolerance=None if no_regression_check else regression_tolerance,
        data_dir=data_dir,
        registry=registry,
        min_train_rows=min_train_rows,
        progress=sys.stdout.isatty(),
        force=force,
    )
    typer.echo(outcome.line())
    if not (outcome.promoted or outcome.skipped):
        raise typer.Exit(EXIT_REJECTED)


def valid_study(name: str | None) -> str | None:
    """--study names a file under artifacts/studies, so no path (exit 2 otherwise); the check
    is imported only when `tune` runs."""
    from digits.model.tuning import check_study_name

    return check_study_name(name)


@app.command(rich_help_panel=FLOWS_PANEL)
def tune(
    model: ModelOption = DEFAULT_MODEL,
    trials: Annotated[
        int, typer.Option(min=1, help="Finished trials the study should hold.")
    ] = DEFAULT_TUNE_TRIALS,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial.")] = DEFAULT_TUNE_EPOCHS,
    workers: Annotated[
        int, typer.Option(min=1, help="Local Dask worker processes (trials run at once).")
    ] = DEFAULT_TUNE_WORKERS,
    dask_address: Annotated[
        Optional[str], typer.Option(help="Use this Dask scheduler (tcp://host:8786) instead.")
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option(min=0, help="Start no new round after this many minutes.")
    ] = None,
    study: Annotated[
        Optional[str],
        typer.Option(
            help="Study name (default tune-MODEL); a stored one resumes.",
            callback=valid_study,
        ),
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Gate and promote the best trial's model, or only report.")
    ] = True,
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    data_dir: DataDirOption = None,
    min_train_rows: MinTrainRowsOption = None,
    registry: RegistryOption = None,
) -> None:
    """Tune hyperparameters with Optuna, trials on Dask; gate and promote the best model."""
    require_pipeline("tune")
    from digits.model.space import check_space
    from digits.registry.gate import check_threshold

    check_space(model)
    check_threshold(threshold)
    # The Dask workers get the flow's API URL, so their task runs land under this flow run
    # instead of each worker starting a temporary server.
    state, outcome = run_flow(
        "flows.tune:tune",
        model=model,
        trials=trials,
        epochs=epochs,
        workers=workers,
        dask_address=dask_address,
        timeout_minutes=timeout,
        promote_best=promote,
        study_name=study,
        threshold=threshold,
        data_dir=data_dir,
        registry=registry,
        min_train_rows=min_train_rows,
    )
    if outcome is None:  # --no-promote: the best trial, nothing gated
        typer.echo(state.message)
        return
    typer.echo(outcome.line())
    if not outcome.promoted:
        raise typer.Exit(EXIT_REJECTED)


@app.command(rich_help_panel=FLOWS_PANEL)
def schedule(
    cron: Annotated[
        Optional[str],
        typer.Option(show_default="the weekly deployment's", help="When to retrain: cron, in UTC."),
    ] = None,
    name: Annotated[str, typer.Option(help="Deployment name (retrain/NAME).")] = "schedule",
    model: ModelOption = DEFAULT_MODEL,
    data_dir: DataDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Retrain on a schedule in this process until Ctrl-C (needs a server: `make ui`)."""
    require_pipeline("schedule")
    from flows.schedule import WEEKLY, serve_retrain

    train_config(model)
    parameters = {"model": model}
    if data_dir:
        parameters["data_dir"] = data_dir.resolve()  # the deployment runs from another folder
    if registry:
        parameters["registry"] = registry.resolve()
    serve_retrain(name, cron or WEEKLY.cron, parameters)


# The MNIST a batch or the served traffic is compared with (`add`, `drift`).
ReferenceDirOption = Annotated[
    Optional[Path],
    typer.Option(show_default="npm's", help="Folder with the four MNIST IDX files to compare with."),
]


@app.command(rich_help_panel=FLOWS_PANEL)
def add(
    path: Annotated[Path, typer.Argument(help="Folder with subfolders 0..9 of PNG/JPEG, or .npz.")],
    name: Annotated[
        Optional[str], typer.Option(show_default="PATH's", help="Name of the batch.")
    ] = None,
    store: StoreOption = None,
    reference_dir: ReferenceDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Check a labelled batch and add it to the data store, or quarantine it (exit 4)."""
    require_pipeline("add")
    _, added = run_flow(
        "flows.add:add",
        path=path,
        name=name or path.stem,
        store_dir=store,
        reference_dir=reference_dir,
        registry=registry,
    )
    typer.echo(added.line())


@app.command(rich_help_panel=FLOWS_PANEL)
def drift(
    ctx: typer.Context,
    log_dir: LogDirOption = None,
    since: Annotated[
        str, typer.Option(help="Judge the answers given since: a duration back from now "
                          "(30m, 12h, 7d, 2w) or an ISO date or time (UTC unless it says).")
    ] = DEFAULT_DRIFT_SINCE,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 4 when the traffic has drifted.")
    ] = False,
    data_dir: ReferenceDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Compare the served traffic (the prediction log) with MNIST; print the verdict.

    Exit 0 for no drift, drift and "not enough traffic" alike; with --fail-on-drift, exit 4
    on drift (data that failed its checks). A missing log folder is exit 4 too."""
    from digits.cli import log_window
    from digits.errors import DataError, ValidationFailed

    require_pipeline("drift")
    folder, _ = log_window(ctx, log_dir, since)  # a bad --since is exit 2 before Prefect starts
    if not folder.is_dir():
        raise DataError(f"prediction log {folder} does not exist")
    try:
        _, report = run_flow("flows.drift:drift", log_dir=folder.resolve(), since=since,
                             registry=registry, data_dir=data_dir, fail_on_drift=fail_on_drift)
    except ValidationFailed as error:
        from flows.drift import DriftFound

        if not isinstance(error, DriftFound):
            raise
        typer.echo(str(error))  # the verdict line, on stdout as without the flag
        raise typer.Exit(error.exit_code) from None
    typer.echo(report.line())


if __name__ == "__main__":
    entry()
