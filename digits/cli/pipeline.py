"""The pipeline commands of `digits`: run, tune, add, schedule and drift, each a Prefect flow
run (or, for schedule, served) from the command line.

Each command calls `require_pipeline` first, so a consumer install (no pipeline extra) gets
one line naming the extra, and imports flows, and so Prefect, only after it: `digits --help`
and the library's commands never import them.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import (
    FLOWS_PANEL,
    REFERENCE_HELP,
    DataDirOption,
    LogDirOption,
    ModelOption,
    ReferenceDirOption,
    RegistryOption,
    StoreOption,
    app,
)
from digits.cli.feedback import log_window
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
from digits.environment import require_pipeline
from digits.errors import EXIT_REJECTED
from digits.monitoring.since import DEFAULT_DRIFT_SINCE
from digits.registry.location import registry_location

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
    from flows.launch import run_flow
    from flows.schedule import WEEKLY

    _, outcome = run_flow(
        "flows.retrain:retrain",
        trains=True,
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
    from flows.launch import run_flow

    # The Dask workers get the flow's API URL, so their task runs land under this flow run
    # instead of each worker starting a temporary server.
    state, outcome = run_flow(
        "flows.tune:tune",
        trains=True,
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
        parameters["registry"] = registry_location(registry)
    serve_retrain(name, cron or WEEKLY.cron, parameters)


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
    from flows.launch import run_flow

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
    reference_dir: Annotated[Optional[Path], typer.Option(
        "--reference-dir", "--data-dir", show_default="npm's",
        help=f"{REFERENCE_HELP} (--data-dir: its old name)")] = None,
    registry: RegistryOption = None,
) -> None:
    """Compare the served traffic (the prediction log) with MNIST; print the verdict.

    Exit 0 for no drift, drift and "not enough traffic" alike; with --fail-on-drift, exit 4
    on drift (data that failed its checks). A missing log folder is exit 4 too."""
    from digits.errors import DataError, ValidationFailed

    require_pipeline("drift")
    folder, _ = log_window(ctx, log_dir, since)  # a bad --since is exit 2 before Prefect starts
    if not folder.is_dir():
        raise DataError(f"prediction log {folder} does not exist")
    from flows.launch import run_flow

    try:
        _, report = run_flow("flows.drift:drift", log_dir=folder.resolve(), since=since,
                             registry=registry, data_dir=reference_dir,
                             fail_on_drift=fail_on_drift)
    except ValidationFailed as error:
        from flows.drift import DriftFound

        if not isinstance(error, DriftFound):
            raise
        typer.echo(str(error))  # the verdict line, on stdout as without the flag
        raise typer.Exit(error.exit_code) from None
    typer.echo(report.line())

